/**
 * A fake Encharge, faithful to shared/vendor-apis/encharge.md: the REST API (people upsert, read,
 * unsubscribe and delete, tags, fields, event subscriptions) with the API key, the Ingest API
 * (events) with the separate write key, `{error:{message,markdown,traceId}}` errors, and the
 * webhooks Encharge posts back: event subscriptions (`{endUserData, eventPayload}`) and Activity
 * Stream events. Self-contained on purpose: it shares no code with the connector, so a bug on one
 * side cannot hide the same bug on the other.
 *
 * Where the facts are silent, the choices are ours and listed in README.md ("Simulator").
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { SimulatorHarness, readJson } from '../simulator-kit.js';
import type { DestinationSimulator, DestinationSimulatorFactory, EngagementExtra, EngagementSample, SyncOpKind } from '../types.js';
import { isRecord } from '../../model/json.js';

const TOKEN = 'x-encharge-token';
/** Fields Encharge keeps itself; the rest of a person object are custom fields. */
const IDENTITY = new Set(['id', 'email', 'userId']);

export interface SimPerson {
  id: string;
  email?: string;
  userId?: string;
  fields: Record<string, unknown>;
  tags: Set<string>;
  unsubscribed: boolean;
  /** `DELETE /people` without `force` archives; with it the person is gone. */
  archived: boolean;
  createdAt: string;
  updatedAt: string;
}

export interface SimIngested {
  name: string;
  /** Email (lower-cased) or userId, as the event's `user` named them. */
  person: string;
  user: Record<string, unknown>;
  properties: Record<string, unknown>;
  at: number;
}

export interface SimSubscription {
  id: number;
  eventType: string;
  url: string;
}

export interface SimWebhookDelivery {
  url: string;
  eventType: string;
  /** Our service's answer; 0 when it did not answer in time. */
  status: number;
}

export interface ActivityEvent {
  name: string;
  email: string;
  type?: string;
  properties?: Record<string, unknown>;
  timestamp?: number;
  eventId?: string;
}

export interface EnchargeSimulator extends DestinationSimulator {
  /** People by Encharge id (archived ones included, flagged). */
  readonly people: ReadonlyMap<string, SimPerson>;
  /** The live (not archived) person with this email or userId. */
  person(emailOrUserId: string): SimPerson | undefined;
  /** Events the Ingest API took (not `identify`). */
  readonly events: readonly SimIngested[];
  readonly subscriptions: readonly SimSubscription[];
  /** Webhooks the simulator posted for subscriptions, with our service's answers. */
  readonly webhookDeliveries: readonly SimWebhookDelivery[];
  readonly credentials: { readonly apiKey: string; readonly writeKey: string };
  /**
   * How the REST API treats a person it does not know in unsubscribe and tag calls: `create` them
   * (the default; UNCONFIRMED either way) or answer 404.
   */
  unknownPeople: 'create' | 'reject';
  /** A flow tags the person (the "clicked the pricing link" recipe): subscribers get `added-tag-<tag>`. */
  tagPerson(email: string, tag: string): Promise<number[]>;
  /** The person clicks "unsubscribe" in an email: subscribers get `unsubscribedUser`. */
  unsubscribePerson(email: string): Promise<number[]>;
  /** An event-subscription webhook sent straight to `url` (as subscribed with `?event=<eventType>`). */
  sendSubscriptionEvent(url: string, eventType: string, email: string, eventPayload?: Record<string, unknown>): Promise<number>;
  /** An Activity Stream event sent to `url` (the add-on posts every event to one endpoint). */
  sendActivity(url: string, event: ActivityEvent): Promise<number>;
  /** Waits for webhooks in flight (tag and unsubscribe changes post them in the background). */
  flushWebhooks(): Promise<void>;
  sendEngagement(url: string, kind: EngagementSample, email: string, extra?: EngagementExtra): Promise<number>;
}

export const enchargeSimulator = ((opts: { perSecond?: number } = {}): EnchargeSimulator => {
  // Fresh random keys per instance: a leak test can then search logs for exact values.
  const credentials = {
    apiKey: `sim-enc-api-${randomBytes(12).toString('hex')}`,
    writeKey: `sim-enc-write-${randomBytes(12).toString('hex')}`,
  };
  const people = new Map<string, SimPerson>();
  const events: SimIngested[] = [];
  const subscriptions: SimSubscription[] = [];
  const webhookDeliveries: SimWebhookDelivery[] = [];
  const inFlight = new Set<Promise<void>>();
  let nextSubscription = 1;
  let nextPerson = 1;
  const harness = new SimulatorHarness({
    errorBody: (status) => errorBody(status === 429 ? 'Too many requests (simulated)' : `Simulated HTTP ${status}`),
    // Encharge publishes no limit; a cap is only set when a test or bench asks for one.
    ...(opts.perSecond !== undefined ? { perSecond: opts.perSecond } : {}),
  });
  const record = (kind: SyncOpKind, person: string, ok: boolean, extra: { target?: string; reason?: string } = {}) => harness.item({ kind, person, ok, ...extra });

  const live = (): SimPerson[] => [...people.values()].filter((p) => !p.archived);
  /** Upserts match by id, then userId, then email (the spec's "id, userId, email or another ID"). */
  const find = (ref: { id?: string; userId?: string; email?: string }): SimPerson | undefined => {
    if (ref.id) return people.get(ref.id);
    const byUserId = ref.userId ? live().find((p) => p.userId === ref.userId) : undefined;
    if (byUserId) return byUserId;
    const email = ref.email?.trim().toLowerCase();
    return email ? live().find((p) => p.email === email) : undefined;
  };
  const nameOf = (ref: { id?: string; userId?: string; email?: string }): string => ref.email?.trim().toLowerCase() || ref.userId || ref.id || '';
  const create = (ref: { userId?: string; email?: string }): SimPerson => {
    const now = new Date().toISOString();
    const p: SimPerson = {
      id: `enc-${nextPerson++}`,
      ...(ref.email ? { email: ref.email.trim().toLowerCase() } : {}),
      ...(ref.userId ? { userId: ref.userId } : {}),
      fields: {}, tags: new Set(), unsubscribed: false, archived: false, createdAt: now, updatedAt: now,
    };
    people.set(p.id, p);
    return p;
  };
  const view = (p: SimPerson): Record<string, unknown> => ({
    ...p.fields,
    id: p.id,
    ...(p.email ? { email: p.email } : {}),
    ...(p.userId ? { userId: p.userId } : {}),
    tags: [...p.tags].join(','),
    unsubscribed: p.unsubscribed,
    createdAt: p.createdAt,
    updatedAt: p.updatedAt,
  });

  /** Posts `{endUserData, eventPayload}` to every subscription of `eventType`, in the background. */
  const emit = (eventType: string, person: SimPerson, eventPayload: Record<string, unknown> = {}): Promise<number[]> => {
    const targets = subscriptions.filter((s) => s.eventType === eventType);
    if (!targets.length) return Promise.resolve([]);
    const body = JSON.stringify({ endUserData: [view(person)], eventPayload });
    const sent = Promise.all(targets.map(async (s) => {
      const status = await postJson(s.url, body, 5000);
      webhookDeliveries.push({ url: s.url, eventType, status });
      return status;
    }));
    const tracked = sent.then(() => undefined);
    inFlight.add(tracked);
    void tracked.finally(() => inFlight.delete(tracked));
    return sent;
  };
  const touch = (p: SimPerson) => {
    p.updatedAt = new Date().toISOString();
  };
  const addTags = (p: SimPerson, tags: string[]) => {
    for (const t of tags) {
      if (p.tags.has(t)) continue;
      p.tags.add(t);
      touch(p);
      void emit(`added-tag-${t}`, p, { tag: t });
    }
  };
  const unsubscribe = (p: SimPerson) => {
    if (p.unsubscribed) return;
    p.unsubscribed = true;
    touch(p);
    void emit('unsubscribedUser', p);
  };

  /** Applies one person object of `POST /people` (or an Ingest `user`); returns the person. */
  const upsert = (obj: Record<string, unknown>): SimPerson => {
    const ref = refOf(obj);
    let p = find(ref);
    const isNew = !p;
    p ??= create(ref);
    if (ref.email) p.email = ref.email.trim().toLowerCase();
    if (ref.userId) p.userId = ref.userId;
    for (const [k, v] of Object.entries(obj)) {
      if (IDENTITY.has(k) || k === 'tags') continue;
      p.fields[k] = v;
    }
    touch(p);
    if (typeof obj.tags === 'string') addTags(p, splitTags(obj.tags));
    void emit(isNew ? 'newUser' : 'updatedUser', p);
    return p;
  };

  /** The person a tag or unsubscribe call names, created or refused when unknown (`unknownPeople`). */
  const personFor = (ref: { id?: string; userId?: string; email?: string }, reply: FastifyReply): SimPerson | FastifyReply => {
    const p = find(ref);
    if (p) return p;
    if (sim.unknownPeople === 'reject' || ref.id) return reply.code(404).send(errorBody('Person not found.'));
    return create(ref);
  };

  const plugin: FastifyPluginAsync = async (app) => {
    // Raw bytes: malformed JSON gets Encharge's error shape, not Fastify's.
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

    app.addHook('onSend', harness.beforeAnswer);
    app.addHook('onRequest', async (request, reply) => {
      const faulted = await harness.fault(request, reply);
      if (faulted) return faulted;
      const path = request.url.split('?')[0] ?? '';
      const ingest = path.slice(app.prefix.length).startsWith('/ingest/');
      const header = request.headers[TOKEN];
      const given = typeof header === 'string' ? header : ingest ? undefined : queryOf(request).token;
      // Two keys, never interchangeable: the write key only for Ingest, the API key only for REST.
      if (given !== (ingest ? credentials.writeKey : credentials.apiKey)) return reply.code(401).send(errorBody('Unauthorized: invalid or missing API key.'));
      return harness.overLimit(reply);
    });
    // Requests without a body (unsubscribe, delete) carry their people in the query: record that.
    harness.install(app, (request) => {
      const body = readJson(request.body);
      return body.value === undefined ? { query: queryOf(request) } : body.value;
    });
    app.setNotFoundHandler((request, reply) => reply.code(404).send(errorBody(`Cannot ${request.method} ${request.url.split('?')[0] ?? ''}`)));

    app.get('/v1/fields', async () => ({
      items: [
        { name: 'email', title: 'Email', type: 'email' },
        { name: 'firstName', title: 'First name', type: 'text' },
        { name: 'lastName', title: 'Last name', type: 'text' },
        ...fieldNames().map((name) => ({ name, title: name, type: 'text' })),
      ],
    }));

    app.post('/v1/people', async (request, reply) => {
      const body = readJson(request.body);
      // The spec says an array; widespread code posts one object, so both are taken.
      const items = Array.isArray(body.value) ? body.value : isRecord(body.value) ? [body.value] : undefined;
      if (!body.ok || !items || items.length === 0) return reply.code(400).send(errorBody('Expected a person object or an array of people.'));
      const bad = items.findIndex((item) => !isRecord(item) || !refOk(refOf(item)));
      if (bad >= 0) {
        const item = items[bad];
        const who = isRecord(item) ? nameOf(refOf(item)) : '';
        for (const other of items) if (isRecord(other)) record('upsertPerson', nameOf(refOf(other)), false, { reason: `person ${bad} refused` });
        return reply.code(400).send(errorBody(`Person ${bad}${who ? ` (${who})` : ''} needs a valid email, userId or id.`));
      }
      const users = (items as Array<Record<string, unknown>>).map((item) => {
        const p = upsert(item);
        record('upsertPerson', nameOf(refOf(item)), true);
        return view(p);
      });
      return { users };
    });

    app.get('/v1/people', async (request) => {
      const users = peopleInQuery(queryOf(request)).flatMap((ref) => {
        const p = find(ref);
        return p ? [view(p)] : [];
      });
      return { users };
    });

    app.delete('/v1/people', async (request, reply) => {
      const query = queryOf(request);
      const refs = peopleInQuery(query);
      if (!refs.length) return reply.code(400).send(errorBody('Name people as people[0][email], people[0][userId] or people[0][id].'));
      const force = query.force === 'true';
      for (const ref of refs) {
        const p = find(ref);
        if (p && force) people.delete(p.id);
        else if (p) p.archived = true;
        record('erasePerson', nameOf(ref), true);
      }
      return reply.code(204).send();
    });

    app.post('/v1/people/unsubscribe', async (request, reply) => {
      const q = queryOf(request);
      const ref = refOf({ id: q.id, userId: q.userId, email: q.email });
      if (!refOk(ref)) return reply.code(400).send(errorBody('Name the person with email, userId or id.'));
      const p = personFor(ref, reply);
      if (!isPerson(p)) {
        record('suppress', nameOf(ref), false, { reason: 'person not found' });
        return p;
      }
      unsubscribe(p);
      record('suppress', nameOf(ref), true);
      return reply.code(204).send();
    });

    const tagRoute = (add: boolean) => async (request: FastifyRequest, reply: FastifyReply) => {
      const body = readJson(request.body).value;
      const tags = isRecord(body) && typeof body.tag === 'string' ? splitTags(body.tag) : [];
      const ref = isRecord(body) ? refOf(body) : {};
      const kind = add ? 'addToList' : 'removeFromList';
      if (!tags.length || !refOk(ref)) {
        record(kind, nameOf(ref), false, { reason: 'tag and person required' });
        return reply.code(400).send(errorBody('Send {"tag": "tag1,tag2"} with the person\'s email, userId or id.'));
      }
      const p = personFor(ref, reply);
      if (!isPerson(p)) {
        for (const t of tags) record(kind, nameOf(ref), false, { target: t, reason: 'person not found' });
        return p;
      }
      if (add) addTags(p, tags);
      else {
        for (const t of tags) {
          if (!p.tags.delete(t)) continue;
          touch(p);
          void emit(`removed-tag-${t}`, p, { tag: t });
        }
      }
      for (const t of tags) record(kind, nameOf(ref), true, { target: t });
      return reply.code(add ? 201 : 204).send();
    };
    app.post('/v1/tags', tagRoute(true));
    app.delete('/v1/tags', tagRoute(false));

    app.post('/v1/event-subscriptions', async (request, reply) => {
      const body = readJson(request.body).value;
      if (!isRecord(body) || typeof body.eventType !== 'string' || !body.eventType || typeof body.url !== 'string' || !/^https?:\/\//.test(body.url)) {
        return reply.code(400).send(errorBody('eventType and url are required.'));
      }
      const s = { id: nextSubscription++, eventType: body.eventType, url: body.url };
      subscriptions.push(s);
      return reply.code(201).send({ subscription: { id: s.id } });
    });

    app.delete<{ Params: { id: string } }>('/v1/event-subscriptions/:id', async (request, reply) => {
      const i = subscriptions.findIndex((s) => String(s.id) === request.params.id);
      if (i < 0) return reply.code(404).send(errorBody('Subscription not found.'));
      subscriptions.splice(i, 1);
      return reply.code(204).send();
    });

    const ingest = async (request: FastifyRequest, reply: FastifyReply) => {
      const body = readJson(request.body);
      const v = body.value;
      const name = isRecord(v) && typeof v.name === 'string' ? v.name.trim() : '';
      const user = isRecord(v) && isRecord(v.user) ? v.user : undefined;
      const who = user ? nameOf(refOf(user)) : '';
      if (!body.ok || !name || !user || !refOk({ ...refOf(user), id: undefined })) {
        record('trackEvent', who, false, { reason: 'name and user (email or userId) required' });
        return reply.code(400).send(errorBody('An event needs a name and a user with email or userId.'));
      }
      upsert(user);
      // `identify` only creates or updates the person.
      if (name !== 'identify') {
        events.push({ name, person: who, user, properties: isRecord(v) && isRecord(v.properties) ? v.properties : {}, at: Date.now() });
        record('trackEvent', who, true, { target: name });
      } else record('upsertPerson', who, true);
      return reply.code(200).send({});
    };
    app.post('/ingest/v1', ingest);
    app.post('/ingest/v1/', ingest);
  };

  const fieldNames = (): string[] => [...new Set([...people.values()].flatMap((p) => Object.keys(p.fields)))].sort();

  const known = (email: string): SimPerson => find({ email }) ?? create({ email });

  const sim: EnchargeSimulator = {
    plugin,
    fieldsOf: (key) => {
      for (const p of people.values()) if (!p.archived && (p.email?.toLowerCase() === key || p.userId === key)) return p.fields;
      return undefined;
    },
    requests: harness.requests,
    items: harness.items,
    faults: harness.faults,
    people,
    person: (key) => (key.includes('@') ? find({ email: key }) : find({ userId: key })),
    events,
    subscriptions,
    webhookDeliveries,
    credentials,
    unknownPeople: 'create',
    settingsFor: (baseUrl) => ({ apiKey: credentials.apiKey, writeKey: credentials.writeKey, baseUrl: `${baseUrl}/v1`, ingestUrl: `${baseUrl}/ingest/v1` }),
    demoConfig: () => ({
      // The issue's example: a stage's own event, tags per stage for segments, and intent signals.
      events: { 'lead.stage_changed': 'deal_moved_to_{{stage.key}}', 'lead.won': 'deal_won', 'lead.lost': 'deal_lost' },
      lists: { Qualified: 'qualified', 'Demo scheduled': 'demo-scheduled', 'Proposal sent': 'proposal-sent', Negotiation: 'negotiation' },
      signals: { tags: ['clicked-pricing', 'visited-pricing'], emails: ['proposal', 'pricing'] },
    }),
    tagPerson: (email, tag) => {
      const p = known(email);
      const before = webhookDeliveries.length;
      addTags(p, [tag]);
      return sim.flushWebhooks().then(() => webhookDeliveries.slice(before).map((d) => d.status));
    },
    unsubscribePerson: (email) => {
      const p = known(email);
      const before = webhookDeliveries.length;
      unsubscribe(p);
      return sim.flushWebhooks().then(() => webhookDeliveries.slice(before).map((d) => d.status));
    },
    sendSubscriptionEvent: (url, eventType, email, eventPayload = {}) => {
      const p = find({ email }) ?? transient(email);
      return postJson(withEvent(url, eventType), JSON.stringify({ endUserData: [view(p)], eventPayload }), 5000);
    },
    sendActivity: (url, e) => {
      const p = find({ email: e.email }) ?? transient(e.email);
      return postJson(url, JSON.stringify(activity(e, p.id)), ACTIVITY_TIMEOUT_MS);
    },
    flushWebhooks: async () => {
      while (inFlight.size) await Promise.all([...inFlight]);
    },
    sendEngagement: async (url, kind, email, extra = {}) => {
      if (kind === 'unsubscribed') {
        const p = find({ email });
        if (p) p.unsubscribed = true;
        return sim.sendSubscriptionEvent(url, 'unsubscribedUser', email);
      }
      const name = extra.subject ?? 'Proposal';
      const properties: Record<string, unknown> = {
        emailId: 51,
        flowId: 7,
        emailName: name,
        subject: extra.subject ?? 'Your proposal from Acme',
        ...(kind === 'clicked' ? { url: extra.link ?? 'https://acme.example/pricing' } : {}),
        ...(kind === 'bounced' ? { reason: '550 5.1.1 The email account that you tried to reach does not exist.' } : {}),
      };
      return sim.sendActivity(url, {
        name: `email-${kind}`, type: 'email', email, properties,
        ...(extra.timestamp !== undefined ? { timestamp: extra.timestamp } : {}),
        ...(extra.eventId !== undefined ? { eventId: extra.eventId } : {}),
      });
    },
    reset: () => {
      people.clear();
      events.length = 0;
      subscriptions.length = 0;
      webhookDeliveries.length = 0;
      sim.unknownPeople = 'create';
      harness.reset();
    },
  };
  /** Someone the simulator never stored (engagement sent for an arbitrary address). */
  const transient = (email: string): SimPerson => {
    const now = new Date().toISOString();
    return { id: `enc-x${randomBytes(4).toString('hex')}`, email: email.trim().toLowerCase(), fields: {}, tags: new Set(), unsubscribed: false, archived: false, createdAt: now, updatedAt: now };
  };
  return sim;
}) satisfies DestinationSimulatorFactory;

/** The Activity Stream add-on wants a 2xx within 2 seconds. */
const ACTIVITY_TIMEOUT_MS = 2000;

/**
 * An Activity Stream event: name, type, the person's id and email, a millisecond timestamp and
 * `properties` (for email events `emailId` and the flow id). The exact email-event names are
 * UNCONFIRMED; we use Encharge's `<object>-<verb>` style (`page-visited`, `sms-sent`).
 */
function activity(e: ActivityEvent, personId: string): Record<string, unknown> {
  return {
    name: e.name,
    ...(e.type ? { type: e.type } : {}),
    timestamp: e.timestamp ?? Date.now(),
    endUserId: personId,
    email: e.email,
    properties: e.properties ?? {},
    ...(e.eventId ? { eventId: e.eventId } : {}),
  };
}

/** The URL a subscription for `eventType` posts to, as `doctor --fix` subscribes it. */
function withEvent(url: string, eventType: string): string {
  const u = new URL(url);
  u.searchParams.set('event', eventType);
  return u.toString();
}

async function postJson(url: string, body: string, timeoutMs: number): Promise<number> {
  try {
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(timeoutMs) });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0; // no answer in time (or at all): Encharge counts that as a failed delivery
  }
}

function errorBody(message: string): { error: { message: string; markdown: string; traceId: string } } {
  return { error: { message, markdown: `<p>${message}</p>`, traceId: randomUUID() } };
}

function refOf(obj: Record<string, unknown>): { id?: string; userId?: string; email?: string } {
  const s = (v: unknown) => (typeof v === 'string' && v.trim() ? v.trim() : typeof v === 'number' ? String(v) : undefined);
  const id = s(obj.id);
  const userId = s(obj.userId);
  const email = s(obj.email);
  return { ...(id ? { id } : {}), ...(userId ? { userId } : {}), ...(email ? { email } : {}) };
}

function refOk(ref: { id?: string | undefined; userId?: string; email?: string }): boolean {
  if (ref.email !== undefined && !/^[^@\s]+@[^@\s]+$/.test(ref.email)) return false;
  return Boolean(ref.id || ref.userId || ref.email);
}

/** `people[0][email]=a&people[1][userId]=b` -> [{email:a}, {userId:b}]. */
function peopleInQuery(query: Record<string, string>): Array<{ id?: string; userId?: string; email?: string }> {
  const byIndex = new Map<number, Record<string, unknown>>();
  for (const [key, value] of Object.entries(query)) {
    const m = /^people\[(\d+)\]\[(id|userId|email)\]$/.exec(key);
    if (!m) continue;
    const i = Number(m[1]);
    byIndex.set(i, { ...byIndex.get(i), [m[2]!]: value });
  }
  return [...byIndex.entries()].sort(([a], [b]) => a - b).map(([, v]) => refOf(v)).filter(refOk);
}

function isPerson(v: SimPerson | FastifyReply): v is SimPerson {
  return 'tags' in v && v.tags instanceof Set;
}

function splitTags(tag: string): string[] {
  return tag.split(',').map((t) => t.trim()).filter(Boolean);
}

function queryOf(request: FastifyRequest): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of new URL(request.url, 'http://sim').searchParams) out[k] = v;
  return out;
}
