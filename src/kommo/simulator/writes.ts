/**
 * Validation of API write bodies into the state's write types, with Kommo's validation-error codes
 * and dotted paths (`custom_fields_values.0.field_id`). Nothing here mutates the account, so a batch
 * with one bad item is rejected as a whole.
 */
import { isRecord } from '../../model/json.js';
import type { ValidationError } from './http.js';
import type { ContactWrite, FieldChange, LeadWrite, NoteWrite, SimState, TagOps, TagRef, TaskWrite } from './state.js';
import type { CustomFieldScalar, EntityType, FieldEntityType, SimCustomField, SimFieldValue } from './types.js';

export const NOTE_TYPES = new Set([
  'common',
  'call_in',
  'call_out',
  'service_message',
  'extended_service_message',
  'message_cashier',
  'geolocation',
  'sms_in',
  'sms_out',
  'attachment',
]);
const TASK_ENTITY_TYPES = new Set(['leads', 'contacts', 'companies', 'customers']);

class Errors {
  readonly list: ValidationError[] = [];
  add(code: string, path: string, detail: string): void {
    this.list.push({ code, path, detail });
  }
}

export interface Parsed<W> {
  write: W;
  errors: ValidationError[];
  requestId: string;
}

/** The batch item's own request_id, else its index, as Kommo echoes it. */
export function requestIdOf(raw: unknown, index: number): string {
  if (isRecord(raw) && (typeof raw.request_id === 'string' || typeof raw.request_id === 'number')) return String(raw.request_id);
  return String(index);
}

function optInt(raw: Record<string, unknown>, key: string, e: Errors, min = 0): number | undefined {
  const v = raw[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    e.add('InvalidType', key, `This value should be of type int`);
    return undefined;
  }
  return v;
}

function optString(raw: Record<string, unknown>, key: string, e: Errors): string | undefined {
  const v = raw[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') {
    e.add('InvalidType', key, 'This value should be of type string');
    return undefined;
  }
  return v;
}

// ---- leads and contacts ----

/** The item's id: from the path (`PATCH /leads/:id`), or required in the body of a batch update. */
function itemId(raw: Record<string, unknown>, mode: 'add' | 'update', idFromPath: number | undefined, e: Errors): number | undefined {
  if (idFromPath !== undefined || mode === 'add') return idFromPath;
  const id = optInt(raw, 'id', e, 1);
  if (id === undefined && raw.id === undefined) e.add('NotBlank', 'id', 'This value should not be blank');
  return id;
}

export function parseLeadItem(
  state: SimState,
  raw: unknown,
  index: number,
  mode: 'add' | 'update',
  idFromPath?: number,
): Parsed<LeadWrite> & { id?: number } {
  const e = new Errors();
  const requestId = requestIdOf(raw, index);
  const write: LeadWrite = {};
  if (!isRecord(raw)) {
    e.add('InvalidType', '', 'This value should be of type object');
    return { write, errors: e.list, requestId };
  }
  const id = itemId(raw, mode, idFromPath, e);
  const current = id === undefined ? undefined : state.leads.get(id);
  if (mode === 'update' && id !== undefined && !current) e.add('NotFound', 'id', `Lead ${id} not found`);

  write.name = optString(raw, 'name', e);
  write.price = optInt(raw, 'price', e);
  const pipelineId = optInt(raw, 'pipeline_id', e, 1);
  const statusId = optInt(raw, 'status_id', e, 1);
  if (pipelineId !== undefined || statusId !== undefined) {
    const stage = state.resolveStage(current, pipelineId, statusId);
    if ('error' in stage) e.add('NotSupportedChoice', stage.path, stage.error);
    else {
      write.pipelineId = stage.pipeline_id;
      write.statusId = stage.status_id;
    }
  }
  write.responsibleUserId = parseResponsible(state, raw, e);
  if (raw.loss_reason_id === null) write.lossReasonId = null;
  else {
    const lossReasonId = optInt(raw, 'loss_reason_id', e, 1);
    if (lossReasonId !== undefined && !state.lossReasons.has(lossReasonId)) e.add('NotSupportedChoice', 'loss_reason_id', `Loss reason ${lossReasonId} not found`);
    else if (lossReasonId !== undefined) write.lossReasonId = lossReasonId;
  }
  if (raw.custom_fields_values !== undefined && raw.custom_fields_values !== null) {
    write.fields = parseFieldChanges(state, 'leads', raw.custom_fields_values, 'custom_fields_values', e);
  }
  write.tags = parseTagOps(state, 'leads', raw, e);
  const embedded = raw._embedded;
  if (mode === 'add' && isRecord(embedded) && embedded.contacts !== undefined) {
    write.contactIds = parseContactLinks(state, embedded.contacts, e);
  }
  return id === undefined ? { write, errors: e.list, requestId } : { write, errors: e.list, requestId, id };
}

export function parseContactItem(
  state: SimState,
  raw: unknown,
  index: number,
  mode: 'add' | 'update',
  idFromPath?: number,
): Parsed<ContactWrite> & { id?: number } {
  const e = new Errors();
  const requestId = requestIdOf(raw, index);
  const write: ContactWrite = {};
  if (!isRecord(raw)) {
    e.add('InvalidType', '', 'This value should be of type object');
    return { write, errors: e.list, requestId };
  }
  const id = itemId(raw, mode, idFromPath, e);
  if (mode === 'update' && id !== undefined && !state.contacts.has(id)) e.add('NotFound', 'id', `Contact ${id} not found`);
  write.name = optString(raw, 'name', e);
  write.firstName = optString(raw, 'first_name', e);
  write.lastName = optString(raw, 'last_name', e);
  write.responsibleUserId = parseResponsible(state, raw, e);
  if (raw.custom_fields_values !== undefined && raw.custom_fields_values !== null) {
    write.fields = parseFieldChanges(state, 'contacts', raw.custom_fields_values, 'custom_fields_values', e);
  }
  write.tags = parseTagOps(state, 'contacts', raw, e);
  return id === undefined ? { write, errors: e.list, requestId } : { write, errors: e.list, requestId, id };
}

function parseResponsible(state: SimState, raw: Record<string, unknown>, e: Errors): number | undefined {
  const id = optInt(raw, 'responsible_user_id', e, 1);
  if (id !== undefined && !state.users.has(id)) {
    e.add('NotSupportedChoice', 'responsible_user_id', `User ${id} not found`);
    return undefined;
  }
  return id;
}

function parseContactLinks(state: SimState, raw: unknown, e: Errors): number[] {
  if (!Array.isArray(raw)) {
    e.add('InvalidType', '_embedded.contacts', 'This value should be of type array');
    return [];
  }
  const ids: number[] = [];
  let main: number | undefined;
  raw.forEach((c, i) => {
    const cid = isRecord(c) ? c.id : undefined;
    if (typeof cid !== 'number' || !state.contacts.has(cid)) {
      e.add('NotFound', `_embedded.contacts.${i}.id`, `Contact ${String(cid)} not found`);
      return;
    }
    ids.push(cid);
    if (isRecord(c) && c.is_main === true && main === undefined) main = cid;
  });
  return main === undefined ? ids : [main, ...ids.filter((x) => x !== main)];
}

/** `_embedded.tags` (null = detach all) replaces the set and makes Kommo ignore tags_to_add/delete. */
function parseTagOps(state: SimState, entity: EntityType, raw: Record<string, unknown>, e: Errors): TagOps | undefined {
  const embedded = raw._embedded;
  if (isRecord(embedded) && 'tags' in embedded) {
    if (embedded.tags === null) return { replace: [] };
    return { replace: parseTagRefs(state, entity, embedded.tags, '_embedded.tags', e) };
  }
  const ops: TagOps = {};
  if (raw.tags_to_add !== undefined) ops.add = parseTagRefs(state, entity, raw.tags_to_add, 'tags_to_add', e);
  if (raw.tags_to_delete !== undefined) ops.remove = parseTagRefs(state, entity, raw.tags_to_delete, 'tags_to_delete', e);
  return ops.add || ops.remove ? ops : undefined;
}

function parseTagRefs(state: SimState, entity: EntityType, raw: unknown, path: string, e: Errors): TagRef[] {
  if (!Array.isArray(raw)) {
    e.add('InvalidType', path, 'This value should be of type array');
    return [];
  }
  const refs: TagRef[] = [];
  raw.forEach((t, i) => {
    if (isRecord(t) && typeof t.id === 'number') {
      if (state.tagExists(entity, t.id)) refs.push({ id: t.id });
      else e.add('NotSupportedChoice', `${path}.${i}.id`, `Tag ${t.id} not found`);
    } else if (isRecord(t) && typeof t.name === 'string' && t.name.trim() !== '') {
      refs.push({ name: t.name });
    } else {
      e.add('InvalidType', `${path}.${i}`, 'A tag needs an id or a name');
    }
  });
  return refs;
}

// ---- custom fields ----

/** `[{field_id | field_code, values:[{value, enum_id? | enum_code?}]}]`; null or [] values clear the field. */
export function parseFieldChanges(state: SimState, entity: FieldEntityType, raw: unknown, path: string, e: Errors): FieldChange[] {
  if (!Array.isArray(raw)) {
    e.add('InvalidType', path, 'This value should be of type array');
    return [];
  }
  const changes: FieldChange[] = [];
  raw.forEach((item, i) => {
    const p = `${path}.${i}`;
    if (!isRecord(item)) {
      e.add('InvalidType', p, 'This value should be of type object');
      return;
    }
    const field =
      typeof item.field_id === 'number'
        ? state.findField(entity, { id: item.field_id })
        : typeof item.field_code === 'string'
          ? state.findField(entity, { code: item.field_code })
          : undefined;
    if (!field) {
      const key = item.field_id !== undefined ? 'field_id' : 'field_code';
      e.add('NotSupportedChoice', `${p}.${key}`, 'The value you selected is not a valid choice.');
      return;
    }
    if (item.values === null || (Array.isArray(item.values) && item.values.length === 0)) {
      changes.push({ field, values: [] });
      return;
    }
    if (!Array.isArray(item.values)) {
      e.add('InvalidType', `${p}.values`, 'This value should be of type array');
      return;
    }
    const values: SimFieldValue[] = [];
    item.values.forEach((v, j) => {
      const parsed = parseFieldValue(field, v, `${p}.values.${j}`, e);
      if (parsed) values.push(parsed);
    });
    if (values.length > 1 && !['multiselect', 'multitext'].includes(field.type)) {
      e.add('InvalidValue', `${p}.values`, `Field ${field.id} takes one value`);
      return;
    }
    changes.push({ field, values });
  });
  return changes;
}

function parseFieldValue(field: SimCustomField, raw: unknown, path: string, e: Errors): SimFieldValue | undefined {
  if (!isRecord(raw)) {
    e.add('InvalidType', path, 'This value should be of type object');
    return undefined;
  }
  const value = raw.value;
  const enums = field.enums ?? [];
  switch (field.type) {
    case 'select':
    case 'multiselect':
    case 'radiobutton': {
      const en =
        typeof raw.enum_id === 'number'
          ? enums.find((x) => x.id === raw.enum_id)
          : enums.find((x) => typeof value === 'string' && x.value.toLowerCase() === value.toLowerCase());
      if (!en) {
        e.add('NotSupportedChoice', `${path}.${typeof raw.enum_id === 'number' ? 'enum_id' : 'value'}`, 'The value you selected is not a valid choice.');
        return undefined;
      }
      return { value: en.value, enum_id: en.id, enum_code: null };
    }
    case 'multitext': {
      if (typeof value !== 'string' || value.trim() === '') {
        e.add('InvalidType', `${path}.value`, 'This value should be of type string');
        return undefined;
      }
      const code = typeof raw.enum_code === 'string' ? raw.enum_code : undefined;
      const en =
        typeof raw.enum_id === 'number'
          ? enums.find((x) => x.id === raw.enum_id)
          : code !== undefined
            ? enums.find((x) => x.value === code)
            : enums[0];
      if (!en) {
        e.add('NotSupportedChoice', `${path}.${code !== undefined ? 'enum_code' : 'enum_id'}`, 'The value you selected is not a valid choice.');
        return undefined;
      }
      return { value, enum_id: en.id, enum_code: en.value };
    }
    case 'checkbox': {
      if (typeof value === 'boolean') return { value };
      if (value === 1 || value === 0 || value === '1' || value === '0') return { value: value === 1 || value === '1' };
      e.add('InvalidType', `${path}.value`, 'This value should be of type bool');
      return undefined;
    }
    case 'numeric':
    case 'price':
    case 'monetary': {
      const n = typeof value === 'number' ? value : typeof value === 'string' && value.trim() !== '' ? Number(value) : NaN;
      if (!Number.isFinite(n)) {
        e.add('InvalidType', `${path}.value`, 'This value should be numeric');
        return undefined;
      }
      return { value: n };
    }
    case 'date':
    case 'date_time':
    case 'birthday': {
      const ts = typeof value === 'number' ? value : typeof value === 'string' ? Math.floor(Date.parse(value) / 1000) : NaN;
      if (!Number.isInteger(ts)) {
        e.add('InvalidType', `${path}.value`, 'This value should be a unix timestamp or an RFC 3339 date');
        return undefined;
      }
      return { value: ts };
    }
    default: {
      if (typeof value === 'number') return { value: String(value) };
      if (typeof value !== 'string') {
        e.add('InvalidType', `${path}.value`, 'This value should be of type string');
        return undefined;
      }
      return value === '' ? undefined : { value };
    }
  }
}

/** Programmatic `fields: {"Industry": "SaaS"}` (by name or code) -> field changes; throws on a bad value. */
export function fieldChangesByName(
  state: SimState,
  entity: FieldEntityType,
  fields: Record<string, CustomFieldScalar | CustomFieldScalar[]>,
  extra: { code: string; value: string | undefined }[] = [],
): FieldChange[] {
  const raw: Record<string, unknown>[] = [];
  for (const { code, value } of extra) {
    if (value !== undefined) raw.push({ field_code: code, values: [{ value }] });
  }
  for (const [key, v] of Object.entries(fields)) {
    const field = state.findField(entity, { name: key }) ?? state.findField(entity, { code: key });
    if (!field) throw new Error(`Unknown ${entity} custom field "${key}"`);
    raw.push({ field_id: field.id, values: (Array.isArray(v) ? v : [v]).map((value) => ({ value })) });
  }
  const e = new Errors();
  const changes = parseFieldChanges(state, entity, raw, 'fields', e);
  if (e.list.length > 0) throw new Error(`Invalid fields: ${e.list.map((x) => `${x.path}: ${x.detail}`).join('; ')}`);
  return changes;
}

// ---- notes and tasks ----

export function parseNoteItem(state: SimState, entity: EntityType, raw: unknown, index: number, entityIdFromPath?: number): Parsed<NoteWrite> {
  const e = new Errors();
  const requestId = requestIdOf(raw, index);
  const write: NoteWrite = { entityId: 0, noteType: 'common', params: {} };
  if (!isRecord(raw)) {
    e.add('InvalidType', '', 'This value should be of type object');
    return { write, errors: e.list, requestId };
  }
  const entityId = entityIdFromPath ?? optInt(raw, 'entity_id', e, 1);
  const exists = entityId !== undefined && (entity === 'leads' ? state.leads.has(entityId) : state.contacts.has(entityId));
  if (entityId === undefined) {
    if (raw.entity_id === undefined) e.add('NotBlank', 'entity_id', 'This value should not be blank');
  } else if (!exists) {
    e.add('NotFound', 'entity_id', `Entity ${entityId} not found`);
  } else {
    write.entityId = entityId;
  }
  const noteType = raw.note_type;
  if (typeof noteType !== 'string' || !NOTE_TYPES.has(noteType)) {
    e.add('NotSupportedChoice', 'note_type', 'The value you selected is not a valid choice.');
  } else {
    write.noteType = noteType;
  }
  if (!isRecord(raw.params)) {
    e.add('InvalidType', 'params', 'This value should be of type object');
  } else {
    write.params = raw.params;
    if (['common', 'service_message', 'sms_in', 'sms_out'].includes(write.noteType) && typeof raw.params.text !== 'string') {
      e.add('NotBlank', 'params.text', 'This value should not be blank');
    }
  }
  const createdBy = optInt(raw, 'created_by', e);
  if (createdBy !== undefined && createdBy !== 0) write.createdBy = createdBy;
  const responsible = parseResponsible(state, raw, e);
  if (responsible !== undefined) write.responsibleUserId = responsible;
  return { write, errors: e.list, requestId };
}

export function parseTaskItem(state: SimState, raw: unknown, index: number, currentUserId: number): Parsed<TaskWrite> {
  const e = new Errors();
  const requestId = requestIdOf(raw, index);
  const write: TaskWrite = {
    text: '',
    completeTill: 0,
    entityId: null,
    entityType: null,
    responsibleUserId: currentUserId,
    taskTypeId: 1,
    isCompleted: false,
    duration: 0,
    result: null,
  };
  if (!isRecord(raw)) {
    e.add('InvalidType', '', 'This value should be of type object');
    return { write, errors: e.list, requestId };
  }
  if (typeof raw.text !== 'string' || raw.text.trim() === '') e.add('NotBlank', 'text', 'This value should not be blank');
  else write.text = raw.text;
  if (raw.complete_till === undefined) e.add('NotBlank', 'complete_till', 'This value should not be blank');
  else write.completeTill = optInt(raw, 'complete_till', e) ?? 0;
  const entityId = optInt(raw, 'entity_id', e, 1);
  const entityType = optString(raw, 'entity_type', e);
  if (entityId !== undefined || entityType !== undefined) {
    if (entityId === undefined) e.add('NotBlank', 'entity_id', 'This value should not be blank');
    if (entityType === undefined || !TASK_ENTITY_TYPES.has(entityType)) {
      e.add('NotSupportedChoice', 'entity_type', 'The value you selected is not a valid choice.');
    } else if (entityId !== undefined) {
      const missing =
        (entityType === 'leads' && !state.leads.has(entityId)) || (entityType === 'contacts' && !state.contacts.has(entityId));
      if (missing) e.add('NotFound', 'entity_id', `Entity ${entityId} not found`);
      write.entityId = entityId;
      write.entityType = entityType;
    }
  }
  write.responsibleUserId = parseResponsible(state, raw, e) ?? currentUserId;
  write.taskTypeId = optInt(raw, 'task_type_id', e, 1) ?? 1;
  write.duration = optInt(raw, 'duration', e) ?? 0;
  if (raw.is_completed !== undefined) {
    if (typeof raw.is_completed !== 'boolean') e.add('InvalidType', 'is_completed', 'This value should be of type bool');
    else write.isCompleted = raw.is_completed;
  }
  if (isRecord(raw.result) && typeof raw.result.text === 'string') write.result = { text: raw.result.text };
  return { write, errors: e.list, requestId };
}
