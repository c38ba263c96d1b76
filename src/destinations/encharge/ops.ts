/**
 * SyncOps -> Encharge calls, and Encharge answers -> one ItemResult per op. Pure (no I/O), so the
 * tests are tables of ops in and calls out; deliver.ts sends them.
 *
 * Two APIs with two keys: people and tags go to the REST API (`apiKey`), events to the Ingest API
 * (`writeKey`). Encharge has no batch endpoint for events and no event dedup, so the plan:
 * - keeps each person's ops in order, in "waves": a person's n-th op of the delivery is in wave n,
 *   so ops of different people in one wave can be batched or sent side by side;
 * - batches what Encharge takes in bulk: upserts (`POST /people` takes an array) and erasures
 *   (`DELETE /people?people[0][email]=…&people[1][email]=…`);
 * - sends a person's event after the tag changes planned right behind it (tags, then the event a
 *   flow may trigger on), so a failed tag never makes the job resend an event Encharge already took.
 */
import { classifyResult, type AnyVendorAnswer, type HttpMethod } from '../http.js';
import { normalizeEmail } from '../../model/index.js';
import type { Attributes, IdentifyBy, ItemResult, PersonRef, SyncOp } from '../types.js';

export type Api = 'rest' | 'ingest';

/** Our choice (Encharge documents no limit): keeps one upsert body well under a megabyte. */
export const MAX_PEOPLE_PER_UPSERT = 100;
/** Our choice: every erased person adds ~40 bytes of query string; 50 stays far below URL limits. */
export const MAX_PEOPLE_PER_DELETE = 50;
/** Keys the connector sets itself on a person (an attribute of that name would re-key people). */
const IDENTITY_KEYS = ['id', 'email', 'userId'] as const;

/** How a person is named to Encharge: by email, or by our id as Encharge's `userId` (email kept). */
export type Identity = { email: string } | { userId: string; email?: string };

export interface EnchargeCall {
  api: Api;
  method: Extract<HttpMethod, 'POST' | 'DELETE'>;
  /** Appended to `baseUrl` (rest) or `ingestUrl` (ingest). */
  path: string;
  query?: Array<[string, string]>;
  json?: unknown;
  /** The ops (indexes into the delivery) this call answers, in body order. */
  opIndexes: number[];
  /**
   * When Encharge answers 404 (it does not know the person; UNCONFIRMED that it answers so):
   * `create` the person and send again, or count it `ok` (nothing to remove).
   */
  onMissingPerson?: 'create' | 'ok';
  /** Several people refused as a whole (400): resend one by one so only the bad one fails. */
  splittable?: boolean;
}

export interface DeliveryPlan {
  /** Op indexes per wave, each person at most once per wave. */
  waves: number[][];
  /** Ops answered without a request (unsupported kind, no identifier, invalid name or tag). */
  decided: Map<number, ItemResult>;
  /** The person key of each planned op: a person whose op did not succeed gets nothing more. */
  personOf: Map<number, string>;
}

export interface IngestEvent {
  name: string;
  user: Identity;
  properties: Attributes;
}

export function planDelivery(ops: readonly SyncOp[], identifyBy: IdentifyBy): DeliveryPlan {
  const decided = new Map<number, ItemResult>();
  const personOf = new Map<number, string>();
  const byPerson = new Map<string, number[]>();
  ops.forEach((op, index) => {
    const invalid = invalidReason(op, identifyBy);
    if (invalid) {
      decided.set(index, { fail: { reason: invalid, code: 'invalid' } });
      return;
    }
    const key = personKey(op.person, identifyBy);
    personOf.set(index, key);
    const own = byPerson.get(key);
    if (own) own.push(index);
    else byPerson.set(key, [index]);
  });
  const waves: number[][] = [];
  for (const indexes of byPerson.values()) {
    eventsAfterTags(indexes, ops).forEach((index, n) => {
      (waves[n] ??= []).push(index);
    });
  }
  for (const wave of waves) wave.sort((a, b) => a - b);
  return { waves, decided, personOf };
}

/** What Encharge cannot do, said plainly (the destination's `unsupportedReasons` too). */
export const UNSUPPORTED = {
  triggerWorkflow: 'Encharge has no API to start a flow: start it from an event (events) or a tag (lists) instead',
  groupAccount: 'Encharge companies are not synced: map company fields into person attributes (company.fields["Size"])',
} as const;

/** Why Encharge cannot take this op, or undefined when it can. */
function invalidReason(op: SyncOp, identifyBy: IdentifyBy): string | undefined {
  if (op.kind === 'triggerWorkflow' || op.kind === 'groupAccount') return UNSUPPORTED[op.kind];
  const who = identityOf(op.person, identifyBy);
  if ('fail' in who) return who.fail;
  if (op.kind === 'trackEvent' && !op.name.trim()) return 'event name is empty';
  if (op.kind === 'addToList' || op.kind === 'removeFromList') {
    if (!op.listId.trim()) return 'tag (list id) is empty';
    // Encharge reads `tag` as a comma-separated list: a comma would make two tags.
    if (op.listId.includes(',')) return `tag "${op.listId}" contains a comma, which Encharge reads as two tags`;
  }
  return undefined;
}

export function identityOf(person: PersonRef, identifyBy: IdentifyBy): Identity | { fail: string } {
  const email = person.email ? normalizeEmail(person.email) : '';
  if (identifyBy === 'id') {
    // No fallback to email: in an id workspace that would create a second, id-less person.
    if (!person.id) return { fail: 'person has no id, but this destination identifies people by id (identifyBy: id)' };
    return email ? { userId: person.id, email } : { userId: person.id };
  }
  return email ? { email } : { fail: 'person has no email (identifyBy: email)' };
}

function personKey(person: PersonRef, identifyBy: IdentifyBy): string {
  return identifyBy === 'id' ? `id:${person.id ?? ''}` : `email:${normalizeEmail(person.email)}`;
}

/** One person's ops in delivery order, except that an event waits behind the tag ops right after it. */
function eventsAfterTags(indexes: readonly number[], ops: readonly SyncOp[]): number[] {
  const out: number[] = [];
  let held: number[] = [];
  for (const index of indexes) {
    const kind = ops[index]!.kind;
    if (kind === 'trackEvent') held.push(index);
    else if (kind === 'addToList' || kind === 'removeFromList') out.push(index);
    else {
      out.push(...held, index);
      held = [];
    }
  }
  return [...out, ...held];
}

/** The calls for one wave (each person at most once): batched where Encharge allows. */
export function callsFor(ops: readonly SyncOp[], wave: readonly number[], identifyBy: IdentifyBy): EnchargeCall[] {
  const calls: EnchargeCall[] = [];
  const upserts: Array<{ index: number; person: Record<string, unknown> }> = [];
  const erasures: Array<{ index: number; who: Identity }> = [];
  for (const index of wave) {
    const op = ops[index]!;
    const who = identityOf(op.person, identifyBy);
    if ('fail' in who) continue; // planDelivery decided these already
    switch (op.kind) {
      case 'upsertPerson':
        upserts.push({ index, person: personBody(op.attributes, who) });
        break;
      case 'erasePerson':
        erasures.push({ index, who });
        break;
      case 'trackEvent':
        calls.push({ api: 'ingest', method: 'POST', path: '/', json: ingestEvent(op, who), opIndexes: [index] });
        break;
      case 'suppress':
        calls.push({ api: 'rest', method: 'POST', path: '/people/unsubscribe', query: identityQuery(who), opIndexes: [index], onMissingPerson: 'create' });
        break;
      case 'addToList':
        calls.push({ api: 'rest', method: 'POST', path: '/tags', json: { tag: op.listId.trim(), ...identityOnly(who) }, opIndexes: [index], onMissingPerson: 'create' });
        break;
      case 'removeFromList':
        calls.push({ api: 'rest', method: 'DELETE', path: '/tags', json: { tag: op.listId.trim(), ...identityOnly(who) }, opIndexes: [index], onMissingPerson: 'ok' });
        break;
      default:
        break;
    }
  }
  const upsertCalls = chunks(upserts, MAX_PEOPLE_PER_UPSERT).map((chunk): EnchargeCall => ({
    api: 'rest', method: 'POST', path: '/people', json: chunk.map((u) => u.person), opIndexes: chunk.map((u) => u.index), splittable: chunk.length > 1,
  }));
  const eraseCalls = chunks(erasures, MAX_PEOPLE_PER_DELETE).map((chunk): EnchargeCall => {
    const query = chunk.map(({ who }, k): [string, string] => ('userId' in who ? [`people[${k}][userId]`, who.userId] : [`people[${k}][email]`, who.email]));
    // force=true: Encharge otherwise only archives the person; erasure must remove their data.
    return { api: 'rest', method: 'DELETE', path: '/people', query: [...query, ['force', 'true']], opIndexes: chunk.map((e) => e.index) };
  });
  return [...upsertCalls, ...calls, ...eraseCalls];
}

/** A person object of `POST /people`: the mapped attributes, then who they are (which always wins). */
export function personBody(attributes: Attributes, who: Identity): Record<string, unknown> {
  const body: Record<string, unknown> = { ...attributes };
  for (const k of IDENTITY_KEYS) delete body[k];
  return { ...body, ...who };
}

export function ingestEvent(op: Extract<SyncOp, { kind: 'trackEvent' }>, who: Identity): IngestEvent {
  // Encharge drops no repeated event (no idempotency key exists); our message id in the properties
  // lets a flow or a report recognise a copy sent again after a timeout.
  return { name: op.name.trim(), user: who, properties: { ...op.properties, kommo_message_id: op.messageId } };
}

/** The person alone, as the tag and unsubscribe endpoints name them (`userId` wins over email). */
function identityOnly(who: Identity): { email: string } | { userId: string } {
  return 'userId' in who ? { userId: who.userId } : { email: who.email };
}

function identityQuery(who: Identity): Array<[string, string]> {
  return 'userId' in who ? [['userId', who.userId]] : [['email', who.email]];
}

/**
 * The calls to make when Encharge did not know the person of a single-op call: create them (with
 * the attributes an addToList carries), then send the call again, which then counts as is.
 */
export function createThenRetry(call: EnchargeCall, op: SyncOp, identifyBy: IdentifyBy): [EnchargeCall, EnchargeCall] | undefined {
  const who = identityOf(op.person, identifyBy);
  if ('fail' in who) return undefined;
  const attributes = op.kind === 'addToList' ? op.attributes : {};
  const { onMissingPerson: _drop, ...again } = call;
  return [{ api: 'rest', method: 'POST', path: '/people', json: [personBody(attributes, who)], opIndexes: call.opIndexes }, again];
}

/** A refused multi-person upsert as one call per person. */
export function splitUpsert(call: EnchargeCall): EnchargeCall[] {
  const people = Array.isArray(call.json) ? call.json : [];
  return call.opIndexes.map((index, k) => ({ api: call.api, method: call.method, path: call.path, json: [people[k]], opIndexes: [index] }));
}

/** What an answer means for the call's ops, or the follow-up it asks for. */
export type Reading = { results: ItemResult[] } | { missingPerson: true } | { split: true };

export function readAnswer(call: EnchargeCall, res: AnyVendorAnswer): Reading {
  const all = (r: ItemResult): Reading => ({ results: call.opIndexes.map(() => r) });
  if (res.error === undefined && res.status === 404 && call.onMissingPerson === 'ok') return all({ ok: true, httpStatus: 404 });
  if (res.error === undefined && res.status === 404 && call.onMissingPerson === 'create') return { missingPerson: true };
  if (res.error === undefined && res.status === 400 && call.splittable && call.opIndexes.length > 1) return { split: true };
  return all(classifyResult(res));
}

/** Failures that concern every later call to the same API (auth, throttling, outage, network). */
export function failsForEveryone(res: AnyVendorAnswer): boolean {
  return res.error !== undefined || [401, 403, 408, 429].includes(res.status) || res.status >= 500;
}

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
