/**
 * CrmEvent + what the Kommo loader read -> EnrichedLead, the model mappings and rules see.
 * Attributes reflect the lead's latest state (what Kommo answers now); the previous stage comes from
 * the webhook, which is the only place Kommo tells it.
 */
import type { KommoCatalog } from '../kommo/catalog.js';
import { contactEmails } from '../kommo/client.js';
import type { LoadedLead } from '../kommo/loader.js';
import { WON_STATUS_ID, LOST_STATUS_ID } from '../kommo/catalog.js';
import type { CrmEvent, EnrichedLead, StageInfo } from '../model/index.js';

export interface EnrichContext {
  account: { name: string; subdomain: string; currency: string | null };
  catalog: Pick<KommoCatalog, 'refreshIfUnknown' | 'fieldValues'>;
  /** User names by id, or null when the token may not read users. */
  users: Map<number, { name: string; email: string | null }> | null;
}

export async function enrichLead(event: CrmEvent, receivedAt: number, loaded: LoadedLead, ctx: EnrichContext): Promise<EnrichedLead> {
  const { lead, contact, company } = loaded;
  const stage = (await ctx.catalog.refreshIfUnknown(lead.pipeline_id, lead.status_id)) ?? unknownStage(lead.pipeline_id, lead.status_id);
  let previousStage: StageInfo | null = null;
  if (event.oldStatusId !== undefined) {
    const pid = event.oldPipelineId ?? event.pipelineId ?? lead.pipeline_id;
    previousStage = (await ctx.catalog.refreshIfUnknown(pid, event.oldStatusId)) ?? unknownStage(pid, event.oldStatusId);
  }
  const user = ctx.users?.get(lead.responsible_user_id);
  const phone = contact?.custom_fields_values?.find((f) => f.field_code === 'PHONE')?.values[0]?.value;
  const closedAt = lead.closed_at === null ? null : lead.closed_at * 1000;
  const lossReason = lead._embedded.loss_reason.find((r) => r.id === lead.loss_reason_id) ?? lead._embedded.loss_reason[0];
  return {
    account: ctx.account,
    event: { kind: event.kind, at: event.updatedAt ? event.updatedAt * 1000 : receivedAt },
    lead: {
      id: lead.id,
      name: lead.name,
      price: lead.price,
      pipelineId: lead.pipeline_id,
      statusId: lead.status_id,
      responsibleUserId: lead.responsible_user_id,
      createdAt: lead.created_at * 1000,
      updatedAt: lead.updated_at * 1000,
      closedAt,
      wonAt: lead.status_id === WON_STATUS_ID ? closedAt : null,
      lostAt: lead.status_id === LOST_STATUS_ID ? closedAt : null,
      // A reopened lead keeps its old loss_reason_id in Kommo; only a lost lead has a reason now.
      lossReason: lead.status_id === LOST_STATUS_ID ? lossReason?.name ?? null : null,
      tags: lead._embedded.tags.map((t) => t.name),
      fields: ctx.catalog.fieldValues('leads', lead.custom_fields_values),
      deleted: lead.is_deleted,
    },
    contact: contact
      ? {
          id: contact.id,
          name: contact.name,
          firstName: contact.first_name,
          lastName: contact.last_name,
          email: contactEmails(contact)[0] ?? '',
          phone: typeof phone === 'string' ? phone : '',
          tags: contact._embedded.tags.map((t) => t.name),
          fields: ctx.catalog.fieldValues('contacts', contact.custom_fields_values),
        }
      : null,
    company: company ? { id: company.id, name: company.name, fields: ctx.catalog.fieldValues('companies', company.custom_fields_values) } : null,
    pipeline: { id: stage.pipelineId, name: stage.pipeline },
    stage,
    previousStage,
    responsible: { id: lead.responsible_user_id, name: user?.name ?? null, email: user?.email ?? null },
  };
}

/** A stage Kommo does not list even after a refresh (deleted meanwhile): keep the ids visible. */
function unknownStage(pipelineId: number, statusId: number): StageInfo {
  return {
    id: statusId,
    name: `stage ${statusId}`,
    key: `stage_${statusId}`,
    pipelineId,
    pipeline: `pipeline ${pipelineId}`,
    type: statusId === WON_STATUS_ID ? 'won' : statusId === LOST_STATUS_ID ? 'lost' : 'open',
  };
}
