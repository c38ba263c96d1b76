/**
 * A fake Segment HTTP Tracking API, and RudderStack's Segment-compatible HTTP API, faithful to
 * shared/vendor-apis/segment.md. Self-contained on purpose: it shares no code with the connector, so
 * a bug on one side cannot hide the same bug on the other.
 *
 * Segment (a workspace in one region): both regional hosts (`/v1/...` is api.segment.io,
 * `/eu1/v1/...` is events.eu1.segmentapis.com); the write key from Basic auth (`writeKey:`), or from
 * the body (also with a Bearer token); 200 `{"success":true}` for everything except oversized
 * requests and bad JSON (400): an unknown write key, the other region's host, a message without
 * userId/anonymousId, a track without `event` are all answered 200 and dropped. Dedup by messageId
 * over 24 h.
 * RudderStack (one data plane): Basic auth only, 401 texts for a missing or unknown key, 404 for a
 * disabled source, 413 over 4 MB, 400 for bad JSON or a message without ids, 200 `OK` as text; no
 * messageId dedup unless the gateway option is on.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { SimulatorHarness, rawOf } from '../simulator-kit.js';
import type { DestinationSimulator, SyncOpKind } from '../types.js';
import { isRecord } from '../../model/json.js';

// KB read as 1000 bytes, strictly: a client that passes here passes there.
const SEGMENT_MAX_REQUEST = 32_000;
const SEGMENT_MAX_BATCH = 500_000;
const SEGMENT_MAX_EVENT = 32_000;
const SEGMENT_MAX_EVENTS = 2500;
const RUDDER_MAX_REQUEST = 4_000_000;
const MAX_MESSAGE_ID_CHARS = 99;
const DEDUP_WINDOW_MS = 24 * 3_600_000;
const CALLS = ['identify', 'track', 'page', 'screen', 'group', 'alias'] as const;
type Call = (typeof CALLS)[number];
const ITEM_KIND: Partial<Record<Call, SyncOpKind>> = { identify: 'upsertPerson', track: 'trackEvent', group: 'groupAccount' };
const ALPHANUMERIC = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

type Region = 'us' | 'eu';
type Host = Region | 'dataplane';

/** A message the simulator applied (not dropped, not a duplicate). */
export interface SimMessage {
  type: Call;
  userId?: string;
  anonymousId?: string;
  event?: string;
  groupId?: string;
  traits: Record<string, unknown>;
  properties: Record<string, unknown>;
  timestamp?: string;
  messageId: string;
  context?: unknown;
  host: Host;
  receivedAt: number;
}

interface TrackingSimulatorBase extends DestinationSimulator {
  readonly writeKey: string;
  /** Applied messages, in order. */
  readonly messages: readonly SimMessage[];
  /** userId (or anonymousId) -> traits merged from identify calls. */
  readonly profiles: ReadonlyMap<string, Readonly<Record<string, unknown>>>;
  /** groupId -> traits merged from group calls, and the people attached. */
  readonly groups: ReadonlyMap<string, { readonly traits: Readonly<Record<string, unknown>>; readonly members: ReadonlySet<string> }>;
  /**
   * While on, requests are applied but their answers are held until it is turned off (or the server
   * closes): the connection is lost after the vendor took the data, as in a crash mid-request.
   */
  holdAnswers(on: boolean): void;
}

export interface SegmentSimulator extends TrackingSimulatorBase {
  /** Where the workspace lives: events sent to the other region's host are answered 200 and dropped. */
  readonly region: Region;
  /** Both regional Tracking API roots (with `/v1`) under the simulator's mount URL. */
  hosts(mountUrl: string): Record<Region, string>;
}

export interface RudderstackSimulator extends TrackingSimulatorBase {
  /** A disabled source answers 404 `Source is disabled`. */
  setSourceEnabled(enabled: boolean): void;
}

interface Options {
  perSecond?: number;
  /** Test clock for the dedup window. */
  now?: () => number;
}

export const segmentSimulator = (opts: Options & { region?: Region } = {}): SegmentSimulator => {
  const region = opts.region ?? 'us';
  const sim = createTrackingSimulator('segment', opts, region);
  const hosts = (mountUrl: string): Record<Region, string> => ({ us: `${trim(mountUrl)}/v1`, eu: `${trim(mountUrl)}/eu1/v1` });
  return {
    ...sim.api,
    region,
    hosts,
    settingsFor: (mountUrl) => ({ writeKey: sim.api.writeKey, region, baseUrl: hosts(mountUrl)[region] }),
  };
};

export const rudderstackSimulator = (opts: Options & { dedup?: boolean } = {}): RudderstackSimulator => {
  const sim = createTrackingSimulator('rudderstack', opts, 'us');
  return {
    ...sim.api,
    setSourceEnabled: (enabled) => {
      sim.state.sourceEnabled = enabled;
    },
    settingsFor: (mountUrl) => ({ writeKey: sim.api.writeKey, dataPlaneUrl: trim(mountUrl) }),
  };
};

type Flavor = 'segment' | 'rudderstack';

/** A reply the route sends: status and body (JSON for Segment, text for RudderStack). */
interface Answer {
  status: number;
  body: unknown;
}

function createTrackingSimulator(flavor: Flavor, opts: Options & { dedup?: boolean }, region: Region) {
  const now = opts.now ?? Date.now;
  // Fresh random keys per instance, shaped like the vendor's (Segment 32, RudderStack 27 characters).
  const writeKey = randomKey(flavor === 'segment' ? 32 : 27);
  const dedup = flavor === 'segment' || opts.dedup === true;
  const state = { sourceEnabled: true, holding: false };
  const messages: SimMessage[] = [];
  const profiles = new Map<string, Record<string, unknown>>();
  const groups = new Map<string, { traits: Record<string, unknown>; members: Set<string> }>();
  const seen = new Map<string, number>();
  let held: Array<() => void> = [];
  const release = () => {
    const h = held;
    held = [];
    for (const r of h) r();
  };

  const errorBody = (status: number): unknown => {
    if (flavor === 'segment') return { success: false, message: status === 429 ? 'Too Many Requests' : `simulated HTTP ${status}` };
    if (status === 429) return 'Max Requests Limit reached';
    return `simulated HTTP ${status}`;
  };
  const harness = new SimulatorHarness({
    errorBody,
    ...(opts.perSecond !== undefined ? { perSecond: opts.perSecond } : {}),
    // Segment's 429 carries Retry-After and X-RateLimit-Reset; RudderStack's neither (as far as known).
    rateLimited: (reply) =>
      flavor === 'segment'
        ? reply.code(429).header('retry-after', '1').header('x-ratelimit-reset', '1').send(errorBody(429))
        : reply.code(429).type('text/plain').send(errorBody(429)),
  });

  const drop = (kind: SyncOpKind | undefined, person: string, reason: string, target?: string) => {
    if (kind) harness.item({ kind, person, ok: false, reason, ...(target ? { target } : {}) });
  };

  /** One message as the vendor's pipeline treats it after the request was accepted. */
  const ingest = (call: Call, raw: Record<string, unknown>, host: Host, refusal: string | undefined): void => {
    const kind = ITEM_KIND[call];
    const userId = str(raw.userId);
    const anonymousId = str(raw.anonymousId);
    const person = personKey(userId ?? anonymousId ?? '');
    const target = call === 'track' ? str(raw.event) : call === 'group' ? str(raw.groupId) : undefined;
    if (refusal) return drop(kind, person, refusal, target);
    if (!userId && !anonymousId) return drop(kind, person, 'no_user_anon_id: the userId or anonymousId was not provided', target);
    if (call === 'track' && !target?.trim()) return drop(kind, person, 'event_not_defined: track event did not have an event name');
    if (call === 'group' && !target) return drop(kind, person, 'group call without groupId');
    const given = raw.messageId;
    if (given !== undefined && (typeof given !== 'string' || given.length > MAX_MESSAGE_ID_CHARS)) {
      return drop(kind, person, 'messageId must be a string under 100 characters', target);
    }
    const messageId = typeof given === 'string' && given ? given : `sim-${randomUUID()}`;
    const at = now();
    if (dedup) {
      const first = seen.get(messageId);
      if (first !== undefined && at - first < DEDUP_WINDOW_MS) {
        if (kind) harness.item({ kind, person, ok: true, duplicate: true, ...(target ? { target } : {}) });
        return;
      }
      seen.set(messageId, at);
    }
    const traits = record(raw.traits);
    const m: SimMessage = {
      type: call,
      ...(userId ? { userId } : {}),
      ...(anonymousId ? { anonymousId } : {}),
      ...(str(raw.event) ? { event: str(raw.event)! } : {}),
      ...(str(raw.groupId) ? { groupId: str(raw.groupId)! } : {}),
      traits,
      properties: record(raw.properties),
      ...(str(raw.timestamp) ? { timestamp: str(raw.timestamp)! } : {}),
      messageId,
      ...(raw.context !== undefined ? { context: raw.context } : {}),
      host,
      receivedAt: at,
    };
    messages.push(m);
    const key = userId ?? anonymousId!;
    if (call === 'identify') profiles.set(key, { ...profiles.get(key), ...traits });
    if (call === 'group') {
      const g = groups.get(m.groupId!) ?? { traits: {}, members: new Set<string>() };
      g.traits = { ...g.traits, ...traits };
      g.members.add(key);
      groups.set(m.groupId!, g);
    }
    if (kind) harness.item({ kind, person, ok: true, ...(target ? { target } : {}) });
  };

  /** Segment: what a request to `call` (or `batch`) on `host` gets. */
  const segmentRequest = (call: Call | 'batch', host: Region, request: FastifyRequest): Answer => {
    const raw = rawOf(request.body);
    const limit = call === 'batch' ? SEGMENT_MAX_BATCH : SEGMENT_MAX_REQUEST;
    if (raw.length > limit) return { status: 400, body: { success: false, message: `request is ${raw.length} bytes; the limit is ${limit / 1000} KB` } };
    // Our choice: the docs require JSON but do not say how another content type is answered.
    if (!isJson(request.headers['content-type'])) return { status: 400, body: { success: false, message: 'Content-Type must be application/json' } };
    const body = parseJson(raw);
    if (!body.ok || !isRecord(body.value)) return { status: 400, body: { success: false, message: 'Invalid JSON' } };
    const items = call === 'batch' ? batchItems(body.value) : [{ ...body.value, type: call }];
    if (call === 'batch') {
      const big = items.findIndex((item) => Buffer.byteLength(JSON.stringify(item)) > SEGMENT_MAX_EVENT);
      if (big >= 0) return { status: 400, body: { success: false, message: `batch[${big}] is over 32 KB` } };
    }
    const key = basicUser(request.headers.authorization) ?? str(body.value.writeKey);
    // Answered 200 in every case below: what is dropped shows only in the workspace's debugger.
    const refusal = key !== writeKey
      ? 'unknown write key: answered 200 and dropped'
      : host !== region
        ? `sent to the ${host} host, but the workspace lives in ${region}: answered 200 and dropped`
        : items.length > SEGMENT_MAX_EVENTS
          ? `batch of ${items.length} events; at most ${SEGMENT_MAX_EVENTS}: answered 200 and rejected`
          : undefined;
    for (const item of items) {
      const type = str(item.type);
      if (type && isCall(type)) ingest(type, item, host, refusal);
    }
    return { status: 200, body: { success: true } };
  };

  /** RudderStack: auth and source state were checked in onRequest. */
  const rudderRequest = (call: Call | 'batch', request: FastifyRequest): Answer => {
    const raw = rawOf(request.body);
    if (raw.length > RUDDER_MAX_REQUEST) return { status: 413, body: 'Request size exceeds max limit' };
    if (raw.length === 0) return { status: 400, body: 'Request body is nil' };
    const body = parseJson(raw);
    if (!body.ok || !isRecord(body.value)) return { status: 400, body: 'Invalid JSON' };
    const items = call === 'batch' ? batchItems(body.value) : [{ ...body.value, type: call }];
    if (items.some((item) => !str(item.userId) && !str(item.anonymousId))) return { status: 400, body: 'Request neither has anonymousId nor userId' };
    for (const item of items) {
      const type = str(item.type);
      if (type && isCall(type)) ingest(type, item, 'dataplane', undefined);
    }
    return { status: 200, body: 'OK' };
  };

  const send = async (reply: FastifyReply, answer: Answer): Promise<FastifyReply> => {
    if (state.holding) await new Promise<void>((resolve) => held.push(resolve));
    if (typeof answer.body === 'string') void reply.type('text/plain; charset=utf-8');
    return reply.code(answer.status).send(answer.body);
  };

  const plugin: FastifyPluginAsync = async (app) => {
    // Raw bytes: size limits apply to what was sent, and bad JSON gets the vendor's answer.
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: 4 * RUDDER_MAX_REQUEST }, (_req, body, done) => done(null, body));
    app.addHook('onSend', harness.beforeAnswer);
    app.addHook('onRequest', async (request, reply) => {
      const faulted = await harness.fault(request, reply);
      if (faulted) return faulted;
      if (flavor === 'rudderstack') {
        const key = basicUser(request.headers.authorization);
        if (key === undefined) return reply.code(401).type('text/plain').send('Failed to read writeKey from header');
        if (key !== writeKey) return reply.code(401).type('text/plain').send('Invalid Write Key');
        if (!state.sourceEnabled) return reply.code(404).type('text/plain').send('Source is disabled');
      }
      return harness.overLimit(reply);
    });
    app.addHook('onClose', async () => release());
    harness.install(app, (request) => parseJson(rawOf(request.body)).value);

    const hosts: Array<[Host, string]> = flavor === 'segment' ? [['us', ''], ['eu', '/eu1']] : [['dataplane', '']];
    for (const [host, prefix] of hosts) {
      for (const call of ['batch', ...CALLS] as const) {
        app.post(`${prefix}/v1/${call}`, async (request, reply) =>
          send(reply, host === 'dataplane' ? rudderRequest(call, request) : segmentRequest(call, host, request)));
      }
    }
  };

  const api = {
    plugin,
    fieldsOf: (key: string) => profiles.get(key),
    requests: harness.requests,
    items: harness.items,
    faults: harness.faults,
    writeKey,
    messages,
    profiles,
    groups,
    holdAnswers: (on: boolean) => {
      state.holding = on;
      if (!on) release();
    },
    reset: () => {
      messages.length = 0;
      profiles.clear();
      groups.clear();
      seen.clear();
      state.sourceEnabled = true;
      state.holding = false;
      release();
      harness.reset();
    },
  };
  return { api, state };
}

/** Batch items with the top-level `context` and `integrations` merged in (the item's own keys win). */
function batchItems(body: Record<string, unknown>): Array<Record<string, unknown>> {
  if (!Array.isArray(body.batch)) return [];
  return body.batch.filter(isRecord).map((item) => ({
    ...item,
    ...(isRecord(body.context) ? { context: { ...body.context, ...record(item.context) } } : {}),
    ...(isRecord(body.integrations) ? { integrations: { ...body.integrations, ...record(item.integrations) } } : {}),
  }));
}

/** The user name of `Authorization: Basic base64(user:password)`; the password is ignored. */
function basicUser(header: string | undefined): string | undefined {
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header ?? '');
  if (!m) return undefined;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon >= 0 ? decoded.slice(0, colon) : decoded;
}

function randomKey(length: number): string {
  return [...randomBytes(length)].map((b) => ALPHANUMERIC[b % ALPHANUMERIC.length]).join('');
}

/** Emails are matched case-insensitively in the neutral view; ids are kept exactly. */
function personKey(id: string): string {
  return id.includes('@') ? id.trim().toLowerCase() : id;
}

function isCall(type: string): type is Call {
  return (CALLS as readonly string[]).includes(type);
}

function isJson(contentType: string | undefined): boolean {
  return /^application\/json\s*(;|$)/i.test(contentType ?? '');
}

function parseJson(raw: Buffer): { ok: boolean; value: unknown } {
  if (raw.length === 0) return { ok: false, value: undefined };
  try {
    return { ok: true, value: JSON.parse(raw.toString('utf8')) as unknown };
  } catch {
    return { ok: false, value: raw.toString('utf8') };
  }
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function record(v: unknown): Record<string, unknown> {
  return isRecord(v) ? v : {};
}

function trim(url: string): string {
  return url.replace(/\/+$/, '');
}
