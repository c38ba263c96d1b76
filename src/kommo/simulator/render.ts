/** v4 JSON for the simulator's records, with `_links` and `_embedded` the way the API nests them. */
import { selfLink } from './http.js';
import type { SimCompany, SimContact, SimCustomField, SimLead, SimLossReason, SimNote, SimPipeline, SimTask, SimUser, SimWebhook } from './types.js';

/** `with=contacts` embeds the contact links, `with=loss_reason` the lost lead's reason (a one-item list). */
export function renderLead(lead: SimLead, api: string, withs: ReadonlySet<string>, lossReasons: ReadonlyMap<number, SimLossReason>): Record<string, unknown> {
  const { tags, contact_ids, company_id, ...fields } = lead;
  const embedded: Record<string, unknown> = { tags: tags.map((t) => ({ ...t })), companies: companyLinks(company_id, api) };
  if (withs.has('contacts')) {
    embedded.contacts = contact_ids.map((id, i) => ({ id, is_main: i === 0, _links: selfLink(`${api}/api/v4/contacts/${id}`) }));
  }
  if (withs.has('loss_reason')) {
    const reason = lead.loss_reason_id === null ? undefined : lossReasons.get(lead.loss_reason_id);
    embedded.loss_reason = reason ? [renderLossReason(reason, api)] : [];
  }
  return { ...fields, _links: selfLink(`${api}/api/v4/leads/${lead.id}`), _embedded: embedded };
}

export function renderContact(contact: SimContact, api: string, withLeads: boolean): Record<string, unknown> {
  const { tags, lead_ids, company_id, ...fields } = contact;
  const embedded: Record<string, unknown> = { tags: tags.map((t) => ({ ...t })), companies: companyLinks(company_id, api) };
  if (withLeads) embedded.leads = lead_ids.map((id) => ({ id, _links: selfLink(`${api}/api/v4/leads/${id}`) }));
  return { ...fields, _links: selfLink(`${api}/api/v4/contacts/${contact.id}`), _embedded: embedded };
}

function companyLinks(companyId: number | null, api: string): unknown[] {
  return companyId === null ? [] : [{ id: companyId, _links: selfLink(`${api}/api/v4/companies/${companyId}`) }];
}

/** `_embedded.leads` / `_embedded.contacts` only with `with=leads` / `with=contacts`. */
export function renderCompany(company: SimCompany, api: string, withs: Set<string>): Record<string, unknown> {
  const { tags, lead_ids, contact_ids, ...fields } = company;
  const embedded: Record<string, unknown> = { tags: tags.map((t) => ({ ...t })) };
  if (withs.has('leads')) embedded.leads = lead_ids.map((id) => ({ id, _links: selfLink(`${api}/api/v4/leads/${id}`) }));
  if (withs.has('contacts')) embedded.contacts = contact_ids.map((id) => ({ id, _links: selfLink(`${api}/api/v4/contacts/${id}`) }));
  return { ...fields, _links: selfLink(`${api}/api/v4/companies/${company.id}`), _embedded: embedded };
}

export function renderPipeline(p: SimPipeline, api: string): Record<string, unknown> {
  const { statuses, ...fields } = p;
  return {
    ...fields,
    _links: selfLink(`${api}/api/v4/leads/pipelines/${p.id}`),
    _embedded: {
      statuses: statuses.map((s) => ({ ...s, _links: selfLink(`${api}/api/v4/leads/pipelines/${p.id}/statuses/${s.id}`) })),
    },
  };
}

export function renderCustomField(f: SimCustomField, api: string): Record<string, unknown> {
  return { ...f, enums: f.enums ? f.enums.map((e) => ({ ...e })) : null, _links: selfLink(`${api}/api/v4/${f.entity_type}/custom_fields/${f.id}`) };
}

export function renderUser(u: SimUser, api: string): Record<string, unknown> {
  const all = { view: 'A', edit: 'A', add: 'A', delete: 'A', export: 'A' };
  return {
    id: u.id,
    name: u.name,
    email: u.email,
    lang: u.lang,
    rights: {
      leads: all,
      contacts: all,
      companies: all,
      tasks: { edit: 'A', delete: 'A' },
      mail_access: true,
      catalog_access: true,
      is_admin: u.is_admin,
      is_free: false,
      is_active: true,
      group_id: null,
      role_id: null,
      status_rights: [],
    },
    _links: selfLink(`${api}/api/v4/users/${u.id}`),
  };
}

export function renderNote(n: SimNote, api: string): Record<string, unknown> {
  return { ...n, _links: selfLink(`${api}/api/v4/${n.entity_type}/${n.entity_id}/notes/${n.id}`) };
}

export function renderTask(t: SimTask, api: string): Record<string, unknown> {
  return { ...t, _links: selfLink(`${api}/api/v4/tasks/${t.id}`) };
}

export function renderWebhook(w: SimWebhook): Record<string, unknown> {
  return { ...w, settings: [...w.settings] };
}

export function renderLossReason(r: SimLossReason, api: string): Record<string, unknown> {
  return { ...r, _links: selfLink(`${api}/api/v4/leads/loss_reasons/${r.id}`) };
}
