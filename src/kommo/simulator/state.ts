/**
 * The simulated account: users, pipelines, custom fields, tags, leads, contacts, notes and tasks,
 * plus every mutation that Kommo turns into a webhook. Both the HTTP routes and the programmatic
 * control methods go through here, so API writes fire webhooks exactly like UI changes do.
 */
import type { WebhookDispatcher } from './webhooks.js';
import { companyV2, contactV2, leadDeleteV2, leadV2, noteV2, taskV2, type LeadChange } from './webhooks.js';
import type {
  CustomFieldType,
  EntityType,
  FieldEntityType,
  SimCompany,
  SimContact,
  SimCustomField,
  SimCustomFieldValue,
  SimFieldValue,
  SimLead,
  SimEvent,
  SimLossReason,
  SimNote,
  SimPipeline,
  SimStatus,
  SimTag,
  SimTask,
  SimUser,
} from './types.js';

/** Ownership and audit fields of an entity created by `actor` now, as Kommo sets them. */
function createdBy(actor: number, responsibleUserId: number | undefined, t: number) {
  return { responsible_user_id: responsibleUserId ?? actor, group_id: 0, created_by: actor, updated_by: actor, created_at: t, updated_at: t };
}

export const WON_STATUS_ID = 142;
export const LOST_STATUS_ID = 143;
const STATUS_COLORS = ['#99ccff', '#ffff99', '#ffcc66', '#ffcccc', '#deff81', '#87f2c0', '#f9deff', '#d6eaff'];

export interface TagRef {
  id?: number;
  name?: string;
}

/** `replace` (from `_embedded.tags`) wins over `add`/`remove` (`tags_to_add`/`tags_to_delete`). */
export interface TagOps {
  replace?: TagRef[];
  add?: TagRef[];
  remove?: TagRef[];
}

/** New value list for one field; an empty list removes the field from the entity. */
export interface FieldChange {
  field: SimCustomField;
  values: SimFieldValue[];
}

/** A validated lead write; stage ids are already resolved to an existing (pipeline, status) pair. */
export interface LeadWrite {
  name?: string;
  price?: number;
  pipelineId?: number;
  statusId?: number;
  responsibleUserId?: number;
  /** Kommo keeps it whatever the stage; the UI asks for one when a lead is lost. */
  lossReasonId?: number | null;
  fields?: FieldChange[];
  tags?: TagOps;
  /** Contacts to link on creation, main contact first. */
  contactIds?: number[];
}

export interface ContactWrite {
  name?: string;
  firstName?: string;
  lastName?: string;
  responsibleUserId?: number;
  fields?: FieldChange[];
  tags?: TagOps;
}

export interface NoteWrite {
  entityId: number;
  noteType: string;
  params: Record<string, unknown>;
  createdBy?: number;
  responsibleUserId?: number;
}

export interface TaskWrite {
  text: string;
  completeTill: number;
  entityId: number | null;
  entityType: string | null;
  responsibleUserId: number;
  taskTypeId: number;
  isCompleted: boolean;
  duration: number;
  result: { text: string } | null;
}

type SeqKind = 'user' | 'pipeline' | 'status' | 'field' | 'enumId' | 'tag' | 'lead' | 'contact' | 'company' | 'note' | 'task' | 'lossReason';

function nowSec(): number {
  return Math.floor(Date.now() / 1000);
}

/** updated_at must strictly increase per entity even within one second (echo suppression keys on it). */
function bump(prev: number): number {
  return Math.max(nowSec(), prev + 1);
}

export class SimState {
  readonly users = new Map<number, SimUser>();
  readonly pipelines = new Map<number, SimPipeline>();
  readonly customFields: Record<FieldEntityType, Map<number, SimCustomField>> = { leads: new Map(), contacts: new Map(), companies: new Map() };
  readonly lossReasons = new Map<number, SimLossReason>();
  readonly leads = new Map<number, SimLead>();
  readonly contacts = new Map<number, SimContact>();
  readonly companies = new Map<number, SimCompany>();
  readonly notes = new Map<number, SimNote>();
  readonly tasks = new Map<number, SimTask>();
  /** The account's event log (GET /api/v4/events), oldest first. */
  readonly events: SimEvent[] = [];
  private eventSeq = 1;
  /** Tag dictionaries are per entity type (same name, different ids for leads and contacts). */
  private readonly tagsByName: Record<EntityType, Map<string, SimTag>> = { leads: new Map(), contacts: new Map() };
  private readonly tagsById: Record<EntityType, Map<number, SimTag>> = { leads: new Map(), contacts: new Map() };
  // Distinct id ranges make a mixed-up id (a contact id used as a lead id) fail loudly in tests.
  private readonly seq: Record<SeqKind, number> = {
    user: 8_000_001,
    pipeline: 7_000_001,
    status: 70_000_001,
    field: 600_001,
    enumId: 900_001,
    tag: 10_001,
    lead: 20_000_001,
    contact: 30_000_001,
    company: 40_000_001,
    note: 50_000_001,
    task: 60_000_001,
    lossReason: 5_001,
  };

  constructor(
    readonly accountId: number,
    readonly subdomain: string,
    private readonly hooks: WebhookDispatcher,
  ) {}

  private next(kind: SeqKind): number {
    return this.seq[kind]++;
  }

  /** Kommo logs lead additions, stage moves and deletions whatever the webhooks do. */
  private logEvent(type: SimEvent['type'], lead: SimLead, actor: number, before: unknown[], after: unknown[], at = lead.updated_at): void {
    this.events.push({
      // Kommo's event ids are opaque strings.
      id: `01sim${String(this.eventSeq++).padStart(12, '0')}`,
      type,
      entity_id: lead.id,
      entity_type: 'lead',
      created_by: actor,
      created_at: at,
      value_before: before,
      value_after: after,
      account_id: this.accountId,
    });
  }

  // ---- catalog ----

  addLossReason(name: string): SimLossReason {
    const t = nowSec();
    const reason: SimLossReason = { id: this.next('lossReason'), name, sort: (this.lossReasons.size + 1) * 10, created_at: t, updated_at: t };
    this.lossReasons.set(reason.id, reason);
    return reason;
  }

  addUser(name: string, email: string, isAdmin: boolean): SimUser {
    const user: SimUser = { id: this.next('user'), name, email, lang: 'en', is_admin: isAdmin };
    this.users.set(user.id, user);
    return user;
  }

  /** Every pipeline gets "Incoming leads" (type 1, own id) first and the shared 142/143 last. */
  addPipeline(name: string, stageNames: string[]): SimPipeline {
    const id = this.next('pipeline');
    const status = (sid: number, sname: string, sort: number, editable: boolean, type: 0 | 1, color: string): SimStatus => ({
      id: sid,
      name: sname,
      sort,
      is_editable: editable,
      pipeline_id: id,
      color,
      type,
      account_id: this.accountId,
    });
    const statuses: SimStatus[] = [status(this.next('status'), 'Incoming leads', 10, false, 1, '#c1c1c1')];
    stageNames.forEach((n, i) => {
      statuses.push(status(this.next('status'), n, 20 + i * 10, true, 0, STATUS_COLORS[i % STATUS_COLORS.length] ?? '#99ccff'));
    });
    statuses.push(status(WON_STATUS_ID, 'Closed - won', 10000, false, 0, '#CCFF66'));
    statuses.push(status(LOST_STATUS_ID, 'Closed - lost', 11000, false, 0, '#D5D8DB'));
    const pipeline: SimPipeline = {
      id,
      name,
      sort: (this.pipelines.size + 1) * 10,
      is_main: this.pipelines.size === 0,
      is_unsorted_on: true,
      is_archive: false,
      account_id: this.accountId,
      statuses,
    };
    this.pipelines.set(id, pipeline);
    return pipeline;
  }

  addCustomField(
    entity: FieldEntityType,
    def: { name: string; code?: string; type: CustomFieldType; enums?: string[]; predefined?: boolean },
  ): SimCustomField {
    const field: SimCustomField = {
      id: this.next('field'),
      name: def.name,
      code: def.code ?? null,
      sort: (this.customFields[entity].size + 1) * 10,
      type: def.type,
      entity_type: entity,
      is_predefined: def.predefined ?? false,
      is_deletable: !(def.predefined ?? false),
      is_visible: true,
      is_required: false,
      is_api_only: false,
      group_id: null,
      required_statuses: [],
      enums: def.enums ? def.enums.map((value, i) => ({ id: this.next('enumId'), value, sort: (i + 1) * 10 })) : null,
    };
    this.customFields[entity].set(field.id, field);
    return field;
  }

  get mainPipeline(): SimPipeline {
    for (const p of this.pipelines.values()) if (p.is_main) return p;
    throw new Error('no pipelines');
  }

  /** The first stage a new lead lands in: the first regular stage, not "Incoming leads". */
  firstStage(pipeline: SimPipeline): SimStatus {
    const st = pipeline.statuses.find((s) => s.type === 0) ?? pipeline.statuses[0];
    if (!st) throw new Error(`pipeline ${pipeline.id} has no stages`);
    return st;
  }

  findField(entity: FieldEntityType, key: { id?: number; code?: string; name?: string }): SimCustomField | undefined {
    if (key.id !== undefined) return this.customFields[entity].get(key.id);
    for (const f of this.customFields[entity].values()) {
      if (key.code !== undefined && f.code === key.code) return f;
      if (key.name !== undefined && f.name === key.name) return f;
    }
    return undefined;
  }

  /**
   * Resolves a stage change. Only status_id: the current pipeline when it has that status (142/143
   * always do), else the pipeline that owns it. Only pipeline_id: that pipeline's first stage.
   */
  resolveStage(
    current: { pipeline_id: number; status_id: number } | undefined,
    pipelineId: number | undefined,
    statusId: number | undefined,
  ): { pipeline_id: number; status_id: number } | { error: string; path: string } {
    if (pipelineId !== undefined) {
      const p = this.pipelines.get(pipelineId);
      if (!p) return { error: `Pipeline ${pipelineId} not found`, path: 'pipeline_id' };
      if (statusId === undefined) {
        if (current && current.pipeline_id === pipelineId) return current;
        return { pipeline_id: p.id, status_id: this.firstStage(p).id };
      }
      if (!p.statuses.some((s) => s.id === statusId)) {
        return { error: `Status ${statusId} is not in pipeline ${pipelineId}`, path: 'status_id' };
      }
      return { pipeline_id: p.id, status_id: statusId };
    }
    if (statusId === undefined) {
      if (current) return current;
      const main = this.mainPipeline;
      return { pipeline_id: main.id, status_id: this.firstStage(main).id };
    }
    const home = this.pipelines.get(current?.pipeline_id ?? this.mainPipeline.id);
    if (home?.statuses.some((s) => s.id === statusId)) return { pipeline_id: home.id, status_id: statusId };
    for (const p of this.pipelines.values()) {
      if (p.statuses.some((s) => s.id === statusId)) return { pipeline_id: p.id, status_id: statusId };
    }
    return { error: `Status ${statusId} not found`, path: 'status_id' };
  }

  tagExists(entity: EntityType, id: number): boolean {
    return this.tagsById[entity].has(id);
  }

  listTags(entity: EntityType): SimTag[] {
    return [...this.tagsById[entity].values()];
  }

  private tagFor(entity: EntityType, ref: TagRef): SimTag | undefined {
    if (ref.id !== undefined) return this.tagsById[entity].get(ref.id);
    const name = ref.name?.trim();
    if (!name) return undefined;
    const key = name.toLowerCase();
    let tag = this.tagsByName[entity].get(key);
    if (!tag) {
      tag = { id: this.next('tag'), name, color: null };
      this.tagsByName[entity].set(key, tag);
      this.tagsById[entity].set(tag.id, tag);
    }
    return tag;
  }

  private applyTags(entity: EntityType, current: SimTag[], ops: TagOps): SimTag[] {
    const resolve = (refs: TagRef[]): SimTag[] =>
      refs.map((r) => this.tagFor(entity, r)).filter((t): t is SimTag => t !== undefined);
    if (ops.replace !== undefined) return dedupeTags(resolve(ops.replace));
    const out = dedupeTags([...current, ...resolve(ops.add ?? [])]);
    const gone = (ops.remove ?? []).map((r) => (r.id !== undefined ? String(r.id) : (r.name ?? '').trim().toLowerCase()));
    return out.filter((t) => !gone.includes(String(t.id)) && !gone.includes(t.name.toLowerCase()));
  }

  // ---- leads ----

  addLeads(writes: LeadWrite[], actor: number): SimLead[] {
    const created = writes.map((w) => {
      const t = nowSec();
      const stage = this.resolveStage(undefined, w.pipelineId, w.statusId);
      if ('error' in stage) throw new Error(stage.error);
      const lead: SimLead = {
        id: this.next('lead'),
        name: w.name ?? '',
        price: w.price ?? 0,
        ...createdBy(actor, w.responsibleUserId, t),
        status_id: stage.status_id,
        pipeline_id: stage.pipeline_id,
        loss_reason_id: null,
        closed_at: isClosed(stage.status_id) ? t : null,
        closest_task_at: null,
        custom_fields_values: applyFields(null, w.fields ?? []),
        score: null,
        account_id: this.accountId,
        labor_cost: null,
        is_deleted: false,
        tags: this.applyTags('leads', [], w.tags ?? {}),
        contact_ids: [],
        company_id: null,
      };
      this.leads.set(lead.id, lead);
      for (const cid of w.contactIds ?? []) this.link(lead, cid);
      this.logEvent('lead_added', lead, actor, [], [{ lead_status: { id: lead.status_id, pipeline_id: lead.pipeline_id } }]);
      return lead;
    });
    this.hooks.emit('add_lead', () => ({ leads: { add: created.map((l) => leadV2(l, { modifiedUserId: actor })) } }));
    return created;
  }

  /**
   * Applies each write, then fires one POST per event kind for the whole batch, in the order
   * status_lead, responsible_lead, update_lead (every change is also an update).
   */
  updateLeads(items: { id: number; write: LeadWrite }[], actor: number): SimLead[] {
    const status: Array<[SimLead, LeadChange]> = [];
    const responsible: Array<[SimLead, LeadChange]> = [];
    const update: Array<[SimLead, LeadChange]> = [];
    const updated = items.map(({ id, write }) => {
      const lead = this.leads.get(id);
      if (!lead) throw new Error(`Lead ${id} not found`);
      const old = { status: lead.status_id, pipeline: lead.pipeline_id, responsible: lead.responsible_user_id };
      if (write.name !== undefined) lead.name = write.name;
      if (write.price !== undefined) lead.price = write.price;
      if (write.pipelineId !== undefined || write.statusId !== undefined) {
        const stage = this.resolveStage(lead, write.pipelineId, write.statusId);
        if ('error' in stage) throw new Error(stage.error);
        lead.pipeline_id = stage.pipeline_id;
        lead.status_id = stage.status_id;
      }
      if (write.responsibleUserId !== undefined) lead.responsible_user_id = write.responsibleUserId;
      if (write.lossReasonId !== undefined) lead.loss_reason_id = write.lossReasonId;
      if (write.fields) lead.custom_fields_values = applyFields(lead.custom_fields_values, write.fields);
      if (write.tags) lead.tags = this.applyTags('leads', lead.tags, write.tags);
      for (const cid of write.contactIds ?? []) this.link(lead, cid);
      lead.updated_at = bump(lead.updated_at);
      lead.updated_by = actor;
      const moved = lead.status_id !== old.status || lead.pipeline_id !== old.pipeline;
      if (moved) lead.closed_at = isClosed(lead.status_id) ? lead.updated_at : null;
      const stageChange: LeadChange = moved
        ? { oldStatusId: old.status, oldPipelineId: old.pipeline, modifiedUserId: actor }
        : { modifiedUserId: actor };
      if (moved) {
        status.push([lead, stageChange]);
        this.logEvent('lead_status_changed', lead, actor,
          [{ lead_status: { id: old.status, pipeline_id: old.pipeline } }],
          [{ lead_status: { id: lead.status_id, pipeline_id: lead.pipeline_id } }]);
      }
      if (lead.responsible_user_id !== old.responsible) {
        responsible.push([lead, { oldResponsibleUserId: old.responsible, modifiedUserId: actor }]);
      }
      update.push([lead, stageChange]);
      return lead;
    });
    const emit = (event: 'status_lead' | 'responsible_lead' | 'update_lead', key: string, list: Array<[SimLead, LeadChange]>): void => {
      if (list.length > 0) this.hooks.emit(event, () => ({ leads: { [key]: list.map(([l, c]) => leadV2(l, c)) } }));
    };
    emit('status_lead', 'status', status);
    emit('responsible_lead', 'responsible', responsible);
    emit('update_lead', 'update', update);
    return updated;
  }

  deleteLead(id: number): SimLead {
    const lead = this.leads.get(id);
    if (!lead) throw new Error(`Lead ${id} not found`);
    this.leads.delete(id);
    for (const cid of lead.contact_ids) {
      const c = this.contacts.get(cid);
      if (c) c.lead_ids = c.lead_ids.filter((l) => l !== id);
    }
    const company = lead.company_id === null ? undefined : this.companies.get(lead.company_id);
    if (company) company.lead_ids = company.lead_ids.filter((l) => l !== id);
    lead.is_deleted = true;
    this.logEvent('lead_deleted', lead, lead.updated_by, [], [], nowSec());
    this.hooks.emit('delete_lead', () => ({ leads: { delete: [leadDeleteV2(lead)] } }));
    return lead;
  }

  private link(lead: SimLead, contactId: number): void {
    const contact = this.contacts.get(contactId);
    if (!contact) throw new Error(`Contact ${contactId} not found`);
    if (!lead.contact_ids.includes(contactId)) lead.contact_ids.push(contactId);
    if (!contact.lead_ids.includes(lead.id)) contact.lead_ids.push(lead.id);
  }

  // ---- contacts ----

  addContacts(writes: ContactWrite[], actor: number): SimContact[] {
    const created = writes.map((w) => {
      const t = nowSec();
      const first = w.firstName ?? '';
      const last = w.lastName ?? '';
      const contact: SimContact = {
        id: this.next('contact'),
        name: w.name ?? [first, last].filter(Boolean).join(' '),
        first_name: first,
        last_name: last,
        ...createdBy(actor, w.responsibleUserId, t),
        closest_task_at: null,
        custom_fields_values: applyFields(null, w.fields ?? []),
        account_id: this.accountId,
        is_deleted: false,
        tags: this.applyTags('contacts', [], w.tags ?? {}),
        lead_ids: [],
        company_id: null,
      };
      this.contacts.set(contact.id, contact);
      return contact;
    });
    this.hooks.emit('add_contact', () => ({ contacts: { add: created.map((c) => contactV2(c, actor)) } }));
    return created;
  }

  /** A contact's responsible change rides on `contacts[update]` with old_responsible_user_id (K-WH). */
  updateContacts(items: { id: number; write: ContactWrite }[], actor: number): SimContact[] {
    const changes: Array<[SimContact, number | undefined]> = [];
    const updated = items.map(({ id, write }) => {
      const c = this.contacts.get(id);
      if (!c) throw new Error(`Contact ${id} not found`);
      const oldResponsible = c.responsible_user_id;
      if (write.firstName !== undefined) c.first_name = write.firstName;
      if (write.lastName !== undefined) c.last_name = write.lastName;
      if (write.name !== undefined) c.name = write.name;
      else if (write.firstName !== undefined || write.lastName !== undefined) {
        c.name = [c.first_name, c.last_name].filter(Boolean).join(' ');
      }
      if (write.responsibleUserId !== undefined) c.responsible_user_id = write.responsibleUserId;
      if (write.fields) c.custom_fields_values = applyFields(c.custom_fields_values, write.fields);
      if (write.tags) c.tags = this.applyTags('contacts', c.tags, write.tags);
      c.updated_at = bump(c.updated_at);
      c.updated_by = actor;
      changes.push([c, c.responsible_user_id !== oldResponsible ? oldResponsible : undefined]);
      return c;
    });
    this.hooks.emit('update_contact', () => ({ contacts: { update: changes.map(([c, old]) => contactV2(c, actor, old)) } }));
    return updated;
  }

  // ---- companies ----

  /**
   * Creates a company linked to the given leads and contacts. A lead or contact has at most one
   * company, so linking moves it off its previous one. Fires add_company (under `contacts`, type=company).
   */
  addCompany(w: { name: string; leadIds?: number[]; contactIds?: number[]; responsibleUserId?: number; fields?: FieldChange[] }, actor: number): SimCompany {
    const leads = (w.leadIds ?? []).map((id) => {
      const lead = this.leads.get(id);
      if (!lead) throw new Error(`Lead ${id} not found`);
      return lead;
    });
    const contacts = (w.contactIds ?? []).map((id) => {
      const contact = this.contacts.get(id);
      if (!contact) throw new Error(`Contact ${id} not found`);
      return contact;
    });
    const t = nowSec();
    const company: SimCompany = {
      id: this.next('company'),
      name: w.name,
      ...createdBy(actor, w.responsibleUserId, t),
      closest_task_at: null,
      custom_fields_values: applyFields(null, w.fields ?? []),
      account_id: this.accountId,
      is_deleted: false,
      tags: [],
      lead_ids: [],
      contact_ids: [],
    };
    this.companies.set(company.id, company);
    for (const entity of [...leads, ...contacts]) {
      const key = 'price' in entity ? 'lead_ids' : 'contact_ids';
      const previous = entity.company_id === null ? undefined : this.companies.get(entity.company_id);
      if (previous) previous[key] = previous[key].filter((x) => x !== entity.id);
      entity.company_id = company.id;
      if (!company[key].includes(entity.id)) company[key].push(entity.id);
    }
    this.hooks.emit('add_company', () => ({ contacts: { add: [companyV2(company, actor)] } }));
    return company;
  }

  // ---- notes and tasks ----

  addNotes(entity: EntityType, writes: NoteWrite[], actor: number): SimNote[] {
    const created = writes.map((w) => {
      const t = nowSec();
      const note: SimNote = {
        id: this.next('note'),
        entity_id: w.entityId,
        entity_type: entity,
        created_by: w.createdBy ?? actor,
        updated_by: w.createdBy ?? actor,
        created_at: t,
        updated_at: t,
        responsible_user_id: w.responsibleUserId ?? actor,
        group_id: 0,
        note_type: w.noteType,
        params: w.params,
        account_id: this.accountId,
      };
      this.notes.set(note.id, note);
      return note;
    });
    const event = entity === 'leads' ? 'note_lead' : 'note_contact';
    this.hooks.emit(event, () =>
      entity === 'leads'
        ? { leads: { note: created.map(noteV2) } }
        : { contacts: { note: created.map((n) => ({ ...noteV2(n), type: 'contact' })) } },
    );
    return created;
  }

  addTasks(writes: TaskWrite[], actor: number): SimTask[] {
    const created = writes.map((w) => {
      const t = nowSec();
      const task: SimTask = {
        id: this.next('task'),
        created_by: actor,
        updated_by: actor,
        created_at: t,
        updated_at: t,
        responsible_user_id: w.responsibleUserId,
        group_id: 0,
        entity_id: w.entityId,
        entity_type: w.entityType,
        duration: w.duration,
        is_completed: w.isCompleted,
        task_type_id: w.taskTypeId,
        text: w.text,
        result: w.result,
        complete_till: w.completeTill,
        account_id: this.accountId,
      };
      this.tasks.set(task.id, task);
      return task;
    });
    this.hooks.emit('add_task', () => ({ task: { add: created.map(taskV2) } }));
    return created;
  }
}

function isClosed(statusId: number): boolean {
  return statusId === WON_STATUS_ID || statusId === LOST_STATUS_ID;
}

function dedupeTags(tags: SimTag[]): SimTag[] {
  const seen = new Set<number>();
  return tags.filter((t) => (seen.has(t.id) ? false : (seen.add(t.id), true)));
}

/** Writing a field replaces its whole value list; other fields are untouched. No fields -> null (as v4 returns). */
export function applyFields(current: SimCustomFieldValue[] | null, changes: FieldChange[]): SimCustomFieldValue[] | null {
  const list = (current ?? []).map((f) => ({ ...f, values: [...f.values] }));
  for (const { field, values } of changes) {
    const idx = list.findIndex((f) => f.field_id === field.id);
    if (values.length === 0) {
      if (idx >= 0) list.splice(idx, 1);
      continue;
    }
    const entry: SimCustomFieldValue = {
      field_id: field.id,
      field_name: field.name,
      field_code: field.code,
      field_type: field.type,
      values: values.map((v) => ({ ...v })),
    };
    if (idx >= 0) list[idx] = entry;
    else list.push(entry);
  }
  return list.length > 0 ? list : null;
}
