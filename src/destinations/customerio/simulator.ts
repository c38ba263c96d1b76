/**
 * A fake Customer.io Track API, faithful to shared/vendor-apis/customerio.md: the v1 person
 * endpoints, v2 entity and batch (size limits, 207 partials, 400 for a malformed batch), event dedup
 * by `id`, Basic auth, and signed reporting webhooks sent back to us. Self-contained on purpose: it
 * shares no code with the connector, so a bug on one side cannot hide the same bug on the other.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import type { FastifyPluginAsync } from 'fastify';
import { randomUlid } from '../../model/index.js';
import { SimulatorHarness, rawOf, readJson } from '../simulator-kit.js';
import type { DestinationSimulator, DestinationSimulatorFactory, EngagementExtra, EngagementSample, SyncOpKind } from '../types.js';
import { isRecord } from '../../model/json.js';

// Customer.io's limits, read strictly (KB = 1000 bytes) so a client that passes here passes there.
const MAX_BATCH_BYTES = 500_000;
const MAX_ITEM_BYTES = 32_000;
const MAX_ENTITY_BYTES = 32_000;
const HOSTS = { us: 'https://track.customer.io', eu: 'https://track-eu.customer.io' } as const;
const IDENTIFIER_KEYS = ['id', 'email', 'phone', 'cio_id'] as const;
const PERSON_ACTIONS = new Set([
  'identify', 'event', 'page', 'screen', 'delete', 'suppress', 'unsuppress', 'add_relationships',
  'delete_relationships', 'add_device', 'delete_device', 'merge',
]);
const UNAUTHORIZED = { meta: { error: 'Unauthorized request. Make sure that you provided the right credentials.' } };


export interface SimEvent {
  /** The identifier the event was recorded for (email lower-cased, or id). */
  person: string;
  name: string;
  id?: string;
  type: string;
  timestamp?: number;
  data: Record<string, unknown>;
  api: 'v1' | 'v2';
}

export interface CustomerioSimulator extends DestinationSimulator {
  /** identifier (email lower-cased, or id) -> attributes. */
  readonly people: ReadonlyMap<string, Readonly<Record<string, unknown>>>;
  readonly events: readonly SimEvent[];
  /** Suppressed identifiers: identify calls for them are dropped. */
  readonly suppressed: ReadonlySet<string>;
  readonly credentials: { readonly siteId: string; readonly apiKey: string; readonly webhookSigningKey: string };
  sendEngagement(url: string, kind: EngagementSample, email: string, extra?: EngagementExtra): Promise<number>;
}

interface ItemError {
  reason: string;
  field: string;
  message: string;
}

export const customerioSimulator = ((opts: { perSecond?: number; region?: 'us' | 'eu' } = {}): CustomerioSimulator => {
  const region = opts.region ?? 'us';
  // Fresh random credentials per instance: a leak test can then search logs for exact values.
  const credentials = {
    siteId: `sim-site-${randomBytes(6).toString('hex')}`,
    apiKey: `sim-track-key-${randomBytes(12).toString('hex')}`,
    webhookSigningKey: `sim-signing-key-${randomBytes(16).toString('hex')}`,
  };
  const expectedAuth = `Basic ${Buffer.from(`${credentials.siteId}:${credentials.apiKey}`).toString('base64')}`;

  const people = new Map<string, Record<string, unknown>>();
  const events: SimEvent[] = [];
  const eventIds = new Set<string>();
  const suppressed = new Set<string>();
  const harness = new SimulatorHarness({
    errorBody: (status) => ({ meta: { error: status === 429 ? 'rate limit exceeded (simulated)' : `simulated HTTP ${status}` } }),
    // Our choice: the Track spec documents no 429 (its limit is 1000 rps, "not strictly enforced").
    ...(opts.perSecond !== undefined ? { perSecond: opts.perSecond } : {}),
  });
  const record = (kind: SyncOpKind, person: string, ok: boolean, extra: { target?: string; reason?: string; duplicate?: boolean } = {}) =>
    harness.item({ kind, person, ok, ...extra });

  const identify = (key: string, attributes: Record<string, unknown>): void => {
    record('upsertPerson', key, true);
    if (suppressed.has(key)) return; // Customer.io silently drops identifies of suppressed people.
    const { _update, _timestamp, ...rest } = attributes;
    const existing = people.get(key);
    if (!existing && _update === true) return; // update-only: unknown people are not created
    people.set(key, { ...existing, ...rest });
  };
  const track = (event: SimEvent): void => {
    if (event.id !== undefined) {
      // A repeated id is ignored (that is what it is for).
      const duplicate = eventIds.has(event.id);
      record('trackEvent', event.person, true, { target: event.name, ...(duplicate ? { duplicate } : {}) });
      if (duplicate) return;
      eventIds.add(event.id);
    } else record('trackEvent', event.person, true, { target: event.name });
    events.push(event);
  };
  const suppress = (key: string): void => {
    record('suppress', key, true);
    people.delete(key);
    suppressed.add(key);
  };
  const erase = (key: string): void => {
    record('erasePerson', key, true);
    people.delete(key);
  };

  /** A v2 operation, applied when valid. */
  const applyV2 = (item: unknown): ItemError | undefined => {
    if (!isRecord(item)) return { reason: 'invalid', field: '', message: 'each operation must be an object' };
    if (item.type === 'object' || item.type === 'delivery') return undefined; // accepted, not modelled
    if (item.type !== 'person') return { reason: 'invalid', field: 'type', message: 'type must be person, object or delivery' };
    const ids = isRecord(item.identifiers) ? IDENTIFIER_KEYS.filter((k) => isIdentifier(item.identifiers, k)) : [];
    const idKey = ids[0];
    if (ids.length !== 1 || !idKey || !isRecord(item.identifiers)) {
      return { reason: 'required', field: 'identifiers', message: 'exactly one of id, email, phone or cio_id is required' };
    }
    const key = keyOf(String(item.identifiers[idKey]));
    const action = item.action;
    if (typeof action !== 'string' || !PERSON_ACTIONS.has(action)) {
      return { reason: 'invalid', field: 'action', message: `unknown action ${JSON.stringify(action)}` };
    }
    const attributes = isRecord(item.attributes) ? item.attributes : {};
    switch (action) {
      case 'identify':
        identify(key, attributes);
        return undefined;
      case 'event':
      case 'page':
      case 'screen': {
        const name = typeof item.name === 'string' ? item.name.trim() : '';
        if (!name) {
          record('trackEvent', key, false, { reason: 'name cannot be blank' });
          return { reason: 'required', field: 'name', message: 'name cannot be blank' };
        }
        track({
          person: key,
          name,
          type: action,
          data: attributes,
          api: 'v2',
          ...(typeof item.id === 'string' ? { id: item.id } : {}),
          ...(typeof item.timestamp === 'number' ? { timestamp: item.timestamp } : {}),
        });
        return undefined;
      }
      case 'delete':
        erase(key);
        return undefined;
      case 'suppress':
        suppress(key);
        return undefined;
      case 'unsuppress':
        suppressed.delete(key);
        return undefined;
      default:
        return undefined; // relationships, devices, merge: accepted, not modelled
    }
  };

  const plugin: FastifyPluginAsync = async (app) => {
    // Raw bytes: the size limits apply to what was sent, and malformed JSON gets Customer.io's answer.
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: 4 * MAX_BATCH_BYTES }, (_req, body, done) => done(null, body));

    app.addHook('onSend', harness.beforeAnswer);
    app.addHook('onRequest', async (request, reply) => {
      const faulted = await harness.fault(request, reply);
      if (faulted) return faulted;
      if (request.headers.authorization !== expectedAuth) return reply.code(401).send(UNAUTHORIZED);
      return harness.overLimit(reply);
    });
    harness.install(app, (request) => readJson(request.body).value);

    app.get('/api/v1/accounts/region', async () => ({ url: HOSTS[region], region, environment_id: 1 }));

    app.put<{ Params: { identifier: string } }>('/api/v1/customers/:identifier', async (request, reply) => {
      const body = readJson(request.body);
      if (!body.ok || (body.value !== undefined && !isRecord(body.value))) {
        return reply.code(400).send({ meta: { error: 'request body must be a JSON object of attributes' } });
      }
      identify(keyOf(request.params.identifier), isRecord(body.value) ? body.value : {});
      return {};
    });

    app.post<{ Params: { identifier: string } }>('/api/v1/customers/:identifier/events', async (request, reply) => {
      const body = readJson(request.body).value;
      const name = isRecord(body) && typeof body.name === 'string' ? body.name.trim() : '';
      if (!isRecord(body) || !name) return reply.code(400).send({ meta: { error: 'name cannot be blank' } });
      track({
        person: keyOf(request.params.identifier),
        name,
        type: typeof body.type === 'string' ? body.type : 'event',
        data: isRecord(body.data) ? body.data : {},
        api: 'v1',
        ...(typeof body.id === 'string' ? { id: body.id } : {}),
        ...(typeof body.timestamp === 'number' ? { timestamp: body.timestamp } : {}),
      });
      return {};
    });

    app.delete<{ Params: { identifier: string } }>('/api/v1/customers/:identifier', async (request) => {
      erase(keyOf(request.params.identifier));
      return {};
    });

    app.post<{ Params: { identifier: string } }>('/api/v1/customers/:identifier/suppress', async (request) => {
      suppress(keyOf(request.params.identifier));
      return {};
    });

    app.post<{ Params: { identifier: string } }>('/api/v1/customers/:identifier/unsuppress', async (request) => {
      suppressed.delete(keyOf(request.params.identifier));
      return {};
    });

    app.post('/api/v2/entity', async (request, reply) => {
      const raw = rawOf(request.body);
      if (raw.length >= MAX_ENTITY_BYTES) {
        return reply.code(400).send({ errors: [{ reason: 'too_large', field: '', message: 'entity requests must be under 32 KB' }] });
      }
      const body = readJson(raw);
      const error = body.ok ? applyV2(body.value) : { reason: 'malformed', field: '', message: 'request body is not JSON' };
      return error ? reply.code(400).send({ errors: [error] }) : {};
    });

    app.post('/api/v2/batch', async (request, reply) => {
      const raw = rawOf(request.body);
      // Not documented how Customer.io answers an oversized batch; 400 is its "malformed batch" answer.
      if (raw.length >= MAX_BATCH_BYTES) {
        return reply.code(400).send({ errors: [{ reason: 'too_large', field: 'batch', message: `request is ${raw.length} bytes; batch requests must be under 500 KB` }] });
      }
      const body = readJson(raw);
      if (!body.ok || !isRecord(body.value) || !Array.isArray(body.value.batch)) {
        return reply.code(400).send({ errors: [{ reason: 'malformed', field: 'batch', message: 'expected {"batch": [operation, ...]}' }] });
      }
      const errors = body.value.batch.flatMap((item: unknown, batchIndex: number) => {
        const bytes = Buffer.byteLength(JSON.stringify(item) ?? '');
        const error = bytes > MAX_ITEM_BYTES
          ? { reason: 'too_large', field: '', message: `operation is ${bytes} bytes; at most 32 KB each` }
          : applyV2(item);
        return error ? [{ batch_index: batchIndex, ...error }] : [];
      });
      return errors.length > 0 ? reply.code(207).send({ errors }) : {};
    });
  };

  /** A reporting webhook in Customer.io's envelope, signed as Customer.io signs it. */
  const sendEngagement = async (url: string, kind: EngagementSample, email: string, extra: EngagementExtra = {}): Promise<number> => {
    const body = JSON.stringify(engagementEnvelope(kind, email, extra, idFor(email, people)));
    const timestamp = String(Math.floor(Date.now() / 1000));
    const signature = createHmac('sha256', credentials.webhookSigningKey).update(`v0:${timestamp}:${body}`).digest('hex');
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-cio-timestamp': timestamp, 'x-cio-signature': signature },
      body,
      // Customer.io gives a receiver 4 seconds; a slower answer counts as a failure there too.
      signal: AbortSignal.timeout(4000),
    });
    await res.arrayBuffer();
    return res.status;
  };

  return {
    plugin,
    fieldsOf: (key) => people.get(key),
    requests: harness.requests,
    items: harness.items,
    faults: harness.faults,
    people,
    events,
    suppressed,
    credentials,
    settingsFor: (baseUrl) => ({ siteId: credentials.siteId, apiKey: credentials.apiKey, baseUrl, webhookSigningKey: credentials.webhookSigningKey }),
    sendEngagement,
    reset: () => {
      people.clear();
      events.length = 0;
      eventIds.clear();
      suppressed.clear();
      harness.reset();
    },
  };
}) satisfies DestinationSimulatorFactory;

function engagementEnvelope(kind: EngagementSample, email: string, extra: EngagementExtra, personId: string | null): Record<string, unknown> {
  const data: Record<string, unknown> = {
    // A campaign (journey) message; broadcasts and newsletters carry broadcast_id / newsletter_id instead.
    campaign_id: 7,
    action_id: 21,
    delivery_id: randomBytes(15).toString('base64url'),
    customer_id: personId ?? '',
    identifiers: { id: personId, email, cio_id: createHash('sha256').update(email).digest('hex').slice(0, 12) },
    recipient: email,
    subject: extra.subject ?? 'Your proposal from Acme',
  };
  // Customer.io flags opens by privacy proxies and prefetchers, and clicks by link scanners.
  const machine = extra.machine ?? false;
  if (kind === 'opened') Object.assign(data, { proxied: machine, prefetched: machine });
  if (kind === 'clicked') Object.assign(data, { href: extra.link ?? 'https://example.com/pricing', link_id: 3, machine });
  if (kind === 'bounced') data.failure_message = '550 5.1.1 The email account that you tried to reach does not exist.';
  return {
    event_id: extra.eventId ?? randomUlid(),
    object_type: 'email',
    metric: kind,
    timestamp: Math.floor((extra.timestamp ?? Date.now()) / 1000),
    data,
  };
}

/** The person's `id` when the simulator knows one for this email (null otherwise, as in email workspaces). */
function idFor(email: string, people: ReadonlyMap<string, Readonly<Record<string, unknown>>>): string | null {
  const byEmail = people.get(email.toLowerCase())?.id;
  if (typeof byEmail === 'string') return byEmail;
  for (const [key, attrs] of people) {
    if (typeof attrs.email === 'string' && attrs.email.toLowerCase() === email.toLowerCase() && !key.includes('@')) return key;
  }
  return null;
}

/** Emails are case-insensitive identifiers in Customer.io; ids are kept exactly. */
function keyOf(identifier: string): string {
  return identifier.includes('@') ? identifier.trim().toLowerCase() : identifier;
}

function isIdentifier(identifiers: unknown, key: (typeof IDENTIFIER_KEYS)[number]): boolean {
  if (!isRecord(identifiers)) return false;
  const v = identifiers[key];
  return (typeof v === 'string' && v.trim() !== '') || (typeof v === 'number' && key === 'id');
}
