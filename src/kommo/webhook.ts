/**
 * Kommo account webhook body (parsed bracket form, or the same shape as JSON) -> normalized events.
 * Kommo sends v2 field names and string values; ids are validated and coerced here, at the edge.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { CrmEvent, CrmEventKind, NormalizedInbound } from '../model/index.js';
import { listEntries, listOf } from './form.js';
import { isRecord } from '../model/json.js';

/** The body is not a usable Kommo webhook; the message is safe to return in a 400. */
export class WebhookBodyError extends Error {
  override name = 'WebhookBodyError';
}

export interface KommoWebhookAccount {
  subdomain?: string;
  id?: number;
}

export interface KommoWebhookResult {
  account: KommoWebhookAccount;
  events: NormalizedInbound[];
  /** Entities we do not turn into events (contact deletes, tasks, notes, unsorted, ...). */
  ignored: number;
}

const WON_STATUS_ID = 142;
const LOST_STATUS_ID = 143;

// Fixed processing order, so a JSON body and a form body give events in the same order.
const LEAD_ACTIONS = ['add', 'restore', 'update', 'status', 'responsible', 'delete'] as const;
const CONTACT_ACTIONS = ['add', 'restore', 'update', 'responsible'] as const;
type LeadAction = (typeof LEAD_ACTIONS)[number];
/** Kommo entity keys we recognize but do not sync: their entities are counted as ignored. */
const IGNORED_ENTITY_KEYS = new Set(['task', 'unsorted', 'catalogs', 'message', 'talk', 'customers']);
/** Index-keyed lists inside an entity that later code reads as arrays. */
const LIST_KEYS = new Set(['custom_fields', 'tags', 'values']);

function show(v: unknown): string {
  if (v === undefined) return 'nothing';
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** Numbers or numeric strings (Kommo sends strings) -> number, or NaN when `v` is neither. */
function toNumber(v: unknown, pattern: RegExp): number {
  if (typeof v === 'number') return v;
  return typeof v === 'string' && pattern.test(v.trim()) ? Number(v) : NaN;
}

/** A required number field. */
function numberField(what: string, pattern: RegExp, ok: (n: number) => boolean) {
  return z.unknown().transform((v, ctx) => {
    const n = toNumber(v, pattern);
    if (ok(n)) return n;
    ctx.addIssue({ code: 'custom', message: `expected ${what}, got ${show(v)}` });
    return z.NEVER;
  });
}

/** Optional: absent, null or "" mean "not sent". One transform, no nested parse: it runs per field of every webhook. */
function optionalNumber(what: string, pattern: RegExp, ok: (n: number) => boolean) {
  return z
    .unknown()
    .transform((v, ctx) => {
      if (v === undefined || v === null || v === '') return undefined;
      const n = toNumber(v, pattern);
      if (ok(n)) return n;
      ctx.addIssue({ code: 'custom', message: `expected ${what}, got ${show(v)}` });
      return z.NEVER;
    })
    .optional();
}

const UINT_RE = /^\d+$/;
const isUint = (n: number): boolean => Number.isSafeInteger(n) && n >= 0;
const id = numberField('a numeric id', UINT_RE, isUint);
const optId = optionalNumber('a numeric id', UINT_RE, isUint);
const optTime = optionalNumber('unix seconds', UINT_RE, isUint);
const optAmount = optionalNumber('a number', /^-?\d+(?:\.\d+)?$/, Number.isFinite);

const leadSchema = z.object({
  id,
  status_id: optId,
  pipeline_id: optId,
  old_status_id: optId,
  old_pipeline_id: optId,
  responsible_user_id: optId,
  old_responsible_user_id: optId,
  account_id: optId,
  price: optAmount,
  updated_at: optTime,
  last_modified: optTime,
});
type LeadFields = z.output<typeof leadSchema>;

const contactSchema = z.object({
  id,
  type: z.unknown().optional(),
  responsible_user_id: optId,
  old_responsible_user_id: optId,
  account_id: optId,
  updated_at: optTime,
  last_modified: optTime,
});

const accountSchema = z.object({
  id: optId,
  subdomain: z
    .unknown()
    .transform((v) => (typeof v === 'string' || typeof v === 'number' ? String(v).trim() || undefined : undefined))
    .optional(),
});

/** Validates `value` against `schema`; errors name the bracket path (`leads[status][0][id]`). */
function parseAt<S extends z.ZodType>(schema: S, value: unknown, path: string): z.output<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const messages = r.error.issues.slice(0, 3).map((issue) => {
    const at = path + issue.path.map((p) => `[${String(p)}]`).join('');
    const message = issue.path.length === 0 && issue.code === 'invalid_type' ? `expected an object, got ${show(value)}` : issue.message;
    return `${at}: ${message}`;
  });
  throw new WebhookBodyError(messages.join('; '));
}

/** Entities of one action list, with their bracket paths. */
function entitiesAt(list: unknown, path: string): Array<[string, unknown]> {
  if (!isRecord(list) && !Array.isArray(list)) throw new WebhookBodyError(`${path}: expected a list of entities, got ${show(list)}`);
  return listEntries(list).map(([i, entity]): [string, unknown] => [`${path}[${i}]`, entity]);
}

function countEntities(value: unknown): number {
  if (!isRecord(value)) return listOf(value).length;
  return Object.values(value).reduce<number>((n, list) => n + listOf(list).length, 0);
}

/**
 * Entity as later code reads it: index-keyed lists (custom_fields, tags, values) as arrays,
 * scalars as strings (what the form gives), null and empty containers dropped. A JSON body and
 * its form encoding therefore normalize to the same entity.
 */
function normalizeValue(v: unknown): unknown {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'bigint') return String(v);
  if (typeof v === 'boolean') return v ? '1' : '0';
  if (Array.isArray(v)) {
    const items = v.map(normalizeValue).filter((x) => x !== undefined);
    return items.length > 0 ? items : undefined;
  }
  if (isRecord(v)) return normalizeRecord(v);
  return undefined;
}

function normalizeRecord(r: Record<string, unknown>): Record<string, unknown> | undefined {
  const out: Record<string, unknown> = {};
  let empty = true;
  for (const k in r) {
    const v = r[k];
    const n = normalizeValue(LIST_KEYS.has(k) ? listOf(v) : v);
    if (n !== undefined) {
      out[k] = n;
      empty = false;
    }
  }
  return empty ? undefined : out;
}

function entityOf(raw: unknown): Record<string, unknown> {
  return (isRecord(raw) ? normalizeRecord(raw) : undefined) ?? {};
}

function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (isRecord(v)) {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(v[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');

/** Drops undefined-valued keys so events compare and serialize cleanly. */
function compact<T extends object>(o: T): T {
  const out: Record<string, unknown> = {};
  // for-in, not Object.entries: no [key, value] array per field, on every event of every webhook.
  for (const k in o) {
    const v = o[k];
    if (v !== undefined) out[k] = v;
  }
  return out as T;
}

interface Context {
  account: KommoWebhookAccount;
}

/** Dedup key prefix: the account by subdomain (what intake checks), else by id. */
function keyScope(ctx: Context, entityAccountId: number | undefined): string {
  return kommoKeyScope(ctx.account.subdomain ?? ctx.account.id ?? entityAccountId ?? 'unknown');
}

/** `kommo:<subdomain>`: the prefix of every dedup key of one Kommo account's events. */
export function kommoKeyScope(subdomainOrId: string | number): string {
  return `kommo:${typeof subdomainOrId === 'string' ? subdomainOrId.toLowerCase() : subdomainOrId}`;
}

/** Kinds a Kommo webhook (or Kommo's events API, see kommo/events.ts) reports about a lead. */
export type LeadChangeKind = Exclude<CrmEventKind, 'contact.updated' | 'lead.backfill'>;

/**
 * The dedup key of one change to a lead. The ONE place these keys are built: the webhook parser
 * and the reconciliation of missed webhooks (kommo/events.ts) both call it, so the same change
 * gets the same key whichever path sees it first, and the inbox stores it once.
 * `stamp` is Kommo's `updated_at` of the change (unix seconds) when known.
 */
export function leadDedupKey(scope: string, leadId: number, kind: LeadChangeKind, p: { pipelineId?: number | undefined; statusId?: number | undefined; responsibleUserId?: number | undefined; stamp: string }): string {
  const base = `${scope}:lead:${leadId}`;
  switch (kind) {
    case 'lead.created':
      return `${base}:created`;
    case 'lead.deleted':
      return `${base}:deleted`;
    case 'lead.updated':
      return `${base}:updated:${p.stamp}`;
    case 'lead.responsible_changed':
      return `${base}:responsible:${p.responsibleUserId ?? 'none'}:${p.stamp}`;
    case 'lead.stage_changed':
    case 'lead.won':
    case 'lead.lost':
      return `${base}:stage:${p.pipelineId ?? 'none'}:${p.statusId ?? 'none'}:${p.stamp}`;
  }
}

export function stageKind(statusId: number | undefined): 'lead.stage_changed' | 'lead.won' | 'lead.lost' {
  if (statusId === WON_STATUS_ID) return 'lead.won';
  if (statusId === LOST_STATUS_ID) return 'lead.lost';
  return 'lead.stage_changed';
}

/** leads[update] also carries stage and responsible changes; map them like the dedicated hooks. */
function leadKind(action: LeadAction, f: LeadFields): LeadChangeKind {
  switch (action) {
    case 'add':
      return 'lead.created';
    case 'status':
      return stageKind(f.status_id);
    case 'responsible':
      return 'lead.responsible_changed';
    case 'delete':
      return 'lead.deleted';
    case 'restore':
      return 'lead.updated';
    case 'update': {
      const moved =
        (f.old_status_id !== undefined && f.old_status_id !== f.status_id) ||
        (f.old_pipeline_id !== undefined && f.old_pipeline_id !== f.pipeline_id);
      if (moved) return stageKind(f.status_id);
      const reassigned = f.old_responsible_user_id !== undefined && f.old_responsible_user_id !== f.responsible_user_id;
      return reassigned ? 'lead.responsible_changed' : 'lead.updated';
    }
  }
}

function leadEvent(action: LeadAction, f: LeadFields, entity: Record<string, unknown>, ctx: Context): NormalizedInbound {
  const kind = leadKind(action, f);
  const updatedAt = f.updated_at ?? f.last_modified;
  const isStage = kind === 'lead.stage_changed' || kind === 'lead.won' || kind === 'lead.lost';
  // Without a timestamp: a hash of the entity, or for a stage move of only the stage fields (the
  // status and update hooks of one move carry different entity fields but must still share a key).
  const stamp = updatedAt !== undefined
    ? String(updatedAt)
    : sha256(canonicalJson(isStage ? [f.id, f.pipeline_id, f.status_id, f.old_status_id] : entity));
  const dedupKey = leadDedupKey(keyScope(ctx, f.account_id), f.id, kind, { pipelineId: f.pipeline_id, statusId: f.status_id, responsibleUserId: f.responsible_user_id, stamp });
  const event: CrmEvent = compact({
    type: 'crm',
    kind,
    entityId: f.id,
    entityType: 'lead',
    pipelineId: f.pipeline_id,
    statusId: f.status_id,
    oldPipelineId: f.old_pipeline_id,
    oldStatusId: f.old_status_id,
    responsibleUserId: f.responsible_user_id,
    oldResponsibleUserId: f.old_responsible_user_id,
    price: f.price,
    updatedAt,
    kommoAccountId: ctx.account.id ?? f.account_id,
    subdomain: ctx.account.subdomain,
    entity,
  });
  return { dedupKey, event };
}

type ContactFields = z.output<typeof contactSchema>;

function contactEvent(f: ContactFields, entity: Record<string, unknown>, ctx: Context): NormalizedInbound {
  const entityType = f.type === 'company' ? 'company' : 'contact';
  const updatedAt = f.updated_at ?? f.last_modified;
  const stamp = updatedAt === undefined ? sha256(canonicalJson(entity)) : String(updatedAt);
  const event: CrmEvent = compact({
    type: 'crm',
    kind: 'contact.updated',
    entityId: f.id,
    entityType,
    responsibleUserId: f.responsible_user_id,
    oldResponsibleUserId: f.old_responsible_user_id,
    updatedAt,
    kommoAccountId: ctx.account.id ?? f.account_id,
    subdomain: ctx.account.subdomain,
    entity,
  });
  // Companies share the `contacts` key but not the entity: keep them apart in the key.
  return { dedupKey: `${keyScope(ctx, f.account_id)}:${entityType}:${f.id}:updated:${stamp}`, event };
}

function actionsOf(body: Record<string, unknown>, key: 'leads' | 'contacts'): Record<string, unknown> | undefined {
  const actions = body[key];
  if (actions === undefined) return undefined;
  if (!isRecord(actions)) throw new WebhookBodyError(`${key}: expected an object keyed by action, got ${show(actions)}`);
  return actions;
}

/**
 * Turns a Kommo account webhook body into normalized events.
 * Throws WebhookBodyError when the body holds no Kommo entity list or an entity has a bad id.
 * A missing `account` block is accepted here; intake refuses such a webhook (Kommo always sends
 * `account[subdomain]`) and one whose subdomain is not the configured account's.
 */
export function parseKommoWebhook(body: Record<string, unknown>): KommoWebhookResult {
  if (!isRecord(body)) throw new WebhookBodyError('expected a form or JSON object body');
  const leads = actionsOf(body, 'leads');
  const contacts = actionsOf(body, 'contacts');
  const otherKeys = Object.keys(body).filter((k) => IGNORED_ENTITY_KEYS.has(k));
  if (!leads && !contacts && otherKeys.length === 0) {
    throw new WebhookBodyError('no Kommo entity list (leads[...] or contacts[...]) in the body');
  }

  const account: KommoWebhookAccount = isRecord(body.account) ? compact(parseAt(accountSchema, body.account, 'account')) : {};
  const ctx: Context = { account };
  const events: NormalizedInbound[] = [];
  let ignored = otherKeys.reduce((n, k) => n + countEntities(body[k]), 0);
  let entityAccountId: number | undefined;

  for (const action of LEAD_ACTIONS) {
    if (leads?.[action] === undefined) continue;
    for (const [path, raw] of entitiesAt(leads[action], `leads[${action}]`)) {
      const f = parseAt(leadSchema, raw, path);
      entityAccountId ??= f.account_id;
      events.push(leadEvent(action, f, entityOf(raw), ctx));
    }
  }
  for (const action of CONTACT_ACTIONS) {
    if (contacts?.[action] === undefined) continue;
    for (const [path, raw] of entitiesAt(contacts[action], `contacts[${action}]`)) {
      const f = parseAt(contactSchema, raw, path);
      entityAccountId ??= f.account_id;
      events.push(contactEvent(f, entityOf(raw), ctx));
    }
  }
  // Everything else under leads/contacts (delete of contacts, note, Digital Pipeline keys, ...).
  const known = { leads: new Set<string>(LEAD_ACTIONS), contacts: new Set<string>(CONTACT_ACTIONS) };
  for (const [key, actions] of [['leads', leads], ['contacts', contacts]] as const) {
    for (const [action, list] of Object.entries(actions ?? {})) {
      if (!known[key].has(action)) ignored += listOf(list).length;
    }
  }

  return { account: compact({ ...account, id: account.id ?? entityAccountId }), events, ignored };
}
