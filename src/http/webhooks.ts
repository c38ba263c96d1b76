/**
 * Intake: `POST /webhooks/:account/:source/:secret`. Authenticates the sender, parses the body into
 * normalized events, stores them durably with their dedup keys, and only then answers 200. Nothing
 * slow happens before the answer (Kommo gives a receiver about 2 s).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Destination, InboundParsed } from '../destinations/types.js';
import { InboundRejected } from '../destinations/types.js';
import { FormParseError, parseBracketForm } from '../kommo/form.js';
import { parseKommoWebhook, WebhookBodyError } from '../kommo/webhook.js';
import type { Metrics } from '../observability/metrics.js';
import { StoreUnavailableError } from '../store/errors.js';
import type { NewInboxEvent, Store } from '../store/store.js';
import type { NormalizedInbound } from '../model/index.js';
import { HttpError } from './errors.js';

export interface IntakeSource {
  secret: string;
  /** Absent for `kommo`. */
  destination?: Destination;
  settings?: unknown;
}
export interface IntakeAccount {
  kommoSubdomain: string;
  kommoSecret: string;
  /** Marketing-tool sources by configured destination name. */
  sources: Map<string, IntakeSource>;
}

export interface IntakeOptions {
  store: Store;
  accounts: Map<string, IntakeAccount>;
  metrics?: Metrics;
  /** Called after events were stored (the in-process router starts at once instead of polling). */
  onStored?: () => void;
}

type Params = { account: string; source: string; secret: string };

/** Longest wait for the durable insert before answering 503 (Kommo gives a receiver about 2 s). */
const STORE_TIMEOUT_MS = 1500;
/** How often the deadline looks at waiting inserts: a 503 goes out at most this late. */
const CHECK_EVERY_MS = 50;

export async function intakePlugin(app: FastifyInstance, opts: IntakeOptions): Promise<void> {
  const counters = new IntakeCounters(opts.metrics);
  // Bodies stay raw bytes: signatures are computed over them, and our own bracket parser reads
  // Kommo's forms (the usual form parsers drop or mangle deep, wide payloads).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(['application/json', 'application/x-www-form-urlencoded'], { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  app.addContentTypeParser('*', (req, _payload, done) => {
    done(new HttpError(415, 'unsupported_media_type', `expected application/x-www-form-urlencoded or application/json, got ${req.headers['content-type'] ?? 'no content type'}`), undefined);
  });

  app.post<{ Params: Params }>('/webhooks/:account/:source/:secret', async (req, reply) => {
    const { account: accountName, source, secret } = req.params;
    const account = opts.accounts.get(accountName);
    if (!account) throw new HttpError(404, 'unknown_account', `no account "${accountName}" in the configuration`);
    const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    let events: NormalizedInbound[] | InboundParsed[];
    if (source === 'kommo') {
      checkSecret(secret, account.kommoSecret);
      events = parseKommo(req, raw, account.kommoSubdomain);
    } else {
      const src = account.sources.get(source);
      if (!src?.destination?.inbound) throw new HttpError(404, 'unknown_source', `account "${accountName}" has no webhook source "${source}" (expected kommo${[...account.sources.keys()].map((s) => `, ${s}`).join('')})`);
      checkSecret(secret, src.secret);
      const inboundReq = { rawBody: raw, headers: req.headers, query: req.query as Record<string, string | undefined>, now: Date.now() };
      try {
        src.destination.inbound.verify(inboundReq, src.settings);
        events = src.destination.inbound.parse(inboundReq, source, src.settings);
      } catch (err) {
        if (err instanceof InboundRejected) throw new HttpError(err.status, err.code, err.message);
        throw err;
      }
    }
    return store(reply, opts, counters, accountName, source, events);
  });
}

async function store(reply: FastifyReply, opts: IntakeOptions, counters: IntakeCounters, account: string, source: string, events: Array<NormalizedInbound | InboundParsed>) {
  const now = Date.now();
  const rows: NewInboxEvent[] = events.map((e) => ({ account, source, kind: e.event.kind, dedupKey: e.dedupKey, payload: e.event, receivedAt: now }));
  let result = { inserted: 0, duplicates: 0 };
  if (rows.length) {
    try {
      result = await counters.deadline.within(opts.store.insertInbox(rows));
    } catch (err) {
      if (err instanceof StoreUnavailableError) throw new HttpError(503, 'store_unavailable', 'the event store is unavailable; retry later');
      throw err;
    }
  }
  for (const e of events) counters.received(account, source, e.event.kind);
  if (result.duplicates) opts.metrics?.duplicates.inc({ account, source }, result.duplicates);
  counters.answered(source);
  if (result.inserted) opts.onStored?.();
  return reply.code(200).send({ ok: true, accepted: result.inserted, duplicates: result.duplicates });
}

/**
 * Per-label counter children, looked up once: prom-client hashes the label object on every
 * `inc({...})`, and intake counts every webhook and every event.
 */
class IntakeCounters {
  private readonly children = new Map<string, { inc(): void }>();
  readonly deadline = new Deadline(STORE_TIMEOUT_MS);

  constructor(private readonly metrics: Metrics | undefined) {}

  received(account: string, source: string, kind: string): void {
    this.child(`r\u0000${account}\u0000${source}\u0000${kind}`, (m) => m.eventsReceived.labels({ account, source, kind }))?.inc();
  }

  answered(source: string): void {
    this.child(`a\u0000${source}`, (m) => m.webhookRequests.labels({ source, status: '200' }))?.inc();
  }

  private child(key: string, make: (metrics: Metrics) => { inc(): void }): { inc(): void } | undefined {
    if (!this.metrics) return undefined;
    let child = this.children.get(key);
    if (!child) {
      child = make(this.metrics);
      this.children.set(key, child);
    }
    return child;
  }
}

/**
 * Rejects a store call that has not settled within `ms` with StoreUnavailableError. One shared
 * timer checks every waiting call, instead of a timer per webhook. The call itself may still land;
 * the sender's retry is then absorbed by its dedup key.
 */
class Deadline {
  private readonly waiting = new Set<{ since: number; reject: (err: Error) => void }>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly ms: number) {}

  within<T>(work: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const entry = { since: Date.now(), reject };
      this.waiting.add(entry);
      // Not unref'd: a webhook waiting for its answer is work in progress; the timer stops when none waits.
      this.timer ??= setInterval(() => this.expire(), CHECK_EVERY_MS);
      work.then(
        (value) => {
          this.waiting.delete(entry);
          resolve(value);
        },
        (err: unknown) => {
          this.waiting.delete(entry);
          reject(err);
        },
      );
    });
  }

  private expire(): void {
    const cutoff = Date.now() - this.ms;
    for (const entry of this.waiting) {
      if (entry.since > cutoff) continue;
      this.waiting.delete(entry);
      entry.reject(new StoreUnavailableError(`the event store did not answer within ${this.ms} ms`));
    }
    if (this.waiting.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }
}

function parseKommo(req: FastifyRequest, raw: Buffer, subdomain: string): NormalizedInbound[] {
  const type = String(req.headers['content-type'] ?? '');
  let body: Record<string, unknown>;
  try {
    if (type.startsWith('application/json')) {
      const parsed: unknown = JSON.parse(raw.toString('utf8'));
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new HttpError(400, 'invalid_body', 'expected a JSON object');
      body = parsed as Record<string, unknown>;
    } else {
      body = parseBracketForm(raw.toString('utf8'));
    }
  } catch (err) {
    if (err instanceof HttpError) throw err;
    if (err instanceof SyntaxError) throw new HttpError(400, 'invalid_json', `body is not valid JSON: ${err.message}`);
    if (err instanceof FormParseError) throw new HttpError(400, 'invalid_form', err.message);
    throw err;
  }
  let parsed;
  try {
    parsed = parseKommoWebhook(body);
  } catch (err) {
    if (err instanceof WebhookBodyError) throw new HttpError(400, 'invalid_webhook', err.message);
    throw err;
  }
  // Kommo sends `account[subdomain]` with every webhook: a body without it (or with it as a list,
  // or empty) did not come from Kommo, and one from another account is not for this URL.
  const got = parsed.account.subdomain;
  if (got === undefined) {
    throw new HttpError(400, 'missing_account', `account[subdomain] is missing (or not a single value); Kommo sends it with every webhook: expected "${subdomain}"`);
  }
  if (got.toLowerCase() !== subdomain.toLowerCase()) {
    throw new HttpError(401, 'account_mismatch', `webhook is from Kommo account "${got}", but this URL belongs to "${subdomain}"`);
  }
  return parsed.events;
}

/** Digests of the configured secrets, computed once (they are on every webhook's path). */
const expectedDigests = new Map<string, Buffer>();

/** Constant-time: compares fixed-length digests, so neither content nor length leaks through timing. */
function checkSecret(given: string, expected: string): void {
  const a = createHash('sha256').update(given).digest();
  let b = expectedDigests.get(expected);
  if (!b) {
    b = createHash('sha256').update(expected).digest();
    expectedDigests.set(expected, b);
  }
  if (!timingSafeEqual(a, b)) throw new HttpError(401, 'bad_secret', 'the secret in the webhook URL is wrong');
}
