/**
 * SyncOps -> Segment Tracking API messages packed into `/v1/batch` requests, and answers -> one
 * ItemResult per op. Pure apart from `sendBatches`, which takes the sender as a function, so the
 * tests are tables of ops in and requests out, and of answers in and results out.
 *
 * Everything goes through `/batch`: one request per up to 2,500 messages within the size limit,
 * instead of one per message. Segment answers 200 to almost anything and silently drops what it
 * finds invalid (no userId, a track without a name), so what it would drop is refused here, with a
 * reason, before it is sent.
 */
import { createHash } from 'node:crypto';
import { classifyHttp, parseRetryAfter, vendorMessage, type AnyVendorAnswer } from '../http.js';
import { deterministicUlid } from '../../model/index.js';
import type { Attributes, AttrValue, IdentifyBy, ItemResult, SyncOp, SyncOpKind } from '../types.js';

export const BATCH_PATH = '/batch';

/** Sizes are JSON bytes as sent; KB is read as 1000 bytes, the stricter reading. */
export interface WireLimits {
  maxMessageBytes: number;
  maxRequestBytes: number;
  maxMessages: number;
}

/** Segment: ≤ 32 KB per message, ≤ 500 KB per batch request, ≤ 2,500 messages per batch. */
export const SEGMENT_WIRE: WireLimits = { maxMessageBytes: 32_000, maxRequestBytes: 500_000, maxMessages: 2500 };
/**
 * RudderStack: the gateway takes ~4 MB per request (Gateway.maxReqSizeInKB = 4000); 32 KB per event
 * is stated only second-hand, and no message count is documented, so Segment's figures are kept
 * for those two (stricter is safe).
 */
export const RUDDERSTACK_WIRE: WireLimits = { maxMessageBytes: 32_000, maxRequestBytes: 4_000_000, maxMessages: 2500 };

const MAX_DATE_MS = 8.64e15;

/** Segment asks for message ids under 100 characters. */
const MAX_MESSAGE_ID_CHARS = 99;

/** Names the sender in the vendor's debugger. */
export const LIBRARY_CONTEXT = { library: { name: 'kommo-sync' } } as const;

/** Trait and property values: scalars, and objects built from dotted names (`company.name`). */
export type JsonValue = AttrValue | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

interface MessageBase {
  userId: string;
  /** When the change happened in Kommo (ISO-8601). */
  timestamp: string;
  messageId: string;
  context: typeof LIBRARY_CONTEXT;
}
export type TrackingMessage =
  | (MessageBase & { type: 'identify'; traits: JsonObject })
  | (MessageBase & { type: 'track'; event: string; properties: JsonObject })
  | (MessageBase & { type: 'group'; groupId: string; traits: JsonObject });

export interface BatchBody {
  batch: TrackingMessage[];
  /** When we sent it: the vendor corrects our clock's skew with it. */
  sentAt: string;
}

export interface BatchRequest {
  body: BatchBody;
  /** The op index (into `ops`) of each message, same order. */
  opIndexes: number[];
  /** JSON bytes of `body`. */
  bytes: number;
}

export interface BatchPlan {
  requests: BatchRequest[];
  /** Ops answered without a request: unsupported, unsendable, oversized, or groups switched off. */
  decided: Map<number, ItemResult>;
}

export interface PlanOptions {
  /** `Segment` or `RudderStack`, for reasons. */
  vendor: string;
  identifyBy: IdentifyBy;
  wire: WireLimits;
  /** The destination's configured name: seeds identify messageIds (an upsert op carries none). */
  destination: string;
  /** `group: false`: groupAccount ops are answered ok without being sent. */
  sendGroups: boolean;
  /** Batch `sentAt` (ISO-8601). */
  sentAt: string;
  /** Why a kind cannot be sent, for the failure reason. */
  unsupported: Partial<Record<SyncOpKind, string>>;
}

export function planBatches(ops: readonly SyncOp[], o: PlanOptions): BatchPlan {
  const requests: BatchRequest[] = [];
  const decided = new Map<number, ItemResult>();
  const envelope = envelopeBytes(o.sentAt);
  let current: BatchRequest | undefined;
  ops.forEach((op, index) => {
    if (op.kind === 'groupAccount' && !o.sendGroups) {
      decided.set(index, { ok: true });
      return;
    }
    const message = toMessage(op, o);
    if ('fail' in message) {
      decided.set(index, { fail: { reason: message.fail, code: 'invalid' } });
      return;
    }
    const bytes = jsonBytes(message);
    if (bytes > o.wire.maxMessageBytes) {
      decided.set(index, {
        fail: {
          reason: `${message.type} message is ${bytes} bytes; ${o.vendor} accepts at most ${o.wire.maxMessageBytes} per message (map fewer or shorter traits/properties)`,
          code: 'invalid',
        },
      });
      return;
    }
    const fits = current && current.body.batch.length < o.wire.maxMessages && current.bytes + 1 + bytes <= o.wire.maxRequestBytes;
    if (!current || !fits) {
      current = { body: { batch: [], sentAt: o.sentAt }, opIndexes: [], bytes: envelope };
      requests.push(current);
    }
    // A comma before every message but the first.
    current.bytes += (current.body.batch.length ? 1 : 0) + bytes;
    current.body.batch.push(message);
    current.opIndexes.push(index);
  });
  return { requests, decided };
}

/** The two halves of a request the vendor refused whole, to find the message it objects to. */
export function splitRequest(req: BatchRequest): [BatchRequest, BatchRequest] {
  const mid = Math.ceil(req.opIndexes.length / 2);
  const half = (from: number, to: number): BatchRequest => {
    const body: BatchBody = { batch: req.body.batch.slice(from, to), sentAt: req.body.sentAt };
    return { body, opIndexes: req.opIndexes.slice(from, to), bytes: jsonBytes(body) };
  };
  return [half(0, mid), half(mid, req.opIndexes.length)];
}

export function toMessage(op: SyncOp, o: Pick<PlanOptions, 'vendor' | 'identifyBy' | 'destination' | 'unsupported'>): TrackingMessage | { fail: string } {
  if (op.kind !== 'upsertPerson' && op.kind !== 'trackEvent' && op.kind !== 'groupAccount') {
    return { fail: o.unsupported[op.kind] ?? `${o.vendor} does not support ${op.kind}` };
  }
  const userId = o.identifyBy === 'id' ? op.person.id : op.person.email;
  if (!userId) {
    return { fail: `person has no ${o.identifyBy === 'id' ? 'id (identifyBy: id)' : 'email (identifyBy: email)'}; ${o.vendor} drops a message without userId silently` };
  }
  // Date's range; a stored op outside it would otherwise throw in toISOString().
  if (!(Math.abs(op.timestamp) <= MAX_DATE_MS)) return { fail: `timestamp ${op.timestamp} is not a time` };
  const timestamp = new Date(op.timestamp).toISOString();
  switch (op.kind) {
    case 'upsertPerson':
      return { type: 'identify', userId, traits: nest(op.attributes), timestamp, messageId: identifyMessageId(op, o.destination), context: LIBRARY_CONTEXT };
    case 'trackEvent':
      if (!op.name.trim()) return { fail: `event has no name; ${o.vendor} drops a track call without one silently` };
      return { type: 'track', userId, event: op.name, properties: nest(op.properties), timestamp, messageId: vendorMessageId(op.messageId, op.timestamp), context: LIBRARY_CONTEXT };
    case 'groupAccount':
      if (!op.groupId) return { fail: `group has no groupId; ${o.vendor} cannot attach the person to it` };
      return { type: 'group', userId, groupId: op.groupId, traits: nest(op.traits), timestamp, messageId: vendorMessageId(op.messageId, op.timestamp), context: LIBRARY_CONTEXT };
  }
}

/**
 * The core's messageIds are ULIDs (26 characters). Anything at or over Segment's 100-character
 * limit becomes a ULID derived from it: same op, same id, so deduplication still works.
 */
export function vendorMessageId(messageId: string, timestampMs: number): string {
  return messageId.length <= MAX_MESSAGE_ID_CHARS ? messageId : deterministicUlid(timestampMs, messageId);
}

/**
 * An upsert op has no messageId of its own. Its content is fixed once queued (retries and replays
 * resend the stored op), so a ULID derived from (destination, person, traits, time) is the same on
 * every attempt: Segment drops the repeat instead of counting a second identify.
 */
export function identifyMessageId(op: Extract<SyncOp, { kind: 'upsertPerson' }>, destination: string): string {
  const digest = createHash('sha256').update(canonicalJson({ destination, person: op.person, attributes: op.attributes })).digest('hex');
  return deterministicUlid(op.timestamp, `identify\n${digest}`);
}

/**
 * Attribute names with dots become nested objects, as Segment's spec wants some traits
 * (`company.name` -> `{company: {name}}`, `address.city`). A plain name wins over dotted names under
 * it. Keys are defined, not assigned, so a name like `__proto__` stays an ordinary key.
 */
export function nest(flat: Attributes): JsonObject {
  const out: JsonObject = {};
  const plain: Array<[string, AttrValue]> = [];
  for (const [name, value] of Object.entries(flat)) {
    const parts = name.split('.');
    if (parts.length < 2 || parts.some((p) => p === '')) {
      plain.push([name, value]);
      continue;
    }
    let node = out;
    for (const part of parts.slice(0, -1)) {
      const next = Object.hasOwn(node, part) ? node[part] : undefined;
      if (isJsonObject(next)) node = next;
      else {
        const child: JsonObject = {};
        define(node, part, child);
        node = child;
      }
    }
    define(node, parts[parts.length - 1]!, value);
  }
  for (const [name, value] of plain) define(out, name, value);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Answers

/** What one answer means for the messages of its request. */
export type Answer =
  /** The same result for every message; `stop`: the next requests would fare alike (auth, throttling, outage). */
  | { all: ItemResult; stop: boolean }
  /** The vendor refused this request's content whole (400/413: size or JSON): split it to find why. */
  | { refused: string; httpStatus: number };

/** Statuses the vendor's own library retries besides 5xx (analytics-node v3.1). */
const RETRY_4XX = new Set([408, 410, 429, 460]);
/** 5xx answers that a resend does not fix (analytics-node v3.1 does not retry them). */
const FINAL_5XX = new Set([501, 505, 511]);
/** Above this an `X-RateLimit-Reset` number is read as a unix time, not seconds to wait. */
const EPOCH_SECONDS = 1e9;

export function readAnswer(res: AnyVendorAnswer): Answer {
  if (res.error !== undefined) return { all: { retry: { reason: res.error } }, stop: true };
  const { status } = res;
  if (status >= 200 && status < 300) return { all: { ok: true, httpStatus: status }, stop: false };
  const message = vendorMessage(res.body);
  const reason = `HTTP ${status}${message ? `: ${message}` : ''}`;
  if (status === 400 || status === 413) {
    // Segment is reported to refuse an empty or very short key with 400 "An invalid write key was provided".
    if (message && /write ?key/i.test(message)) return { all: { fail: { reason, code: 'auth' }, httpStatus: status }, stop: true };
    return { refused: reason, httpStatus: status };
  }
  if (RETRY_4XX.has(status) || (status >= 500 && !FINAL_5XX.has(status))) {
    const afterMs = retryAfterMs(res.headers);
    return { all: { retry: afterMs === undefined ? { reason } : { reason, afterMs }, httpStatus: status }, stop: true };
  }
  if (FINAL_5XX.has(status)) return { all: { fail: { reason, code: 'rejected' }, httpStatus: status }, stop: true };
  // 401/403 auth, 404 (RudderStack "Source is disabled", or a wrong URL), other 4xx, 3xx.
  return { all: classifyHttp(status, res.headers, res.body), stop: true };
}

/** `Retry-After`, else `X-RateLimit-Reset` (seconds to wait; a unix time is tolerated too). */
export function retryAfterMs(headers: Record<string, string>, now: number = Date.now()): number | undefined {
  const retryAfter = parseRetryAfter(headerOf(headers, 'retry-after'), now);
  if (retryAfter !== undefined) return retryAfter;
  const reset = headerOf(headers, 'x-ratelimit-reset')?.trim();
  if (!reset || !/^\d+(\.\d+)?$/.test(reset)) return undefined;
  const n = Number(reset);
  return n > EPOCH_SECONDS ? Math.max(0, Math.round(n * 1000 - now)) : Math.round(n * 1000);
}

/** Extra requests one delivery may spend splitting refused batches; after that a refused batch fails whole. */
export const MAX_SPLIT_REQUESTS = 32;

/**
 * Sends the plan's requests in order and answers every op. A batch refused whole (400/413) is split
 * in halves until the message the vendor objects to fails alone and the rest go; a refused batch
 * was not applied at all, so resending its halves creates no duplicates. Once an answer concerns
 * every request (auth, throttling, outage, network), the rest are answered alike without sending,
 * so a 429 is not met with more traffic.
 */
export async function sendBatches(
  plan: BatchPlan,
  opCount: number,
  send: (body: BatchBody) => Promise<AnyVendorAnswer>,
  vendor: string,
): Promise<ItemResult[]> {
  const results = new Map(plan.decided);
  const queue = [...plan.requests];
  let budget = MAX_SPLIT_REQUESTS;
  let stop: ItemResult | undefined;
  const answer = (req: BatchRequest, r: ItemResult) => req.opIndexes.forEach((i) => results.set(i, r));
  for (let req = queue.shift(); req; req = queue.shift()) {
    if (stop) {
      answer(req, stop);
      continue;
    }
    const a = readAnswer(await send(req.body));
    if ('all' in a) {
      answer(req, a.all);
      if (a.stop) stop = a.all;
      continue;
    }
    if (req.opIndexes.length > 1 && budget >= 2) {
      budget -= 2;
      queue.unshift(...splitRequest(req));
      continue;
    }
    const what = req.opIndexes.length > 1 ? `a batch of ${req.opIndexes.length} messages (not split further)` : 'the message';
    answer(req, { fail: { reason: `${vendor} refused ${what}: ${a.refused}`, code: 'invalid' }, httpStatus: a.httpStatus });
  }
  return Array.from({ length: opCount }, (_, i) => results.get(i) ?? { retry: { reason: 'not sent' } });
}

// ---------------------------------------------------------------------------------------------

function envelopeBytes(sentAt: string): number {
  return jsonBytes({ batch: [], sentAt } satisfies BatchBody);
}

function jsonBytes(value: unknown): number {
  return Buffer.byteLength(JSON.stringify(value));
}

/** JSON with object keys sorted, so equal content always hashes alike. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

function define(obj: JsonObject, key: string, value: JsonValue): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

function isJsonObject(v: JsonValue | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null;
}

function headerOf(headers: Record<string, string>, name: string): string | undefined {
  if (name in headers) return headers[name];
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name);
  return key === undefined ? undefined : headers[key];
}
