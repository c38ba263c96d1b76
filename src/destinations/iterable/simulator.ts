/**
 * A fake of the Iterable API, written from the project's vendor facts (shared/vendor-apis/iterable.md)
 * and sharing no code with the connector. A Fastify plugin, mountable under any prefix, so it
 * plays the API root (`https://api.iterable.com/api`) at `http://127.0.0.1:<port>/<prefix>`.
 *
 * Modelled: the `Api-Key` header (401 BadApiKey), the `{msg, code, params}` envelope, users/update
 * and bulkUpdate (merge, one type per field across the project, 4 MB body limit: 400 BatchTooLarge),
 * events/track and trackBulk (same `id` updates the event), list subscribe/unsubscribe (with
 * `channelUnsubscribe`), workflow triggers, DELETE, forget/unforget (forgotten users refused later;
 * 1000 forgets per 24 h), getByEmail/byUserId, bulk answers with per-item `failedUpdates`, and,
 * when asked, the documented per-endpoint rate limits. Not modelled: asynchronous processing (writes
 * apply at once), project types (email and userId users live side by side), merge, catalogs.
 */
import { randomBytes } from 'node:crypto';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { SimulatorHarness, rawOf, readJson } from '../simulator-kit.js';
import type { DestinationSimulator, DestinationSimulatorFactory, EngagementExtra, EngagementSample, SyncOpKind } from '../types.js';
import { isRecord } from '../../model/json.js';

/** bulkUpdate's documented body limit, read as 10^6 bytes per MB (the stricter reading). */
const MAX_BULK_BYTES = 4_000_000;
const FORGET_DAILY_CAP = 1000;
const DAY_MS = 86_400_000;
/** Requests per second per project, per the facts file (applied with `documentedLimits: true`). */
const DOCUMENTED_LIMITS: Record<string, number> = {
  'POST /users/update': 500,
  'POST /users/bulkUpdate': 5,
  'POST /events/track': 2000,
  'POST /events/trackBulk': 10,
  'DELETE /users': 100,
  'POST /users/forget': 3,
  'POST /users/unforget': 3,
  'GET /users': 100,
};
/** Ids the demo and integration config use (any id is accepted; these read well in the output). */
export const SIM_IDS = { suppressListId: 1900, lists: { 'Demo scheduled': 1101, Negotiation: 1104 }, wonWorkflow: 5501 } as const;

export type FailureCategory =
  | 'conflictEmails' | 'conflictUserIds' | 'forgottenEmails' | 'forgottenUserIds' | 'invalidDataEmails' | 'invalidDataUserIds'
  | 'invalidEmails' | 'invalidUserIds' | 'notFoundEmails' | 'notFoundUserIds';
const CATEGORIES: readonly FailureCategory[] = [
  'conflictEmails', 'conflictUserIds', 'forgottenEmails', 'forgottenUserIds', 'invalidDataEmails', 'invalidDataUserIds',
  'invalidEmails', 'invalidUserIds', 'notFoundEmails', 'notFoundUserIds',
];
type BulkEndpoint = 'bulkUpdate' | 'trackBulk' | 'subscribe' | 'unsubscribe';

export interface SimUser {
  email?: string;
  userId?: string;
  dataFields: Record<string, unknown>;
}

export interface SimEvent {
  /** Email (lower-cased) or userId, as the request named the person. */
  person: string;
  eventName: string;
  id: string;
  createdAt?: number;
  dataFields: Record<string, unknown>;
  /** How many times a later request with the same id updated it. */
  updates: number;
  via: 'track' | 'trackBulk';
}

export interface SimWorkflowTrigger {
  person: string | undefined;
  listId?: string;
  workflowId: number;
  dataFields: Record<string, unknown>;
}

export interface IterableSimulatorOptions {
  /** A global cap (requests per second) answered with 429 RateLimitExceeded and `Retry-After: 1`. */
  perSecond?: number;
  /**
   * Apply Iterable's per-endpoint limits (bulkUpdate 5/s, trackBulk 10/s, forget 3/s, ...). Off by
   * default: test suites drive one endpoint faster than a project would.
   */
  documentedLimits?: boolean;
  /** How sendEngagement sends the webhook's Authorization header (Iterable's auth types). */
  webhookAuth?: 'OAuth2' | 'Basic' | 'bare' | 'none';
  /** Forget requests per 24 h (Iterable: 1000); lower it to test the cap. */
  forgetDailyCap?: number;
}

export interface IterableSimulator extends DestinationSimulator {
  /** Person key (email lower-cased, or userId) -> user. */
  readonly users: ReadonlyMap<string, SimUser>;
  readonly events: readonly SimEvent[];
  /** List id (as sent, stringified) -> person keys. */
  readonly lists: ReadonlyMap<string, ReadonlySet<string>>;
  /** Person keys unsubscribed from a list's whole channel (`channelUnsubscribe: true`) -> that list id. */
  readonly channelUnsubscribed: ReadonlyMap<string, string>;
  readonly workflowTriggers: readonly SimWorkflowTrigger[];
  readonly forgotten: ReadonlySet<string>;
  readonly credentials: { readonly apiKey: string; readonly webhookAuthToken: string };
  /**
   * Test control: the next `times` (default 1) bulk requests to `endpoint` (default any bulk
   * endpoint) that name `person` report it under `category` instead of applying it.
   */
  failItem(person: string, category: FailureCategory, opts?: { endpoint?: BulkEndpoint; times?: number }): void;
  /** Posts any system webhook (`eventName` exactly as Iterable spells it) as Iterable would. */
  sendWebhook(url: string, eventName: string, email: string, dataFields?: Record<string, unknown>, extra?: { userId?: string; timestamp?: number }): Promise<number>;
  sendEngagement(url: string, kind: EngagementSample, email: string, extra?: EngagementExtra): Promise<number>;
}

interface Who {
  key: string;
  email?: string;
  userId?: string;
}

export const iterableSimulator = ((opts: IterableSimulatorOptions = {}): IterableSimulator => {
  // Fresh random credentials per instance: a leak test can then search logs for exact values.
  const credentials = {
    apiKey: `sim-iterable-key-${randomBytes(12).toString('hex')}`,
    webhookAuthToken: `sim-iterable-hook-${randomBytes(12).toString('hex')}`,
  };
  const users = new Map<string, SimUser>();
  const fieldTypes = new Map<string, string>();
  const events: SimEvent[] = [];
  const eventsById = new Map<string, SimEvent>();
  const lists = new Map<string, Set<string>>();
  const channelUnsubscribed = new Map<string, string>();
  const workflowTriggers: SimWorkflowTrigger[] = [];
  const forgotten = new Set<string>();
  const forgets: number[] = [];
  const injected: Array<{ person: string; category: FailureCategory; endpoint?: BulkEndpoint; remaining: number }> = [];
  const windows = new Map<string, { second: number; count: number }>();

  const harness = new SimulatorHarness({
    errorBody: (status) => status === 429
      ? { msg: 'Exceeded rate limit.', code: 'RateLimitExceeded', params: null }
      : status === 401 ? { msg: 'Invalid API key', code: 'BadApiKey', params: null }
        : { msg: `simulated HTTP ${status}`, code: 'GenericError', params: null },
    ...(opts.perSecond !== undefined ? { perSecond: opts.perSecond } : {}),
  });
  const record = (kind: SyncOpKind, person: string, ok: boolean, extra: { target?: string; reason?: string; duplicate?: boolean } = {}) =>
    harness.item({ kind, person, ok, ...extra });

  /** The person an item names: exactly one of email and userId (Iterable refuses both). */
  const whoOf = (item: Record<string, unknown>): Who | { error: string } => {
    const email = typeof item.email === 'string' && item.email.trim() ? item.email.trim() : undefined;
    const userId = typeof item.userId === 'string' && item.userId !== '' ? item.userId : undefined;
    if (email && userId) return { error: 'provide an email or a userId, not both' };
    if (email) return { key: email.toLowerCase(), email };
    if (userId) return { key: userId, userId };
    return { error: 'an email or a userId is required' };
  };
  const badIdentifier = (who: Who): FailureCategory | undefined => {
    if (who.email !== undefined) return /^[^@\s]+@[^@\s]+$/.test(who.email) ? undefined : 'invalidEmails';
    // Iterable: empty, too long, non-ASCII or non-printable characters, or a trailing space.
    const id = who.userId ?? '';
    return id.length === 0 || id.length > 512 || !/^[\x20-\x7e]+$/.test(id) || id.endsWith(' ') ? 'invalidUserIds' : undefined;
  };
  const byEmail = (who: Who): string => (who.email !== undefined ? 'Emails' : 'UserIds');
  const takeInjected = (endpoint: BulkEndpoint, who: Who): FailureCategory | undefined => {
    const i = injected.findIndex((f) => f.person === who.key && (f.endpoint === undefined || f.endpoint === endpoint));
    const hit = injected[i];
    if (!hit) return undefined;
    hit.remaining -= 1;
    if (hit.remaining <= 0) injected.splice(i, 1);
    return hit.category;
  };
  /** A field keeps one type across the project; null says nothing about the type. */
  const typeClash = (dataFields: Record<string, unknown>): string | undefined => {
    for (const [name, value] of Object.entries(dataFields)) {
      if (value === null || value === undefined) continue;
      const t = Array.isArray(value) ? 'array' : typeof value;
      const known = fieldTypes.get(name);
      if (known && known !== t) return `field "${name}" is ${known} in this project, got ${t}`;
    }
    return undefined;
  };
  const upsert = (who: Who, dataFields: Record<string, unknown>): string[] => {
    const created: string[] = [];
    for (const [name, value] of Object.entries(dataFields)) {
      if (value === null || value === undefined || fieldTypes.has(name)) continue;
      fieldTypes.set(name, Array.isArray(value) ? 'array' : typeof value);
      created.push(name);
    }
    const existing = users.get(who.key);
    const email = who.email ?? (typeof dataFields.email === 'string' ? dataFields.email : existing?.email);
    // Top-level merge (mergeNestedObjects false): missing fields stay, nested objects are replaced.
    users.set(who.key, {
      ...(email !== undefined ? { email } : {}),
      ...(who.userId !== undefined ? { userId: who.userId } : {}),
      dataFields: { ...existing?.dataFields, ...dataFields },
    });
    return created;
  };
  const ensureUser = (who: Who): void => {
    if (!users.has(who.key)) upsert(who, {});
  };
  const track = (who: Who, e: Record<string, unknown>, via: SimEvent['via']): string => {
    const eventName = String(e.eventName).trim();
    const id = typeof e.id === 'string' && e.id ? e.id : randomBytes(16).toString('hex');
    const dataFields = isRecord(e.dataFields) ? e.dataFields : {};
    const seen = eventsById.get(id);
    if (seen) {
      // Same id: the event is updated, not added.
      seen.dataFields = { ...dataFields };
      seen.updates += 1;
      record('trackEvent', who.key, true, { target: eventName, duplicate: true });
      return id;
    }
    if (who.email !== undefined) ensureUser(who); // email projects create the user an event names
    const ev: SimEvent = { person: who.key, eventName, id, dataFields: { ...dataFields }, updates: 0, via, ...(typeof e.createdAt === 'number' ? { createdAt: e.createdAt } : {}) };
    events.push(ev);
    eventsById.set(id, ev);
    record('trackEvent', who.key, true, { target: eventName });
    return id;
  };
  const erase = (key: string): void => {
    users.delete(key);
    for (const members of lists.values()) members.delete(key);
    record('erasePerson', key, true);
  };

  /** The bulk answer shape, with every failure category present. */
  const bulkAnswer = (failures: Array<{ who: Who; category: FailureCategory }>, successCount: number, extra: Record<string, unknown> = {}) => {
    const failedUpdates = Object.fromEntries(CATEGORIES.map((c) => [c, [] as string[]]));
    for (const f of failures) failedUpdates[f.category]!.push(f.who.email ?? f.who.userId ?? '');
    return { successCount, failCount: failures.length, failedUpdates, ...extra, invalidEmails: failedUpdates.invalidEmails, invalidUserIds: failedUpdates.invalidUserIds };
  };

  const plugin: FastifyPluginAsync = async (app) => {
    // Raw bytes: the size limit applies to what was sent, and malformed JSON gets Iterable's answer.
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: 4 * MAX_BULK_BYTES }, (_req, body, done) => done(null, body));

    app.addHook('onSend', harness.beforeAnswer);
    app.addHook('onRequest', async (request, reply) => {
      const faulted = await harness.fault(request, reply);
      if (faulted) return faulted;
      const key = request.headers['api-key'];
      if (key !== credentials.apiKey) {
        return reply.code(401).send({ msg: 'Invalid API key', code: 'BadApiKey', params: { ip: request.ip, endpoint: request.url.split('?')[0] } });
      }
      return harness.overLimit(reply) ?? overDocumentedLimit(request, reply);
    });
    harness.install(app, (request) => readJson(request.body).value);

    const overDocumentedLimit = (request: FastifyRequest, reply: FastifyReply): FastifyReply | undefined => {
      if (!opts.documentedLimits) return undefined;
      const path = (request.routeOptions.url ?? request.url).replace(app.prefix, '');
      const route = `${request.method} ${path.startsWith('/users/') && request.method !== 'POST' ? '/users' : path}`;
      const limit = DOCUMENTED_LIMITS[route];
      if (limit === undefined) return undefined;
      const second = Math.floor(Date.now() / 1000);
      const w = windows.get(route);
      const count = w && w.second === second ? w.count + 1 : 1;
      windows.set(route, { second, count });
      // No Retry-After: whether Iterable sends one is unconfirmed, so clients must cope without.
      return count > limit ? reply.code(429).send({ msg: 'Exceeded rate limit.', code: 'RateLimitExceeded', params: null }) : undefined;
    };

    const fail = (reply: FastifyReply, status: number, code: string, msg: string) => reply.code(status).send({ msg, code, params: null });
    const success = (msg: string, params: Record<string, unknown> | null = null) => ({ msg, code: 'Success', params });
    /** The JSON object body, or an answer already sent. */
    const objectBody = (request: FastifyRequest, reply: FastifyReply): Record<string, unknown> | FastifyReply => {
      const body = readJson(request.body);
      if (!body.ok) return fail(reply, 400, 'BadJsonBody', 'Could not parse the request body as JSON');
      if (!isRecord(body.value)) return fail(reply, 400, 'BadParams', 'The request body must be a JSON object');
      return body.value;
    };

    app.post('/users/update', async (request, reply) => {
      const body = objectBody(request, reply);
      if (!isRecord(body)) return body;
      const who = whoOf(body);
      if ('error' in who) return fail(reply, 400, 'BadParams', who.error);
      if (badIdentifier(who)) return fail(reply, 400, who.email !== undefined ? 'InvalidEmailAddressError' : 'InvalidUserIdError', 'Invalid email or userId');
      if (forgotten.has(who.key)) {
        record('upsertPerson', who.key, false, { reason: 'ForgottenUserError' });
        return fail(reply, 409, 'ForgottenUserError', 'Contact is GDPR forgotten');
      }
      const dataFields = isRecord(body.dataFields) ? body.dataFields : {};
      const clash = typeClash(dataFields);
      if (clash) {
        record('upsertPerson', who.key, false, { reason: clash });
        return fail(reply, 400, 'RequestFieldsTypesMismatched', clash);
      }
      upsert(who, dataFields);
      record('upsertPerson', who.key, true);
      return success('User updated');
    });

    app.post('/users/bulkUpdate', async (request, reply) => {
      const raw = rawOf(request.body);
      if (raw.length > MAX_BULK_BYTES) return fail(reply, 400, 'BatchTooLarge', `Request is ${raw.length} bytes; bulkUpdate takes at most 4 MB`);
      const body = objectBody(request, reply);
      if (!isRecord(body)) return body;
      if (!Array.isArray(body.users)) return fail(reply, 400, 'BadParams', 'users is required: a list of users');
      const items = body.users.map((u: unknown) => (isRecord(u) ? u : {}));
      const whos = items.map(whoOf);
      const broken = whos.find((w): w is { error: string } => 'error' in w);
      if (broken) return fail(reply, 400, 'BadParams', `every user needs ${broken.error.replace(/^an? /, 'a ')}`);
      const failures: Array<{ who: Who; category: FailureCategory }> = [];
      const created: string[] = [];
      items.forEach((item, i) => {
        const who = whos[i] as Who;
        const dataFields = isRecord(item.dataFields) ? item.dataFields : {};
        const category = badIdentifier(who) ?? (forgotten.has(who.key) ? `forgotten${byEmail(who)}` as FailureCategory : undefined)
          ?? (typeClash(dataFields) ? `invalidData${byEmail(who)}` as FailureCategory : undefined) ?? takeInjected('bulkUpdate', who);
        if (category) {
          failures.push({ who, category });
          record('upsertPerson', who.key, false, { reason: category });
          return;
        }
        created.push(...upsert(who, dataFields));
        record('upsertPerson', who.key, true);
      });
      return bulkAnswer(failures, items.length - failures.length, { createdFields: created, filteredOutFields: [] });
    });

    app.post('/events/track', async (request, reply) => {
      const body = objectBody(request, reply);
      if (!isRecord(body)) return body;
      if (typeof body.eventName !== 'string' || !body.eventName.trim()) return fail(reply, 400, 'BadParams', 'eventName is required');
      const who = whoOf(body);
      if ('error' in who) return fail(reply, 400, 'BadParams', who.error);
      if (badIdentifier(who)) return fail(reply, 400, who.email !== undefined ? 'InvalidEmailAddressError' : 'InvalidUserIdError', 'Invalid email or userId');
      if (forgotten.has(who.key)) return fail(reply, 409, 'ForgottenUserError', 'Contact is GDPR forgotten');
      if (who.userId !== undefined && !users.has(who.key)) return fail(reply, 400, 'UnknownUserIdError', `No user with userId ${who.userId}`);
      const id = track(who, body, 'track');
      return success(`Event with id: ${id} tracked.`, { id });
    });

    app.post('/events/trackBulk', async (request, reply) => {
      const raw = rawOf(request.body);
      // The facts give a size only for bulkUpdate; the same limit is our choice here.
      if (raw.length > MAX_BULK_BYTES) return fail(reply, 400, 'BatchTooLarge', `Request is ${raw.length} bytes; at most 4 MB`);
      const body = objectBody(request, reply);
      if (!isRecord(body)) return body;
      if (!Array.isArray(body.events)) return fail(reply, 400, 'BadParams', 'events is required: a list of events');
      const items = body.events.map((e: unknown) => (isRecord(e) ? e : {}));
      if (items.some((e) => typeof e.eventName !== 'string' || !e.eventName.trim())) return fail(reply, 400, 'BadParams', 'every event needs an eventName');
      const whos = items.map(whoOf);
      const broken = whos.find((w): w is { error: string } => 'error' in w);
      if (broken) return fail(reply, 400, 'BadParams', `every event needs ${broken.error.replace(/^an? /, 'a ')}`);
      const failures: Array<{ who: Who; category: FailureCategory }> = [];
      items.forEach((item, i) => {
        const who = whos[i] as Who;
        const category = badIdentifier(who) ?? (forgotten.has(who.key) ? `forgotten${byEmail(who)}` as FailureCategory : undefined)
          // userId projects do not create users from events; email projects do.
          ?? (who.userId !== undefined && !users.has(who.key) ? 'notFoundUserIds' : undefined) ?? takeInjected('trackBulk', who);
        if (category) {
          failures.push({ who, category });
          record('trackEvent', who.key, false, { target: String(item.eventName), reason: category });
          return;
        }
        track(who, item, 'trackBulk');
      });
      return bulkAnswer(failures, items.length - failures.length, { disallowedEventNames: [], createdFields: [], filteredOutFields: [] });
    });

    const listMembers = (request: FastifyRequest, reply: FastifyReply, endpoint: 'subscribe' | 'unsubscribe') => {
      const body = objectBody(request, reply);
      if (!isRecord(body)) return body;
      // Iterable's listId is an int64; any id is accepted here (the conformance suite's are strings).
      if (typeof body.listId !== 'number' && (typeof body.listId !== 'string' || !body.listId)) return fail(reply, 400, 'BadParams', 'listId is required');
      if (!Array.isArray(body.subscribers)) return fail(reply, 400, 'BadParams', 'subscribers is required: a list of users');
      const subscribers = body.subscribers.map((s: unknown) => (isRecord(s) ? s : {}));
      const whos = subscribers.map(whoOf);
      const broken = whos.find((w): w is { error: string } => 'error' in w);
      if (broken) return fail(reply, 400, 'BadParams', `every subscriber needs ${broken.error.replace(/^an? /, 'a ')}`);
      return { body, listId: String(body.listId), subscribers, whos: whos as Who[], endpoint };
    };

    app.post('/lists/subscribe', async (request, reply) => {
      const r = listMembers(request, reply, 'subscribe');
      if (!('whos' in r)) return r;
      const members = lists.get(r.listId) ?? new Set<string>();
      lists.set(r.listId, members);
      const failures: Array<{ who: Who; category: FailureCategory }> = [];
      r.whos.forEach((who, i) => {
        const category = badIdentifier(who) ?? (forgotten.has(who.key) ? `forgotten${byEmail(who)}` as FailureCategory : undefined)
          ?? (r.body.updateExistingUsersOnly === true && !users.has(who.key) ? `notFound${byEmail(who)}` as FailureCategory : undefined)
          ?? takeInjected('subscribe', who);
        if (category) {
          failures.push({ who, category });
          record('addToList', who.key, false, { target: r.listId, reason: category });
          return;
        }
        const dataFields = r.subscribers[i]?.dataFields;
        upsert(who, isRecord(dataFields) ? dataFields : {});
        members.add(who.key);
        record('addToList', who.key, true, { target: r.listId });
      });
      return bulkAnswer(failures, r.whos.length - failures.length);
    });

    app.post('/lists/unsubscribe', async (request, reply) => {
      const r = listMembers(request, reply, 'unsubscribe');
      if (!('whos' in r)) return r;
      const channel = r.body.channelUnsubscribe === true;
      const kind: SyncOpKind = channel ? 'suppress' : 'removeFromList';
      const failures: Array<{ who: Who; category: FailureCategory }> = [];
      for (const who of r.whos) {
        const category = badIdentifier(who) ?? (forgotten.has(who.key) ? `forgotten${byEmail(who)}` as FailureCategory : undefined) ?? takeInjected('unsubscribe', who);
        if (category) {
          failures.push({ who, category });
          record(kind, who.key, false, { target: r.listId, reason: category });
          continue;
        }
        lists.get(r.listId)?.delete(who.key);
        // The channel unsubscribe outlives the profile: a later update does not resubscribe.
        if (channel) channelUnsubscribed.set(who.key, r.listId);
        record(kind, who.key, true, { target: r.listId });
      }
      return bulkAnswer(failures, r.whos.length - failures.length);
    });

    app.post('/workflows/triggerWorkflow', async (request, reply) => {
      const body = objectBody(request, reply);
      if (!isRecord(body)) return body;
      const workflowId = typeof body.workflowId === 'string' && /^\d+$/.test(body.workflowId) ? Number(body.workflowId) : body.workflowId;
      if (typeof workflowId !== 'number' || !Number.isInteger(workflowId)) return fail(reply, 400, 'BadParams', 'workflowId is required (an integer)');
      const dataFields = isRecord(body.dataFields) ? body.dataFields : {};
      if (body.listId !== undefined) {
        workflowTriggers.push({ person: undefined, listId: String(body.listId), workflowId, dataFields });
        return success('Workflow triggered');
      }
      const who = whoOf(body);
      if ('error' in who) return fail(reply, 400, 'BadParams', `${who.error}, or a listId`);
      if (forgotten.has(who.key)) return fail(reply, 409, 'ForgottenUserError', 'Contact is GDPR forgotten');
      workflowTriggers.push({ person: who.key, workflowId, dataFields });
      record('triggerWorkflow', who.key, true, { target: String(workflowId) });
      return success('Workflow triggered');
    });

    // Both are asynchronous at Iterable: accepted whether or not the user exists.
    app.delete<{ Params: { userId: string } }>('/users/byUserId/:userId', async (request) => {
      erase(request.params.userId);
      return success('User deletion queued');
    });
    app.delete<{ Params: { email: string } }>('/users/:email', async (request) => {
      erase(request.params.email.trim().toLowerCase());
      return success('User deletion queued');
    });

    app.post('/users/forget', async (request, reply) => {
      const body = objectBody(request, reply);
      if (!isRecord(body)) return body;
      const who = whoOf(body);
      if ('error' in who) return fail(reply, 400, 'BadParams', who.error);
      const now = Date.now();
      while (forgets.length && (forgets[0] ?? now) <= now - DAY_MS) forgets.shift();
      if (forgets.length >= (opts.forgetDailyCap ?? FORGET_DAILY_CAP)) return fail(reply, 429, 'RateLimitExceeded', 'At most 1000 forget requests per 24 hours');
      forgets.push(now);
      forgotten.add(who.key);
      erase(who.key);
      return success('User forgotten');
    });

    app.post('/users/unforget', async (request, reply) => {
      const body = objectBody(request, reply);
      if (!isRecord(body)) return body;
      const who = whoOf(body);
      if ('error' in who) return fail(reply, 400, 'BadParams', who.error);
      forgotten.delete(who.key);
      return success('User unforgotten');
    });

    const userView = (key: string) => {
      const u = users.get(key);
      return u ? { user: { ...(u.email !== undefined ? { email: u.email } : {}), ...(u.userId !== undefined ? { userId: u.userId } : {}), dataFields: u.dataFields } } : {};
    };
    app.get<{ Querystring: { email?: string } }>('/users/getByEmail', async (request, reply) => {
      const email = request.query.email?.trim();
      if (!email) return fail(reply, 400, 'BadParams', 'email is required');
      return userView(email.toLowerCase());
    });
    app.get<{ Params: { userId: string } }>('/users/byUserId/:userId', async (request) => userView(request.params.userId));
  };

  const authHeaders = (): Record<string, string> => {
    const mode = opts.webhookAuth ?? 'OAuth2';
    if (mode === 'none') return {};
    return { authorization: mode === 'bare' ? credentials.webhookAuthToken : `${mode} ${credentials.webhookAuthToken}` };
  };

  /** A system webhook as Iterable posts it: a flat JSON object, `dataFields` repeating the email. */
  const sendWebhook: IterableSimulator['sendWebhook'] = async (url, eventName, email, dataFields = {}, extra = {}) => {
    const body = JSON.stringify({
      email,
      ...(extra.userId !== undefined ? { userId: extra.userId } : {}),
      eventName,
      dataFields: { createdAt: iterableTime(extra.timestamp ?? Date.now()), email, ...dataFields },
    });
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...authHeaders() },
      body,
      signal: AbortSignal.timeout(5000),
    });
    await res.arrayBuffer();
    return res.status;
  };

  const sendEngagement = (url: string, kind: EngagementSample, email: string, extra: EngagementExtra = {}): Promise<number> => {
    const campaignId = 4101;
    const templateId = 5201;
    // extra.eventId fixes the message, so the same call twice is the same webhook (Iterable sends no event id).
    const messageId = extra.eventId ?? randomBytes(16).toString('hex');
    const message = {
      campaignId, templateId, messageId, emailId: `c${campaignId}:t${templateId}:${email}`, campaignName: 'Proposal follow-up',
      templateName: 'Proposal follow-up v2', emailSubject: extra.subject ?? 'Your proposal from Acme', channelId: 27447, messageTypeId: 31082,
    };
    const link = extra.link ?? 'https://example.com/pricing';
    const perKind: Record<EngagementSample, [string, Record<string, unknown>]> = {
      opened: ['emailOpen', { ...message, userAgent: 'Mozilla/5.0', ip: '203.0.113.7' }],
      clicked: ['emailClick', { ...message, url: link, linkUrl: link, linkId: 3, userAgent: 'Mozilla/5.0', ip: '203.0.113.7' }],
      unsubscribed: ['emailUnSubscribe', { ...message, unsubSource: 'EmailLink', channelIds: [27447], emailListIds: [], messageTypeIds: [] }],
      bounced: ['emailBounce', { ...message, recipientState: 'HardBounce', status: '5.1.1', bounceMessage: '550 5.1.1 The email account that you tried to reach does not exist.' }],
    };
    const [eventName, dataFields] = perKind[kind];
    return sendWebhook(url, eventName, email, dataFields, extra.timestamp !== undefined ? { timestamp: extra.timestamp } : {});
  };

  return {
    plugin,
    fieldsOf: (key) => users.get(key)?.dataFields,
    requests: harness.requests,
    items: harness.items,
    faults: harness.faults,
    users,
    events,
    lists,
    channelUnsubscribed,
    workflowTriggers,
    forgotten,
    credentials,
    failItem: (person, category, o = {}) => {
      injected.push({ person: person.includes('@') ? person.toLowerCase() : person, category, remaining: o.times ?? 1, ...(o.endpoint ? { endpoint: o.endpoint } : {}) });
    },
    settingsFor: (baseUrl) => ({
      apiKey: credentials.apiKey,
      baseUrl,
      webhookAuthToken: credentials.webhookAuthToken,
      suppressListId: SIM_IDS.suppressListId,
      milestones: ['completed onboarding'],
    }),
    demoConfig: () => ({ lists: { ...SIM_IDS.lists }, workflows: { 'lead.won': SIM_IDS.wonWorkflow } }),
    sendWebhook,
    sendEngagement,
    reset: () => {
      users.clear();
      fieldTypes.clear();
      events.length = 0;
      eventsById.clear();
      lists.clear();
      channelUnsubscribed.clear();
      workflowTriggers.length = 0;
      forgotten.clear();
      forgets.length = 0;
      injected.length = 0;
      windows.clear();
      harness.reset();
    },
  };
}) satisfies DestinationSimulatorFactory;

/** Iterable's own time format, as its webhooks write `createdAt`: "2016-12-02 20:21:04 +00:00". */
function iterableTime(ms: number): string {
  return `${new Date(ms).toISOString().slice(0, 19).replace('T', ' ')} +00:00`;
}
