/**
 * SyncOps -> Iterable requests, and Iterable's answers -> one ItemResult per op. Pure (no I/O), so
 * the tests are tables of ops in and requests out.
 *
 * Bursts go through the bulk endpoints: every upsert of a delivery through `/users/bulkUpdate`,
 * every event through `/events/trackBulk`, list changes grouped per list. Iterable processes bulk
 * and single-user endpoints separately and out of order with each other, so we never mix them for
 * the same kind of write: a single op is a bulk request of one.
 *
 * Order within a delivery: users, events, list subscriptions, list unsubscriptions (and suppress),
 * workflow triggers, erasures. A workflow trigger waits (retry) unless the person's earlier ops in
 * the same delivery succeeded: Iterable cannot dedup triggers, and the worker resends a whole job
 * when any of its ops is retried, so a trigger sent beside a failed event would start the journey
 * twice.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { classifyResult, parseRetryAfter, vendorMessage, type AnyVendorAnswer } from '../http.js';
import type { Attributes, IdentifyBy, ItemResult, PersonRef, SyncOp } from '../types.js';
import type { IterableSettings } from './settings.js';

export const PATHS = {
  bulkUpdate: '/users/bulkUpdate',
  trackBulk: '/events/trackBulk',
  subscribe: '/lists/subscribe',
  unsubscribe: '/lists/unsubscribe',
  triggerWorkflow: '/workflows/triggerWorkflow',
  forget: '/users/forget',
} as const;

/**
 * Iterable documents 4 MB for a bulkUpdate body; we read MB as 10^6 bytes (the stricter reading) and
 * apply it to every bulk-style body, since the others document no limit (UNCONFIRMED).
 */
export const MAX_BODY_BYTES = 4_000_000;
/** Iterable: an event `id` is at most 512 bytes. */
export const MAX_EVENT_ID_BYTES = 512;
/**
 * Requests per delivery for the endpoints that take one person per request. The worker calls
 * deliver at most `limits.perSecond` (5) times a second, so these stay under Iterable's limits:
 * DELETE 100/s (5 x 20); forget 3/s (5 x 1 can overshoot, and its 429 is honoured);
 * triggerWorkflow has no published limit, 50 keeps one delivery short.
 */
export const PER_DELIVERY = { triggerWorkflow: 50, delete: 20, forget: 1 } as const;

export type Endpoint = 'bulkUpdate' | 'trackBulk' | 'subscribe' | 'unsubscribe' | 'suppress' | 'triggerWorkflow' | 'delete' | 'forget';

/** How a person is named to Iterable: exactly one of the two (Iterable refuses both). */
export type Who = { email: string } | { userId: string };

export interface PlannedItem {
  /** The ops this item carries (two upserts of one person merge into one user). */
  opIndexes: number[];
  who: Who;
  /** Events only: the name, for `disallowedEventNames`. */
  eventName?: string;
}

export interface PlannedRequest {
  endpoint: Endpoint;
  method: 'POST' | 'DELETE';
  path: string;
  body?: Record<string, unknown>;
  items: PlannedItem[];
  /** Workflow triggers only: the person's earlier ops in this delivery, which must be ok first. */
  dependsOn?: number[];
}

export interface DeliveryPlan {
  requests: PlannedRequest[];
  /** Ops answered without a request (unsupported, no identifier, too large, over the per-delivery cap). */
  decided: Map<number, ItemResult>;
}

export interface PlanOptions {
  identifyBy: IdentifyBy;
  suppressListId?: number | undefined;
  erase: IterableSettings['erase'];
}

type UserItem = { email: string; dataFields: Attributes } | { userId: string; preferUserId: true; dataFields: Attributes };
type EventItem = Who & { eventName: string; id: string; createdAt: number; dataFields: Attributes };

const ENVELOPE_BYTES: Record<'bulkUpdate' | 'trackBulk', number> = {
  bulkUpdate: Buffer.byteLength('{"users":[]}'),
  trackBulk: Buffer.byteLength('{"events":[]}'),
};

export function planDelivery(ops: readonly SyncOp[], o: PlanOptions): DeliveryPlan {
  const decided = new Map<number, ItemResult>();
  const invalid = (i: number, reason: string) => decided.set(i, { fail: { reason, code: 'invalid' } });
  const users = new Map<string, { item: UserItem; opIndexes: number[] }>();
  const events: Array<{ item: EventItem; opIndex: number }> = [];
  const subscribe = new Map<string, Map<string, PlannedItem>>();
  const unsubscribe = new Map<string, Map<string, PlannedItem>>();
  const suppress = new Map<string, PlannedItem>();
  const singles: PlannedRequest[] = [];
  const counts = { triggerWorkflow: 0, delete: 0, forget: 0 };
  /** Per person key, the op indexes seen so far (what a later workflow trigger depends on). */
  const earlier = new Map<string, number[]>();

  ops.forEach((op, index) => {
    if (op.kind === 'groupAccount') return void invalid(index, 'Iterable has no accounts or groups; company fields go on the user (the default `company` data field)');
    const who = whoFor(op.person, o.identifyBy);
    if ('fail' in who) return void invalid(index, who.fail);
    const key = keyOf(who);
    const before = earlier.get(key) ?? [];
    earlier.set(key, [...before, index]);
    switch (op.kind) {
      case 'upsertPerson': {
        const existing = users.get(key);
        if (existing) {
          // One user per request: later attributes win, as they would applied in order.
          existing.item.dataFields = { ...existing.item.dataFields, ...op.attributes };
          existing.opIndexes.push(index);
        } else {
          users.set(key, { item: userItem(who, op.attributes, op.person.email), opIndexes: [index] });
        }
        return;
      }
      case 'trackEvent': {
        const eventName = op.name.trim();
        if (!eventName) return void invalid(index, 'event name is empty (Iterable requires eventName)');
        events.push({ item: { ...who, eventName, id: toEventId(op.messageId), createdAt: Math.floor(op.timestamp / 1000), dataFields: op.properties }, opIndex: index });
        return;
      }
      case 'addToList':
      case 'removeFromList': {
        const lists = op.kind === 'addToList' ? subscribe : unsubscribe;
        const members = lists.get(op.listId) ?? new Map<string, PlannedItem>();
        lists.set(op.listId, members);
        addMember(members, key, who, index);
        return;
      }
      case 'suppress': {
        if (o.suppressListId === undefined) {
          return void invalid(index, 'suppressListId is not set: name a list of your marketing email channel, whose channel the person is then unsubscribed from');
        }
        addMember(suppress, key, who, index);
        return;
      }
      case 'triggerWorkflow': {
        if (counts.triggerWorkflow >= PER_DELIVERY.triggerWorkflow) return void decided.set(index, deferred('triggerWorkflow'));
        counts.triggerWorkflow += 1;
        singles.push({
          endpoint: 'triggerWorkflow',
          method: 'POST',
          path: PATHS.triggerWorkflow,
          body: { workflowId: toVendorId(op.workflowId), ...who, dataFields: op.data },
          items: [{ opIndexes: [index], who }],
          dependsOn: before,
        });
        return;
      }
      case 'erasePerson': {
        const endpoint = o.erase === 'forget' ? 'forget' : 'delete';
        if (counts[endpoint] >= PER_DELIVERY[endpoint]) return void decided.set(index, deferred(endpoint));
        counts[endpoint] += 1;
        singles.push(endpoint === 'forget'
          ? { endpoint, method: 'POST', path: PATHS.forget, body: { ...who }, items: [{ opIndexes: [index], who }] }
          : { endpoint, method: 'DELETE', path: deletePath(who), items: [{ opIndexes: [index], who }] });
        return;
      }
    }
  });

  const requests: PlannedRequest[] = [
    ...pack('bulkUpdate', [...users.values()].map((u) => ({ body: u.item, planned: { opIndexes: u.opIndexes, who: whoOf(u.item) } })), decided),
    ...pack('trackBulk', events.map((e) => ({ body: e.item, planned: { opIndexes: [e.opIndex], who: whoOf(e.item), eventName: e.item.eventName } })), decided),
    ...listRequests('subscribe', subscribe, decided),
    ...listRequests('unsubscribe', unsubscribe, decided),
    ...(o.suppressListId === undefined ? [] : listRequests('suppress', new Map([[String(o.suppressListId), suppress]]), decided)),
    // Workflows after the writes they depend on; erasures last.
    ...singles.filter((r) => r.endpoint === 'triggerWorkflow'),
    ...singles.filter((r) => r.endpoint !== 'triggerWorkflow'),
  ];
  return { requests, decided };
}

function whoFor(person: PersonRef, identifyBy: IdentifyBy): Who | { fail: string } {
  if (identifyBy === 'id') {
    // No fallback to email: in a userId project that would create a second, id-less profile.
    return person.id ? { userId: person.id } : { fail: 'person has no id, but this destination identifies people by id (identifyBy: id)' };
  }
  return person.email ? { email: person.email } : { fail: 'person has no email (identifyBy: email)' };
}

function keyOf(who: Who): string {
  return 'email' in who ? `e:${who.email.toLowerCase()}` : `u:${who.userId}`;
}

function whoOf(item: Who): Who {
  return 'email' in item ? { email: item.email } : { userId: item.userId };
}

function userItem(who: Who, attributes: Attributes, email: string): UserItem {
  if ('email' in who) return { email: who.email, dataFields: { ...attributes } };
  // Keyed by userId, the profile still needs its address to receive email (UNCONFIRMED that Iterable
  // takes it from dataFields in every project type; it documents "email or userId, not both").
  const dataFields = email && !('email' in attributes) ? { ...attributes, email } : { ...attributes };
  return { userId: who.userId, preferUserId: true, dataFields };
}

function addMember(members: Map<string, PlannedItem>, key: string, who: Who, index: number): void {
  const m = members.get(key);
  if (m) m.opIndexes.push(index);
  else members.set(key, { opIndexes: [index], who });
}

function deletePath(who: Who): string {
  return 'email' in who ? `/users/${encodeURIComponent(who.email)}` : `/users/byUserId/${encodeURIComponent(who.userId)}`;
}

function deferred(endpoint: keyof typeof PER_DELIVERY): ItemResult {
  return { retry: { reason: `not sent: at most ${PER_DELIVERY[endpoint]} ${endpoint} requests per delivery, to stay within Iterable's rate limit`, afterMs: 1000 } };
}

/** Packs items in order into bodies under MAX_BODY_BYTES; an item too large alone fails alone. */
function pack(
  endpoint: 'bulkUpdate' | 'trackBulk',
  entries: Array<{ body: UserItem | EventItem; planned: PlannedItem }>,
  decided: Map<number, ItemResult>,
): PlannedRequest[] {
  const key = endpoint === 'bulkUpdate' ? 'users' : 'events';
  const out: PlannedRequest[] = [];
  let current: { req: PlannedRequest; list: unknown[]; bytes: number } | undefined;
  for (const { body, planned } of entries) {
    const bytes = Buffer.byteLength(JSON.stringify(body));
    if (ENVELOPE_BYTES[endpoint] + bytes > MAX_BODY_BYTES) {
      for (const i of planned.opIndexes) {
        decided.set(i, { fail: { reason: `item is ${bytes} bytes; an Iterable bulk request is at most ${MAX_BODY_BYTES}`, code: 'invalid' } });
      }
      continue;
    }
    // +1 for the comma between items.
    if (!current || current.bytes + 1 + bytes > MAX_BODY_BYTES) {
      const list: unknown[] = [];
      current = { req: { endpoint, method: 'POST', path: PATHS[endpoint], body: { [key]: list }, items: [] }, list, bytes: ENVELOPE_BYTES[endpoint] - 1 };
      out.push(current.req);
    }
    current.list.push(body);
    current.req.items.push(planned);
    current.bytes += 1 + bytes;
  }
  return out;
}

/** One request per list (and per size limit): `/lists/subscribe` or `/lists/unsubscribe`. */
function listRequests(endpoint: 'subscribe' | 'unsubscribe' | 'suppress', lists: Map<string, Map<string, PlannedItem>>, decided: Map<number, ItemResult>): PlannedRequest[] {
  const out: PlannedRequest[] = [];
  for (const [listId, members] of lists) {
    if (members.size === 0) continue;
    // Subscribers carry no dataFields: the user's fields go through bulkUpdate only, as Iterable
    // processes the two paths separately and a mix gives inconsistent profiles.
    const extra = endpoint === 'suppress' ? { channelUnsubscribe: true } : {};
    const envelope = Buffer.byteLength(JSON.stringify({ listId: toVendorId(listId), subscribers: [], ...extra }));
    let current: { req: PlannedRequest; list: Who[]; bytes: number } | undefined;
    for (const m of members.values()) {
      const bytes = Buffer.byteLength(JSON.stringify(m.who));
      if (envelope + bytes > MAX_BODY_BYTES) {
        for (const i of m.opIndexes) decided.set(i, { fail: { reason: 'identifier too large for an Iterable request', code: 'invalid' } });
        continue;
      }
      if (!current || current.bytes + 1 + bytes > MAX_BODY_BYTES) {
        const list: Who[] = [];
        const path = endpoint === 'subscribe' ? PATHS.subscribe : PATHS.unsubscribe;
        current = { req: { endpoint, method: 'POST', path, body: { listId: toVendorId(listId), subscribers: list, ...extra }, items: [] }, list, bytes: envelope - 1 };
        out.push(current.req);
      }
      current.list.push(m.who);
      current.req.items.push(m);
      current.bytes += 1 + bytes;
    }
  }
  return out;
}

/**
 * Iterable ids (lists, workflows) are integers: a numeric id goes out as a number. Anything else is
 * sent as given and Iterable judges it (our config keys accept any string).
 */
export function toVendorId(id: string): number | string {
  const n = Number(id);
  return /^\d+$/.test(id) && Number.isSafeInteger(n) ? n : id;
}

/**
 * The event `id`. Iterable updates the event with an id it has seen instead of adding a second one,
 * and the core's messageId is deterministic per op, so a retried delivery updates the same event.
 * An id over Iterable's 512 bytes is replaced by its SHA-256 (still deterministic).
 */
export function toEventId(messageId: string): string {
  return Buffer.byteLength(messageId) <= MAX_EVENT_ID_BYTES ? messageId : createHash('sha256').update(messageId).digest('hex');
}

// ---------------------------------------------------------------------------------------------
// Answers

/** Iterable's error codes, by what the worker should do about them. */
const AUTH_CODES = new Set(['BadApiKey', 'BadAuthorizationHeader', 'Unauthorized', 'Forbidden', 'InvalidJwtPayload', 'JwtUserIdentifiersMismatched']);
const RETRY_CODES = new Set(['RateLimitExceeded', 'DatabaseError', 'QueueEmailError']);
/** Iterable processes user writes asynchronously: an unknown user may just not be there yet. */
const NOT_YET_CODES = new Set(['UnknownEmailError', 'UnknownUserIdError']);
const INVALID_CODES = new Set([
  'BadJsonBody', 'BadParams', 'ForbiddenParamsError', 'InvalidEmailAddressError', 'InvalidUserIdError',
  'RequestFieldsTypesMismatched', 'UniqueFieldsLimitExceeded', 'BatchTooLarge',
]);
const REJECTED_CODES = new Set(['EmailAlreadyExists', 'ExternalKeyConflict', 'ForgottenUserError', 'UserIdAlreadyExists']);

const envelope = z.looseObject({ code: z.string(), msg: z.string().nullish().catch(undefined) });

/** Iterable's `code`, when the body is its envelope. */
export function codeOf(body: unknown): string | undefined {
  const parsed = envelope.safeParse(body);
  return parsed.success ? parsed.data.code : undefined;
}

/**
 * The answer to a whole request: Iterable's `code` first (it says more than the status, and may
 * come inside a 200), then the HTTP status. Retry-After is honoured on every retry.
 */
export function classifyAnswer(res: AnyVendorAnswer): ItemResult {
  if (res.error !== undefined) return classifyResult(res);
  const code = codeOf(res.body);
  if (code === undefined || code === 'Success' || code === 'GenericError') {
    // A 2xx without a failing code is a success; GenericError says nothing beyond its status.
    return code === 'GenericError' && res.status < 300 ? retryResult(res, 'GenericError') : classifyResult(res);
  }
  const reason = `HTTP ${res.status}: ${code}${messageText(res.body)}`;
  const httpStatus = res.status;
  if (AUTH_CODES.has(code)) return { fail: { reason, code: 'auth' }, httpStatus };
  if (RETRY_CODES.has(code) || NOT_YET_CODES.has(code)) return retryResult(res, reason);
  if (INVALID_CODES.has(code)) return { fail: { reason, code: 'invalid' }, httpStatus };
  if (REJECTED_CODES.has(code)) return { fail: { reason, code: 'rejected' }, httpStatus };
  if (code === 'NotFound') return { fail: { reason, code: 'not_found' }, httpStatus };
  // A code we do not know: the HTTP status decides, with Iterable's words in the reason.
  const byStatus = classifyResult(res);
  if ('fail' in byStatus) return { fail: { reason, code: byStatus.fail.code }, httpStatus };
  if ('retry' in byStatus) return retryResult(res, reason);
  return byStatus;
}

function retryResult(res: AnyVendorAnswer, reason: string): ItemResult {
  const afterMs = parseRetryAfter(res.headers['retry-after']);
  return { retry: afterMs === undefined ? { reason } : { reason, afterMs }, httpStatus: res.status };
}

function messageText(body: unknown): string {
  const m = vendorMessage(body);
  return m ? ` (${m})` : '';
}

/**
 * Whether an answer concerns every later request too, and how far: `all` (auth, outage, network:
 * nothing else in this delivery would pass), `endpoint` (throttled: this endpoint's limit only).
 */
export function stopScope(res: AnyVendorAnswer, result: ItemResult): 'all' | 'endpoint' | undefined {
  if (res.error !== undefined) return 'all';
  if (res.status === 429 || codeOf(res.body) === 'RateLimitExceeded') return 'endpoint';
  if ('fail' in result && result.fail.code === 'auth') return 'all';
  if (res.status >= 500 || res.status === 408) return 'all';
  return undefined;
}

/** The bulk answer: counts and failures per category, each a list of emails or userIds. */
const bulkAnswer = z.looseObject({
  successCount: z.number().optional().catch(undefined),
  failCount: z.number().optional().catch(undefined),
  failedUpdates: z.record(z.string(), z.unknown()).optional().catch(undefined),
  // Deprecated top-level copies of two categories; older answers may have only these.
  invalidEmails: z.array(z.string()).optional().catch(undefined),
  invalidUserIds: z.array(z.string()).optional().catch(undefined),
  disallowedEventNames: z.array(z.string()).optional().catch(undefined),
  filteredOutFields: z.array(z.string()).optional().catch(undefined),
});

export interface AnswerReading {
  /** One per item of the request, same order. */
  results: ItemResult[];
  /** Set when the answer concerned every item (the delivery may stop there). */
  scope?: 'all' | 'endpoint';
  /** Fields Iterable dropped (the project does not accept new fields): worth a warning. */
  filteredOutFields?: string[];
  /** failCount said more items failed than the answer named. */
  unattributed?: number;
}

/** One result per item of `req`, from Iterable's answer to it. */
export function readAnswer(req: PlannedRequest, res: AnyVendorAnswer): AnswerReading {
  const whole = classifyAnswer(res);
  if (!('ok' in whole)) {
    // Erasing someone Iterable does not know has nothing left to do.
    if ((req.endpoint === 'delete' || req.endpoint === 'forget') && isUnknownUser(res)) return { results: req.items.map(() => ({ ok: true, httpStatus: res.status })) };
    const scope = stopScope(res, whole);
    return { results: req.items.map(() => whole), ...(scope ? { scope } : {}) };
  }
  if (req.endpoint === 'triggerWorkflow' || req.endpoint === 'delete' || req.endpoint === 'forget') return { results: req.items.map(() => whole) };

  const parsed = bulkAnswer.safeParse(res.body);
  if (!parsed.success) return { results: req.items.map(() => whole) };
  const a = parsed.data;
  const failures = new Map<string, string[]>();
  const add = (category: string, ids: unknown) => {
    if (!Array.isArray(ids)) return;
    for (const id of ids) if (typeof id === 'string') failures.set(id.toLowerCase(), [...(failures.get(id.toLowerCase()) ?? []), category]);
  };
  for (const [category, ids] of Object.entries(a.failedUpdates ?? {})) add(category, ids);
  // The deprecated copies repeat failedUpdates' lists; a category seen twice is reported once.
  add('invalidEmails', a.invalidEmails);
  add('invalidUserIds', a.invalidUserIds);
  const disallowed = new Set(a.disallowedEventNames ?? []);

  let named = 0;
  const results = req.items.map((item): ItemResult => {
    const id = 'email' in item.who ? item.who.email.toLowerCase() : item.who.userId.toLowerCase();
    const categories = [...new Set(failures.get(id) ?? [])];
    if (item.eventName !== undefined && disallowed.has(item.eventName)) {
      named += 1;
      return { fail: { reason: `Iterable does not allow the event name "${item.eventName}" in this project (disallowedEventNames)`, code: 'rejected' }, httpStatus: res.status };
    }
    if (!categories.length) return { ok: true, httpStatus: res.status };
    named += 1;
    return itemFailure(req.endpoint, categories, res.status);
  });
  const reading: AnswerReading = { results };
  if (a.filteredOutFields?.length) reading.filteredOutFields = a.filteredOutFields;
  if (a.failCount !== undefined && a.failCount > named) reading.unattributed = a.failCount - named;
  return reading;
}

function isUnknownUser(res: AnyVendorAnswer): boolean {
  const code = codeOf(res.body);
  return code === 'NotFound' || (code !== undefined && NOT_YET_CODES.has(code));
}

/** What one bulk failure category means for the item, per endpoint. */
function itemFailure(endpoint: Endpoint, categories: string[], httpStatus: number): ItemResult {
  const reason = (what: string) => `Iterable refused the item (failedUpdates.${categories.join(', ')}): ${what}`;
  // The most decisive category wins: a permanent refusal over a "not yet".
  const has = (re: RegExp) => categories.some((c) => re.test(c));
  if (has(/^forgotten/i)) return { fail: { reason: reason('the user was forgotten (GDPR) and Iterable keeps no data for them'), code: 'rejected' }, httpStatus };
  if (has(/^conflict/i)) return { fail: { reason: reason('the email or userId belongs to another user'), code: 'rejected' }, httpStatus };
  if (has(/^invalidData/i)) return { fail: { reason: reason('a data field has another type than the same field elsewhere in the project'), code: 'invalid' }, httpStatus };
  if (has(/^invalid/i)) return { fail: { reason: reason('Iterable does not accept this email or userId'), code: 'invalid' }, httpStatus };
  if (has(/^notFound/i)) {
    // Unsubscribing someone Iterable does not know leaves nothing to do. For events and
    // subscriptions the user may not be processed yet (Iterable applies user writes asynchronously):
    // retry with the worker's backoff. An update of an unknown user is final.
    if (endpoint === 'unsubscribe' || endpoint === 'suppress') return { ok: true, httpStatus };
    if (endpoint === 'bulkUpdate') return { fail: { reason: reason('no such user'), code: 'not_found' }, httpStatus };
    return { retry: { reason: reason('the user is not known to Iterable yet') }, httpStatus };
  }
  return { fail: { reason: reason('unknown failure category'), code: 'rejected' }, httpStatus };
}
