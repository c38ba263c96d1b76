/**
 * SyncOps -> Customer.io Track v2 batch requests, and batch answers -> one ItemResult per op.
 * Pure (no I/O), so the tests are tables of ops in and requests out.
 *
 * Everything goes through `POST /api/v2/batch`: one request per ≤ 500 KB of ops instead of one per
 * op (v1), identify/event/suppress/delete all fit, and a 207 answer says which items failed.
 */
import { z } from 'zod';
import { classifyResult, type AnyVendorAnswer } from '../http.js';
import { deterministicUlid, ULID_RE } from '../../model/index.js';
import type { Attributes, IdentifyBy, ItemResult, PersonRef, SyncOp } from '../types.js';

export const BATCH_PATH = '/api/v2/batch';
/**
 * Customer.io: a batch request must be < 500 KB and each item ≤ 32 KB. We read KB as 1000 bytes,
 * the stricter reading, so no split batch is refused for being a few bytes over.
 */
export const MAX_REQUEST_BYTES = 500_000;
export const MAX_ITEM_BYTES = 32_000;
/** Customer.io's person and event limits (vendor-apis/customerio.md 1.4). */
export const LIMITS = { attributeValueBytes: 1000, attributeNameBytes: 150, attributesPerCall: 300, eventNameBytes: 100, eventDataBytes: 100_000, idBytes: 150 } as const;

/** Exactly one identifier per item (Customer.io refuses several). */
export type CioIdentifiers = { email: string } | { id: string };

export type CioBatchItem =
  | { type: 'person'; identifiers: CioIdentifiers; action: 'identify'; attributes: Attributes; timestamp: number }
  | { type: 'person'; identifiers: CioIdentifiers; action: 'event'; name: string; id: string; timestamp: number; attributes: Attributes }
  | { type: 'person'; identifiers: CioIdentifiers; action: 'suppress' | 'delete' };

export interface BatchRequest {
  method: 'POST';
  path: typeof BATCH_PATH;
  body: { batch: CioBatchItem[] };
  /** The op index (into `ops`) of each batch item, same order. */
  opIndexes: number[];
}

export interface BatchPlan {
  requests: BatchRequest[];
  /** Ops answered without a request (unsupported kind, missing identifier, oversized item). */
  decided: Map<number, ItemResult>;
}

const BATCH_ENVELOPE_BYTES = Buffer.byteLength('{"batch":[]}');

export function planBatches(ops: readonly SyncOp[], identifyBy: IdentifyBy): BatchPlan {
  const requests: BatchRequest[] = [];
  const decided = new Map<number, ItemResult>();
  let current: BatchRequest | undefined;
  let currentBytes = 0;
  ops.forEach((op, index) => {
    const item = toBatchItem(op, identifyBy);
    if ('fail' in item) {
      decided.set(index, { fail: { reason: item.fail, code: 'invalid' } });
      return;
    }
    const bytes = Buffer.byteLength(JSON.stringify(item));
    if (bytes > MAX_ITEM_BYTES) {
      decided.set(index, {
        fail: { reason: `item is ${bytes} bytes; Customer.io accepts at most ${MAX_ITEM_BYTES} per batch item`, code: 'invalid' },
      });
      return;
    }
    // +1 for the comma; the request must stay strictly under the limit.
    if (!current || currentBytes + 1 + bytes >= MAX_REQUEST_BYTES) {
      current = { method: 'POST', path: BATCH_PATH, body: { batch: [] }, opIndexes: [] };
      currentBytes = BATCH_ENVELOPE_BYTES - 1;
      requests.push(current);
    }
    current.body.batch.push(item);
    current.opIndexes.push(index);
    currentBytes += 1 + bytes;
  });
  return { requests, decided };
}

export function toBatchItem(op: SyncOp, identifyBy: IdentifyBy): CioBatchItem | { fail: string } {
  if (op.kind !== 'upsertPerson' && op.kind !== 'trackEvent' && op.kind !== 'suppress' && op.kind !== 'erasePerson') {
    return { fail: `Customer.io does not support ${op.kind}` };
  }
  const identifiers = identifiersFor(op.person, identifyBy);
  if ('fail' in identifiers) return identifiers;
  const overLimit = limitProblem(op);
  if (overLimit) return { fail: overLimit };
  switch (op.kind) {
    case 'upsertPerson': {
      // Keyed by id, the profile still needs its email to receive messages.
      const attributes = identifyBy === 'id' && !('email' in op.attributes) ? { ...op.attributes, email: op.person.email } : op.attributes;
      return { type: 'person', identifiers, action: 'identify', attributes, timestamp: unixSeconds(op.timestamp) };
    }
    case 'trackEvent':
      return {
        type: 'person',
        identifiers,
        action: 'event',
        name: op.name,
        id: toEventId(op.messageId, op.timestamp),
        timestamp: unixSeconds(op.timestamp),
        attributes: op.properties,
      };
    case 'suppress':
      return { type: 'person', identifiers, action: 'suppress' };
    case 'erasePerson':
      return { type: 'person', identifiers, action: 'delete' };
  }
}

/**
 * What Customer.io would refuse (or, per its docs, silently cut) in this op, said before sending,
 * so the op fails alone with a reason instead of its whole batch.
 */
function limitProblem(op: SyncOp): string | undefined {
  const bytes = (v: unknown) => Buffer.byteLength(typeof v === 'string' ? v : JSON.stringify(v) ?? '');
  if (op.person.id && bytes(op.person.id) > LIMITS.idBytes) return `person id is ${bytes(op.person.id)} bytes; Customer.io allows ${LIMITS.idBytes}`;
  if (op.kind === 'upsertPerson') {
    const names = Object.keys(op.attributes);
    if (names.length > LIMITS.attributesPerCall) return `${names.length} attributes; Customer.io takes at most ${LIMITS.attributesPerCall} per person`;
    for (const [name, value] of Object.entries(op.attributes)) {
      if (bytes(name) > LIMITS.attributeNameBytes) return `attribute name "${name.slice(0, 40)}…" is ${bytes(name)} bytes; Customer.io allows ${LIMITS.attributeNameBytes}`;
      if (typeof value === 'string' && bytes(value) > LIMITS.attributeValueBytes) {
        return `attribute "${name}" is ${bytes(value)} bytes; Customer.io allows ${LIMITS.attributeValueBytes} per value`;
      }
    }
  }
  if (op.kind === 'trackEvent') {
    if (bytes(op.name) > LIMITS.eventNameBytes) return `event name is ${bytes(op.name)} bytes; Customer.io allows ${LIMITS.eventNameBytes}`;
    if (bytes(op.properties) > LIMITS.eventDataBytes) return `event data is ${bytes(op.properties)} bytes; Customer.io allows ${LIMITS.eventDataBytes}`;
  }
  return undefined;
}

function identifiersFor(person: PersonRef, identifyBy: IdentifyBy): CioIdentifiers | { fail: string } {
  if (identifyBy === 'id') {
    // No fallback to email: in an id workspace that would create a second, id-less profile.
    return person.id ? { id: person.id } : { fail: 'person has no id, but this destination identifies people by id (identifyBy: id)' };
  }
  return person.email ? { email: person.email } : { fail: 'person has no email (identifyBy: email)' };
}

/** SyncOp timestamps are unix ms; Customer.io wants unix seconds. */
function unixSeconds(ms: number): number {
  return Math.floor(ms / 1000);
}

/**
 * The event `id` Customer.io dedups on. Its spec types the id as a ULID, and what it does with other
 * strings is undocumented, so a messageId that is a ULID is sent as is and anything else becomes a
 * ULID derived from it: op time in the time part, a hash of the messageId in the rest. Same op,
 * same id, so a retried batch cannot create a second event.
 */
export function toEventId(messageId: string, timestampMs: number): string {
  return ULID_RE.test(messageId) ? messageId.toUpperCase() : deterministicUlid(timestampMs, messageId);
}

/** The 207 body. Loose: extra keys are fine, but every error must say which item it is about. */
const partialBody = z.object({
  errors: z.array(z.looseObject({
    batch_index: z.number().int().nonnegative(),
    reason: z.string().nullish(),
    field: z.string().nullish(),
    message: z.string().nullish(),
  })),
});

/** One result per item of `req`, from Customer.io's answer to it. */
export function batchResults(req: BatchRequest, res: AnyVendorAnswer): ItemResult[] {
  if (res.status !== 207) {
    // 200 {} = all accepted; 400 = the whole batch was malformed; 401, 429, 5xx and network
    // failures concern every item alike.
    const result = classifyResult(res);
    return req.opIndexes.map(() => result);
  }
  const parsed = partialBody.safeParse(res.body);
  if (!parsed.success) {
    // We cannot tell which items failed. Resending is safe: identify, suppress and delete are
    // idempotent and events dedup on their id.
    return req.opIndexes.map(() => ({ retry: { reason: 'HTTP 207 without a readable errors list' }, httpStatus: 207 }));
  }
  const reasons = new Map<number, string[]>();
  for (const e of parsed.data.errors) {
    const text = [e.reason, e.field, e.message].filter(Boolean).join(': ') || 'invalid item';
    reasons.set(e.batch_index, [...(reasons.get(e.batch_index) ?? []), text]);
  }
  return req.opIndexes.map((_, k): ItemResult => {
    const r = reasons.get(k);
    return r ? { fail: { reason: `Customer.io rejected the item: ${r.join('; ')}`, code: 'invalid' }, httpStatus: 207 } : { ok: true, httpStatus: 207 };
  });
}
