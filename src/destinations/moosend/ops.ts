/**
 * SyncOps -> Moosend requests, and answers -> one ItemResult per op. Pure (no I/O), so the tests
 * are tables of ops in and requests out.
 *
 * Moosend keeps people per mailing list, keyed by email:
 * - addToList   -> subscribe (an upsert by email) with custom fields as `Name=Value` strings; two or
 *                  more people for one list go through subscribe_many (up to 1000 each);
 * - removeFromList -> remove (remove_many for several): "Removed", not "Unsubscribed", so the
 *                  unsubscribe sweep never mistakes a stage move for an opt-out;
 * - suppress    -> the account-level unsubscribe: off every list, mapped or not, in one request;
 * - erasePerson -> remove from every list of the account (planned by `planErase` once the lists
 *                  are read).
 */
import { isEmail, normalizeEmail } from '../../model/index.js';
import type { AnyVendorAnswer } from '../http.js';
import type { Attributes, ItemResult, SyncOp, SyncOpKind } from '../types.js';
import { paths } from './client.js';
import { classifyAnswer, ignoredEmails, readEnvelope } from './envelope.js';
import { externalOptIn, type MoosendSettings } from './settings.js';

/** Each counts in its own per-key 10 s window at Moosend (KB: 10, 2, 40, 8 and 20 requests). */
export type Endpoint = 'subscribe' | 'subscribeMany' | 'remove' | 'removeMany' | 'unsubscribeAccount';

/** subscribe_many takes up to 1000 subscribers (MS-APIB); remove_many states no limit, so the same. */
export const MAX_BULK = 1000;
/** Attribute names that are subscriber properties, not custom fields. */
export const NAME_ATTRIBUTE = 'Name';
const EMAIL_ATTRIBUTE = 'Email';

export const SUPPORTS: Readonly<Partial<Record<SyncOpKind, true>>> = { addToList: true, removeFromList: true, suppress: true, erasePerson: true };

export const UNSUPPORTED_REASONS: Readonly<Partial<Record<SyncOpKind, string>>> = {
  upsertPerson: 'Moosend keeps people per mailing list: their fields are written with each list subscription (`lists`, `automations`), so a change without a stage move reaches Moosend at the next mapped stage',
  trackEvent: 'Moosend\'s REST API v3 has no server-side custom events (its website tracker is a browser channel): start automations with `automations` (a list subscription) instead',
  triggerWorkflow: 'Moosend\'s API cannot start an automation directly: name a list in `automations` and start the automation on "subscribes to a list"',
  groupAccount: 'Moosend has no companies or groups',
};

export interface MoosendSubscriber {
  Email: string;
  Name?: string;
  CustomFields: string[];
}

export type RequestBody =
  | MoosendSubscriber & { HasExternalDoubleOptIn: boolean }
  | { HasExternalDoubleOptIn: boolean; Subscribers: MoosendSubscriber[] }
  | { Email: string }
  | { Emails: string };

export interface PlannedRequest {
  endpoint: Endpoint;
  method: 'POST';
  path: string;
  body: RequestBody;
  /** One entry per person in the request, with the ops it answers (several ops may share one). */
  entries: Array<{ email: string; opIndexes: number[] }>;
}

export interface DeliveryPlan {
  /** In the order to send: removals, subscriptions, suppressions. */
  requests: PlannedRequest[];
  /** Ops answered without a request (unsupported, no email, a field name Moosend cannot take). */
  decided: Map<number, ItemResult>;
  /** erasePerson ops: their requests need the account's lists first (`planErase`). */
  erase: Array<{ opIndex: number; email: string }>;
}

export interface PlanOptions {
  settings: Pick<MoosendSettings, 'doubleOptIn'>;
  /** The common `lists` key, for per-stage doubleOptIn entries. */
  lists?: Readonly<Record<string, string>>;
}

export function planDelivery(ops: readonly SyncOp[], o: PlanOptions): DeliveryPlan {
  const decided = new Map<number, ItemResult>();
  const erase: DeliveryPlan['erase'] = [];
  // list -> email -> what to send; Maps keep first-seen order, so requests follow op order.
  const adds = new Map<string, Map<string, { subscriber: MoosendSubscriber; opIndexes: number[] }>>();
  const removes = new Map<string, Map<string, number[]>>();
  const suppress = new Map<string, number[]>();
  const invalid = (i: number, reason: string) => decided.set(i, { fail: { reason, code: 'invalid' } });

  ops.forEach((op, i) => {
    if (!SUPPORTS[op.kind]) return invalid(i, `Moosend does not support ${op.kind}: ${UNSUPPORTED_REASONS[op.kind] ?? 'no such API'}`);
    const email = normalizeEmail(op.person.email);
    if (!email) return invalid(i, 'person has no email: Moosend keeps subscribers by email');
    if (!isEmail(email)) return invalid(i, `"${email}" is not an email address Moosend would accept`);
    switch (op.kind) {
      case 'addToList': {
        const subscriber = toSubscriber(email, op.attributes);
        if ('fail' in subscriber) return invalid(i, subscriber.fail);
        // The same person twice for one list: one subscribe, carrying the later op's fields. After
        // a removal from the same list in this batch it is fine: removals are sent first.
        const forList = adds.get(op.listId) ?? new Map<string, { subscriber: MoosendSubscriber; opIndexes: number[] }>();
        adds.set(op.listId, forList);
        const seen = forList.get(email);
        forList.set(email, { subscriber, opIndexes: [...(seen?.opIndexes ?? []), i] });
        return;
      }
      case 'removeFromList': {
        if (adds.get(op.listId)?.has(email)) {
          // Removed after an addition in the same batch: sending it now would run it first.
          decided.set(i, { retry: { reason: 'the same person is subscribed to this list earlier in the batch; removed on the next attempt', afterMs: 0 } });
          return;
        }
        const forList = removes.get(op.listId) ?? new Map<string, number[]>();
        removes.set(op.listId, forList);
        forList.set(email, [...(forList.get(email) ?? []), i]);
        return;
      }
      case 'suppress':
        suppress.set(email, [...(suppress.get(email) ?? []), i]);
        return;
      case 'erasePerson':
        erase.push({ opIndex: i, email });
        return;
      default:
        return invalid(i, `Moosend does not support ${op.kind}`);
    }
  });

  const requests: PlannedRequest[] = [];
  for (const [list, people] of removes) requests.push(...removeRequests(list, [...people].map(([email, opIndexes]) => ({ email, opIndexes }))));
  for (const [list, people] of adds) {
    const optedIn = externalOptIn(o.settings, list, o.lists);
    const all = [...people.entries()];
    if (all.length === 1) {
      const [email, { subscriber, opIndexes }] = all[0]!;
      requests.push({ endpoint: 'subscribe', method: 'POST', path: paths.subscribe(list), body: { ...subscriber, HasExternalDoubleOptIn: optedIn }, entries: [{ email, opIndexes }] });
      continue;
    }
    for (const chunk of chunks(all, MAX_BULK)) {
      requests.push({
        endpoint: 'subscribeMany',
        method: 'POST',
        path: paths.subscribeMany(list),
        body: { HasExternalDoubleOptIn: optedIn, Subscribers: chunk.map(([, p]) => p.subscriber) },
        entries: chunk.map(([email, p]) => ({ email, opIndexes: p.opIndexes })),
      });
    }
  }
  for (const [email, opIndexes] of suppress) {
    requests.push({ endpoint: 'unsubscribeAccount', method: 'POST', path: paths.unsubscribeAccount(), body: { Email: email }, entries: [{ email, opIndexes }] });
  }
  return { requests, decided, erase };
}

/** Removal of these people from every list of the account (GDPR erasure). */
export function planErase(listIds: readonly string[], erase: DeliveryPlan['erase']): PlannedRequest[] {
  const people = new Map<string, number[]>();
  for (const e of erase) people.set(e.email, [...(people.get(e.email) ?? []), e.opIndex]);
  const entries = [...people].map(([email, opIndexes]) => ({ email, opIndexes }));
  return listIds.flatMap((list) => removeRequests(list, entries));
}

function removeRequests(list: string, entries: PlannedRequest['entries']): PlannedRequest[] {
  if (entries.length === 1) {
    const [one] = entries;
    return [{ endpoint: 'remove', method: 'POST', path: paths.remove(list), body: { Email: one!.email }, entries }];
  }
  return chunks(entries, MAX_BULK).map((chunk) => ({
    endpoint: 'removeMany' as const,
    method: 'POST' as const,
    path: paths.removeMany(list),
    body: { Emails: chunk.map((e) => e.email).join(',') },
    entries: chunk,
  }));
}

/**
 * The subscriber as Moosend takes it: `Name` is the subscriber's name, every other attribute a
 * custom field `Name=Value` (Moosend matches them to the fields defined on the list). Missing
 * values (null) are left out; true/false and numbers are sent as text, as Moosend stores them.
 */
export function toSubscriber(email: string, attributes: Attributes): MoosendSubscriber | { fail: string } {
  const fields: string[] = [];
  let name: string | undefined;
  for (const [key, value] of Object.entries(attributes)) {
    if (value === null) continue;
    if (key === NAME_ATTRIBUTE) {
      if (typeof value === 'string' && value.trim()) name = value.trim();
      continue;
    }
    if (key === EMAIL_ATTRIBUTE) continue; // the person's own email is the key, never a field
    const field = key.trim();
    if (!field || field.includes('=')) return { fail: `custom field name ${JSON.stringify(key)} cannot be sent as Moosend's "Name=Value"` };
    fields.push(`${field}=${String(value)}`);
  }
  return { Email: email, ...(name ? { Name: name } : {}), CustomFields: fields };
}

/** One result per entry of `req`, from Moosend's answer to it. */
export function requestResults(req: PlannedRequest, res: AnyVendorAnswer): ItemResult[] {
  const absentIsOk = req.endpoint === 'remove' || req.endpoint === 'removeMany' || req.endpoint === 'unsubscribeAccount';
  const verdict = classifyAnswer(res, { absentIsOk });
  if (!('ok' in verdict) || req.endpoint !== 'subscribeMany') return req.entries.map(() => verdict);
  // A bulk subscribe skips invalid addresses and says which in `Error`, with Code 0.
  const ignored = ignoredEmails(readEnvelope(res.body)?.error ?? null);
  return req.entries.map((e): ItemResult => (ignored.has(e.email)
    ? { fail: { reason: `Moosend ignored ${e.email} as an invalid email address`, code: 'invalid' }, ...(verdict.httpStatus !== undefined ? { httpStatus: verdict.httpStatus } : {}) }
    : verdict));
}

/** An op answered by several requests (erase over every list): the worst of their results. */
export function combine(results: readonly ItemResult[]): ItemResult {
  const fail = results.find((r) => 'fail' in r);
  if (fail) return fail;
  const retries = results.filter((r): r is Extract<ItemResult, { retry: unknown }> => 'retry' in r);
  if (retries.length) {
    const afterMs = Math.max(...retries.map((r) => r.retry.afterMs ?? 0));
    const first = retries[0]!;
    const throttled = retries.some((r) => r.retry.throttled);
    return { ...first, retry: { reason: first.retry.reason, ...(afterMs > 0 ? { afterMs } : {}), ...(throttled ? { throttled } : {}) } };
  }
  return results[0] ?? { retry: { reason: 'no request answered this op' } };
}

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
