import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import { secretRegistry } from '../../config/schema.js';
import { classifyHttp, joinUrl, parseRetryAfter, redactHeaders, redactUrl, vendorRequest } from '../http.js';
import { InboundRejected, type DestinationContext, type InboundRequest, type ItemResult, type SyncOp } from '../types.js';
import { authorization, trackUrl } from './client.js';
import { customerio } from './index.js';
import { parseCio, verifyCio } from './inbound.js';
import { batchResults, MAX_ITEM_BYTES, MAX_REQUEST_BYTES, planBatches, toEventId, type BatchRequest } from './ops.js';
import { customerioSecrets, customerioSettings, type CustomerioSettings } from './settings.js';
import { customerioSimulator } from './simulator.js';

const T = 1_700_000_000_123; // unix ms
const jane = { email: 'jane@example.com', id: 'kommo-contact-7' };

function memoryLogger(): { log: Logger; text: () => string } {
  const lines: string[] = [];
  return { log: pino({ level: 'trace' }, { write: (s: string) => void lines.push(s) }), text: () => lines.join('') };
}

function batchOf(n: number): BatchRequest {
  return { method: 'POST', path: '/api/v2/batch', body: { batch: [] }, opIndexes: Array.from({ length: n }, (_, i) => i) };
}

describe('customerio settings', () => {
  it('defaults to the US region and refuses keys it does not know', () => {
    const s = customerioSettings.parse({ siteId: 's', apiKey: 'k' });
    assert.equal(s.region, 'us');
    assert.equal(customerioSettings.safeParse({ siteId: 's', apiKey: 'k', apikey: 'typo' }).success, false);
    assert.equal(customerioSettings.safeParse({ siteId: 's', apiKey: 'k', baseUrl: 'ftp://x' }).success, false);
    assert.equal(customerioSettings.parse({ siteId: 's', apiKey: 'k', timeout: '2s' }).timeout, 2000);
  });

  it('marks every listed secret as a secret in the schema', () => {
    for (const key of customerioSecrets) {
      const field = customerioSettings.shape[key];
      const inner = 'unwrap' in field ? field.unwrap() : field;
      assert.ok(secretRegistry.has(inner), `${key} is registered as a secret`);
    }
  });

  it('resolves the Track root from region or baseUrl (which may carry a path prefix)', () => {
    assert.equal(trackUrl({ region: 'us' }), 'https://track.customer.io');
    assert.equal(trackUrl({ region: 'eu' }), 'https://track-eu.customer.io');
    assert.equal(trackUrl({ region: 'eu', baseUrl: 'http://127.0.0.1:4010/cio/' }), 'http://127.0.0.1:4010/cio/');
    assert.equal(joinUrl('http://127.0.0.1:4010/cio/', '/api/v2/batch'), 'http://127.0.0.1:4010/cio/api/v2/batch');
    assert.equal(joinUrl('https://track-eu.customer.io', 'api/v1/accounts/region'), 'https://track-eu.customer.io/api/v1/accounts/region');
    assert.equal(authorization({ siteId: 'site', apiKey: 'key' }), `Basic ${Buffer.from('site:key').toString('base64')}`);
  });
});

describe('customerio ops (SyncOp -> v2 batch items)', () => {
  const table: Array<{ name: string; op: SyncOp; by: 'email' | 'id'; item: unknown }> = [
    {
      name: 'upsertPerson by email',
      op: { kind: 'upsertPerson', person: jane, attributes: { kommo_stage: 'proposal_sent', deal_value: 1200 }, timestamp: T },
      by: 'email',
      item: { type: 'person', identifiers: { email: 'jane@example.com' }, action: 'identify', attributes: { kommo_stage: 'proposal_sent', deal_value: 1200 }, timestamp: 1_700_000_000 },
    },
    {
      name: 'upsertPerson by id keeps the email as an attribute',
      op: { kind: 'upsertPerson', person: jane, attributes: { kommo_stage: 'won' }, timestamp: T },
      by: 'id',
      item: { type: 'person', identifiers: { id: 'kommo-contact-7' }, action: 'identify', attributes: { kommo_stage: 'won', email: 'jane@example.com' }, timestamp: 1_700_000_000 },
    },
    {
      name: 'trackEvent with a ULID messageId',
      op: { kind: 'trackEvent', person: jane, name: 'kommo_lead_won', properties: { price: 5 }, timestamp: T, messageId: '01hgw2pz0ejm4x5y8b3c9d7f6k' },
      by: 'email',
      item: { type: 'person', identifiers: { email: 'jane@example.com' }, action: 'event', name: 'kommo_lead_won', id: '01HGW2PZ0EJM4X5Y8B3C9D7F6K', timestamp: 1_700_000_000, attributes: { price: 5 } },
    },
    {
      name: 'suppress',
      op: { kind: 'suppress', person: jane },
      by: 'email',
      item: { type: 'person', identifiers: { email: 'jane@example.com' }, action: 'suppress' },
    },
    {
      name: 'erasePerson by id',
      op: { kind: 'erasePerson', person: jane },
      by: 'id',
      item: { type: 'person', identifiers: { id: 'kommo-contact-7' }, action: 'delete' },
    },
  ];
  for (const row of table) {
    it(row.name, () => {
      const plan = planBatches([row.op], row.by);
      assert.equal(plan.decided.size, 0);
      assert.deepEqual(plan.requests, [{ method: 'POST', path: '/api/v2/batch', body: { batch: [row.item] }, opIndexes: [0] }]);
    });
  }

  it('fails locally what Customer.io cannot take, and sends the rest', () => {
    const ops: SyncOp[] = [
      { kind: 'addToList', person: jane, listId: '3', attributes: {} },
      { kind: 'suppress', person: { email: 'noid@example.com' } },
      { kind: 'erasePerson', person: jane },
    ];
    const plan = planBatches(ops, 'id');
    assert.match(fail(plan.decided.get(0)), /does not support addToList/);
    assert.match(fail(plan.decided.get(1)), /has no id/);
    assert.deepEqual(plan.requests.map((r) => r.opIndexes), [[2]]);
  });

  it('derives a stable ULID event id from a non-ULID messageId (retries dedup)', () => {
    const a = toEventId('job-42:lead.won', T);
    assert.match(a, /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/);
    assert.equal(toEventId('job-42:lead.won', T), a);
    assert.notEqual(toEventId('job-43:lead.won', T), a);
    assert.equal(toEventId('job-42:lead.won', T).slice(0, 10), toEventId('other', T).slice(0, 10), 'time part is the op time');
  });

  it('splits into requests under 500 KB and fails an item over 32 KB alone', () => {
    const big = 'x'.repeat(20_000);
    const ops: SyncOp[] = Array.from({ length: 60 }, (_, i) => ({
      kind: 'upsertPerson', person: { email: `p${i}@example.com` }, attributes: { notes: big }, timestamp: T,
    }));
    ops[5] = { kind: 'upsertPerson', person: jane, attributes: { notes: 'y'.repeat(MAX_ITEM_BYTES) }, timestamp: T };
    const plan = planBatches(ops, 'email');
    assert.match(fail(plan.decided.get(5)), /at most 32000/);
    assert.ok(plan.requests.length >= 3);
    for (const r of plan.requests) assert.ok(Buffer.byteLength(JSON.stringify(r.body)) < MAX_REQUEST_BYTES);
    assert.deepEqual(plan.requests.flatMap((r) => r.opIndexes), ops.map((_, i) => i).filter((i) => i !== 5));
  });
});

describe('customerio answers -> per-op results', () => {
  const req = batchOf(3);
  const table: Array<{ name: string; status: number; headers?: Record<string, string>; body: unknown; error?: string; want: ItemResult[] }> = [
    { name: '200 {} accepts all', status: 200, body: {}, want: Array(3).fill({ ok: true, httpStatus: 200 }) },
    {
      name: '207 fails only the listed items',
      status: 207,
      body: { errors: [{ batch_index: 1, reason: 'required', field: 'name', message: 'name cannot be blank' }] },
      want: [
        { ok: true, httpStatus: 207 },
        { fail: { reason: 'Customer.io rejected the item: required: name: name cannot be blank', code: 'invalid' }, httpStatus: 207 },
        { ok: true, httpStatus: 207 },
      ],
    },
    { name: '207 without readable errors retries all', status: 207, body: 'oops', want: Array(3).fill({ retry: { reason: 'HTTP 207 without a readable errors list' }, httpStatus: 207 }) },
    {
      name: '400 fails the whole batch as invalid with the message',
      status: 400,
      body: { errors: [{ reason: 'malformed', field: 'batch', message: 'expected {"batch": [operation, ...]}' }] },
      want: Array(3).fill({ fail: { reason: 'HTTP 400: expected {"batch": [operation, ...]}', code: 'invalid' }, httpStatus: 400 }),
    },
    {
      name: '401 is an auth failure',
      status: 401,
      body: { meta: { error: 'Unauthorized request.' } },
      want: Array(3).fill({ fail: { reason: 'HTTP 401: Unauthorized request.', code: 'auth' }, httpStatus: 401 }),
    },
    {
      name: '429 retries after Retry-After',
      status: 429,
      headers: { 'retry-after': '12' },
      body: undefined,
      want: Array(3).fill({ retry: { reason: 'HTTP 429', afterMs: 12_000 }, httpStatus: 429 }),
    },
    { name: 'a network error retries', status: 0, body: undefined, error: 'timed out after 10 ms', want: Array(3).fill({ retry: { reason: 'timed out after 10 ms' } }) },
  ];
  for (const row of table) {
    it(row.name, () => {
      assert.deepEqual(batchResults(req, { status: row.status, headers: row.headers ?? {}, body: row.body, error: row.error }), row.want);
    });
  }
});

describe('destinations/http', () => {
  it('classifies HTTP answers', () => {
    const now = Date.now();
    const table: Array<[number, Record<string, string>, unknown, ItemResult]> = [
      [204, {}, undefined, { ok: true, httpStatus: 204 }],
      [408, {}, undefined, { retry: { reason: 'HTTP 408' }, httpStatus: 408 }],
      [503, { 'Retry-After': '3' }, 'down', { retry: { reason: 'HTTP 503: down', afterMs: 3000 }, httpStatus: 503 }],
      [403, {}, { message: 'forbidden' }, { fail: { reason: 'HTTP 403: forbidden', code: 'auth' }, httpStatus: 403 }],
      [404, {}, { msg: 'no such list' }, { fail: { reason: 'HTTP 404: no such list', code: 'not_found' }, httpStatus: 404 }],
      [400, {}, { meta: { errors: ['a', 'b'] } }, { fail: { reason: 'HTTP 400: a; b', code: 'invalid' }, httpStatus: 400 }],
      [422, {}, { error: { message: 'bad email' } }, { fail: { reason: 'HTTP 422: bad email', code: 'invalid' }, httpStatus: 422 }],
      [302, {}, undefined, { fail: { reason: 'unexpected HTTP 302', code: 'rejected' }, httpStatus: 302 }],
    ];
    for (const [status, headers, body, want] of table) assert.deepEqual(classifyHttp(status, headers, body), want, `HTTP ${status}`);
    const dated = classifyHttp(429, { 'retry-after': new Date(now + 30_000).toUTCString() }, undefined);
    assert.ok('retry' in dated && dated.retry.afterMs !== undefined && dated.retry.afterMs > 28_000 && dated.retry.afterMs <= 30_000);
  });

  it('reads Retry-After as seconds or an HTTP date', () => {
    assert.equal(parseRetryAfter('120'), 120_000);
    assert.equal(parseRetryAfter('Wed, 21 Oct 2015 07:28:00 GMT', Date.parse('Wed, 21 Oct 2015 07:27:00 GMT')), 60_000);
    assert.equal(parseRetryAfter('Wed, 21 Oct 2015 07:28:00 GMT', Date.parse('Wed, 21 Oct 2015 08:00:00 GMT')), 0);
    assert.equal(parseRetryAfter('soon'), undefined);
    assert.equal(parseRetryAfter(undefined), undefined);
  });

  it('redacts credential headers and URL parameters', () => {
    assert.deepEqual(
      redactHeaders({ Authorization: 'Basic c2l0ZTprZXk=', 'Api-Key': 'k1', 'X-Encharge-Token': 't1', 'content-type': 'application/json' }),
      { Authorization: 'Basic [redacted]', 'Api-Key': '[redacted]', 'X-Encharge-Token': '[redacted]', 'content-type': 'application/json' },
    );
    assert.equal(redactUrl('https://u:p@api.moosend.com/v3/lists.json?apikey=SECRET&page=2'), 'https://redacted:redacted@api.moosend.com/v3/lists.json?apikey=redacted&page=2');
  });

  describe('vendorRequest over real HTTP', () => {
    let server: Server;
    let base: string;
    before(async () => {
      server = createServer((req, res) => {
        if (req.url === '/slow') return void setTimeout(() => res.end('{}'), 500);
        // A careless vendor that echoes the credentials back in its error.
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ message: `bad key ${req.headers.authorization} ${req.url}` }));
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    after(() => new Promise<void>((resolve) => server.close(() => resolve())));

    it('never lets a credential reach a log line or an error', async () => {
      const mem = memoryLogger();
      const auth = authorization({ siteId: 'site-abc123', apiKey: 'key-XYZ789' });
      const res = await vendorRequest({ method: 'POST', url: `${base}/x?apikey=q-SECRET-1`, headers: { Authorization: auth }, json: { a: 1 }, timeoutMs: 2000, log: mem.log });
      const result = classifyHttp(res.status, res.headers, res.body);
      assert.ok('fail' in result && result.fail.code === 'invalid');
      const seen = JSON.stringify(result) + mem.text();
      assert.match(seen, /vendor request/);
      for (const secret of ['site-abc123', 'key-XYZ789', auth.slice(6), 'q-SECRET-1']) assert.ok(!seen.includes(secret), `${secret} leaked`);
    });

    it('turns a timeout and a refused connection into errors, not throws', async () => {
      const mem = memoryLogger();
      const slow = await vendorRequest({ method: 'GET', url: `${base}/slow`, timeoutMs: 50, log: mem.log });
      assert.equal(slow.status, 0);
      assert.equal(slow.error, 'timed out after 50 ms');
      const refused = await vendorRequest({ method: 'GET', url: 'http://127.0.0.1:1/x', timeoutMs: 1000, log: mem.log });
      assert.equal(refused.status, 0);
      assert.match(refused.error ?? '', /network error/);
    });
  });
});

describe('customerio webhook signature', () => {
  const key = 'whsec-test-key';
  const body = Buffer.from(readFileSync(fixture('email-opened.json')));
  const now = 1_613_063_100_000;
  const ts = String(now / 1000);
  const sign = (k: string, t: string, b: Buffer) => createHmac('sha256', k).update(`v0:${t}:${b.toString('utf8')}`).digest('hex');
  const reqWith = (headers: Record<string, string>, at = now): InboundRequest => ({ rawBody: body, headers, query: {}, now: at });
  const rejected = (fn: () => void, code: string) => assert.throws(fn, (e: unknown) => e instanceof InboundRejected && e.status === 401 && e.code === code);

  it('accepts a good signature, in either hex case', () => {
    verifyCio(reqWith({ 'x-cio-timestamp': ts, 'x-cio-signature': sign(key, ts, body) }), { webhookSigningKey: key });
    verifyCio(reqWith({ 'X-CIO-Timestamp': ts, 'X-CIO-Signature': sign(key, ts, body).toUpperCase() }), { webhookSigningKey: key });
  });

  it('rejects a bad, stale, future or missing signature', () => {
    rejected(() => verifyCio(reqWith({ 'x-cio-timestamp': ts, 'x-cio-signature': sign('other-key', ts, body) }), { webhookSigningKey: key }), 'invalid_signature');
    rejected(() => verifyCio(reqWith({ 'x-cio-timestamp': ts, 'x-cio-signature': 'not-hex' }), { webhookSigningKey: key }), 'invalid_signature');
    const tampered: InboundRequest = { ...reqWith({ 'x-cio-timestamp': ts, 'x-cio-signature': sign(key, ts, body) }), rawBody: Buffer.concat([body, Buffer.from(' ')]) };
    rejected(() => verifyCio(tampered, { webhookSigningKey: key }), 'invalid_signature');
    rejected(() => verifyCio(reqWith({ 'x-cio-timestamp': ts, 'x-cio-signature': sign(key, ts, body) }, now + 5 * 60_000 + 1000), { webhookSigningKey: key }), 'stale_timestamp');
    rejected(() => verifyCio(reqWith({ 'x-cio-timestamp': ts, 'x-cio-signature': sign(key, ts, body) }, now - 6 * 60_000), { webhookSigningKey: key }), 'stale_timestamp');
    rejected(() => verifyCio(reqWith({ 'x-cio-signature': sign(key, ts, body) }), { webhookSigningKey: key }), 'missing_signature');
    rejected(() => verifyCio(reqWith({ 'x-cio-timestamp': 'yesterday', 'x-cio-signature': sign(key, 'yesterday', body) }), { webhookSigningKey: key }), 'invalid_timestamp');
  });

  it('skips verification when no signing key is configured (the path secret guards it)', () => {
    verifyCio(reqWith({}), {});
  });
});

describe('customerio webhook parsing', () => {
  const table: Array<{ file: string; want: Record<string, unknown> | undefined }> = [
    { file: 'email-opened.json', want: { kind: 'email.opened', email: 'jane.doe@example.com', subject: 'Your proposal from Acme', campaign: 'campaign:23', occurredAt: 1_613_063_089_000 } },
    { file: 'email-clicked.json', want: { kind: 'email.clicked', email: 'jane.doe@example.com', link: 'https://acme.example/pricing?utm_source=cio', campaign: 'broadcast:9' } },
    { file: 'email-converted.json', want: { kind: 'email.converted', email: 'jane.doe@example.com' } },
    { file: 'email-delivered.json', want: { kind: 'email.delivered', email: 'jane.doe@example.com' } },
    { file: 'email-sent.json', want: { kind: 'email.sent', email: 'jane.doe@example.com', campaign: 'broadcast:9' } },
    { file: 'email-unsubscribed.json', want: { kind: 'email.unsubscribed', email: 'jane.doe@example.com' } },
    { file: 'customer-unsubscribed.json', want: { kind: 'email.unsubscribed', email: 'jane.doe@example.com' } },
    { file: 'customer-subscribed.json', want: { kind: 'email.subscribed', email: 'test@example.com', vendorEventId: '01E4C4CT6YDC7Y5M7FE1GWWPQJ' } },
    { file: 'email-bounced.json', want: { kind: 'email.bounced', email: 'gone@example.com', detail: '550 5.1.1 The email account that you tried to reach does not exist.', campaign: 'newsletter:10' } },
    { file: 'email-dropped.json', want: { kind: 'email.dropped', email: 'bounced.before@example.com', detail: 'Address is suppressed (previous hard bounce)' } },
    { file: 'email-spammed.json', want: { kind: 'email.spammed', email: 'annoyed@example.com' } },
    { file: 'email-failed.json', want: { kind: 'email.failed', email: 'template.bug@example.com', campaign: 'transactional:3' } },
    { file: 'sms-clicked.json', want: undefined },
    { file: 'customer-unsubscribed-no-email.json', want: undefined },
    { file: 'email-drafted.json', want: undefined },
  ];
  for (const row of table) {
    it(`${row.file} -> ${row.want ? String(row.want.kind) : 'nothing'}`, () => {
      const raw = readFileSync(fixture(row.file));
      const parsed = parseCio({ rawBody: raw, headers: {}, query: {}, now: 0 }, 'cio');
      if (!row.want) return assert.deepEqual(parsed, []);
      const eventId = (JSON.parse(raw.toString('utf8')) as { event_id: string }).event_id;
      assert.equal(parsed.length, 1);
      assert.equal(parsed[0]?.dedupKey, `cio:${eventId}`);
      assert.deepEqual(pick(parsed[0]?.event, ['type', 'source', 'vendorEventId', ...Object.keys(row.want)]), { type: 'engagement', source: 'cio', vendorEventId: eventId, ...row.want });
    });
  }

  it('rejects a body that is not JSON, and drops JSON it cannot use', () => {
    assert.throws(() => parseCio({ rawBody: Buffer.from('metric=opened'), headers: {}, query: {}, now: 0 }, 'cio'), (e: unknown) => e instanceof InboundRejected && e.status === 400 && e.code === 'invalid_json');
    assert.deepEqual(parseCio({ rawBody: Buffer.from('{"hello":"world"}'), headers: {}, query: {}, now: 0 }, 'cio'), []);
  });

  it('accepts an array of events (bulk mode is UNCONFIRMED, so tolerated)', () => {
    const one = readFileSync(fixture('email-opened.json'), 'utf8');
    const two = readFileSync(fixture('email-clicked.json'), 'utf8');
    const parsed = parseCio({ rawBody: Buffer.from(`[${one},${two}]`), headers: {}, query: {}, now: 0 }, 'cio');
    assert.deepEqual(parsed.map((p) => p.event.kind), ['email.opened', 'email.clicked']);
  });
});

describe('customerio against its simulator', () => {
  const sim = customerioSimulator();
  let app: FastifyInstance;
  let baseUrl: string;
  const mem = memoryLogger();
  const ctxFor = (extra: Partial<CustomerioSettings> = {}): DestinationContext<CustomerioSettings> => ({
    name: 'cio',
    settings: { ...customerioSettings.parse(sim.settingsFor(baseUrl)), ...extra },
    log: mem.log,
    timeoutMs: 2000,
  });

  before(async () => {
    app = Fastify();
    await app.register(sim.plugin, { prefix: '/cio' });
    baseUrl = `${await app.listen({ port: 0, host: '127.0.0.1' })}/cio`;
  });
  after(() => app.close());

  it('identifies by id when identifyBy is id, and a retried event is stored once', async () => {
    sim.reset();
    const ctx = ctxFor({ identifyBy: 'id' });
    const event: SyncOp = { kind: 'trackEvent', person: jane, name: 'kommo_lead_won', properties: {}, timestamp: T, messageId: 'job-1' };
    const ops: SyncOp[] = [{ kind: 'upsertPerson', person: jane, attributes: { kommo_stage: 'won' }, timestamp: T }, event];
    assert.deepEqual(await customerio.deliver(ctx, ops), [{ ok: true, httpStatus: 200 }, { ok: true, httpStatus: 200 }]);
    assert.deepEqual(await customerio.deliver(ctx, [event]), [{ ok: true, httpStatus: 200 }]);
    assert.deepEqual(sim.people.get('kommo-contact-7'), { kommo_stage: 'won', email: 'jane@example.com' });
    assert.equal(sim.events.length, 1);
    assert.equal(sim.events[0]?.id, toEventId('job-1', T));
  });

  it('sends a large delivery as several batch requests', async () => {
    sim.reset();
    const ops: SyncOp[] = Array.from({ length: 40 }, (_, i) => ({
      kind: 'upsertPerson', person: { email: `p${i}@example.com` }, attributes: { notes: 'x'.repeat(30_000) }, timestamp: T,
    }));
    const results = await customerio.deliver(ctxFor(), ops);
    assert.ok(results.every((r) => 'ok' in r));
    assert.equal(sim.requests.length, 3);
    assert.equal(sim.people.size, 40);
  });

  it('stops sending after a request that fails for everyone (429)', async () => {
    sim.reset();
    sim.failNext(1, 429, 5);
    const ops: SyncOp[] = Array.from({ length: 40 }, (_, i) => ({
      kind: 'upsertPerson', person: { email: `p${i}@example.com` }, attributes: { notes: 'x'.repeat(30_000) }, timestamp: T,
    }));
    const results = await customerio.deliver(ctxFor(), ops);
    assert.equal(sim.requests.length, 1);
    assert.ok(results.every((r) => 'retry' in r && r.retry.afterMs === 5000));
  });

  it('suppress blocks the identifier; delete allows re-identify', async () => {
    sim.reset();
    const ctx = ctxFor();
    const bob = { email: 'bob@example.com' };
    await customerio.deliver(ctx, [{ kind: 'upsertPerson', person: bob, attributes: { a: 1 }, timestamp: T }, { kind: 'suppress', person: bob }]);
    await customerio.deliver(ctx, [{ kind: 'upsertPerson', person: bob, attributes: { a: 2 }, timestamp: T }]);
    assert.equal(sim.people.has('bob@example.com'), false);
    await customerio.deliver(ctx, [{ kind: 'upsertPerson', person: jane, attributes: { a: 1 }, timestamp: T }, { kind: 'erasePerson', person: jane }]);
    assert.equal(sim.people.has('jane@example.com'), false);
    await customerio.deliver(ctx, [{ kind: 'upsertPerson', person: jane, attributes: { a: 3 }, timestamp: T }]);
    assert.deepEqual(sim.people.get('jane@example.com'), { a: 3 });
  });

  it('check() passes, and names the problem on 401', async () => {
    await customerio.check(ctxFor());
    await assert.rejects(customerio.check(ctxFor({ apiKey: 'wrong' })), /Customer\.io rejected the site id \/ API key \(401\)/);
  });

  it('serves the v1 endpoints as documented', async () => {
    sim.reset();
    const auth = { authorization: authorization(sim.credentials), 'content-type': 'application/json' };
    const put = await app.inject({ method: 'PUT', url: '/cio/api/v1/customers/Ann%40Example.com', headers: auth, payload: { plan: 'pro' } });
    assert.equal(put.statusCode, 200);
    assert.equal(put.body, '{}');
    assert.deepEqual(sim.people.get('ann@example.com'), { plan: 'pro' });
    const ev = { name: 'signed_up', id: '01HGW2PZ0EJM4X5Y8B3C9D7F6K' };
    for (let i = 0; i < 2; i += 1) {
      assert.equal((await app.inject({ method: 'POST', url: '/cio/api/v1/customers/ann@example.com/events', headers: auth, payload: ev })).statusCode, 200);
    }
    assert.equal(sim.events.length, 1);
    const blank = await app.inject({ method: 'POST', url: '/cio/api/v1/customers/ann@example.com/events', headers: auth, payload: { name: '  ' } });
    assert.deepEqual([blank.statusCode, blank.json()], [400, { meta: { error: 'name cannot be blank' } }]);
    assert.equal((await app.inject({ method: 'DELETE', url: '/cio/api/v1/customers/ann@example.com', headers: auth })).statusCode, 200);
    assert.equal(sim.people.size, 0);
    const unauth = await app.inject({ method: 'GET', url: '/cio/api/v1/accounts/region' });
    assert.deepEqual([unauth.statusCode, typeof unauth.json().meta.error], [401, 'string']);
    const region = await app.inject({ method: 'GET', url: '/cio/api/v1/accounts/region', headers: auth });
    assert.deepEqual(region.json(), { url: 'https://track.customer.io', region: 'us', environment_id: 1 });
    const malformed = await app.inject({ method: 'POST', url: '/cio/api/v2/batch', headers: auth, payload: '{"batch": {}}' });
    assert.equal(malformed.statusCode, 400);
    const twoIds = await app.inject({ method: 'POST', url: '/cio/api/v2/entity', headers: auth, payload: { type: 'person', identifiers: { id: '1', email: 'a@b.c' }, action: 'identify' } });
    assert.deepEqual([twoIds.statusCode, twoIds.json().errors[0].field], [400, 'identifiers']);
    assert.equal(sim.requests.at(-1)?.path, '/api/v2/entity');
  });

  it('never logs a credential', () => {
    const text = mem.text();
    assert.match(text, /vendor request/);
    const c = sim.credentials;
    for (const s of [c.siteId, c.apiKey, authorization(c).slice(6)]) assert.ok(!text.includes(s), 'credential in logs');
  });
});

function fixture(name: string): URL {
  return new URL(`../../../test/fixtures/customerio/${name}`, import.meta.url);
}

function fail(r: ItemResult | undefined): string {
  assert.ok(r && 'fail' in r, `expected a failure, got ${JSON.stringify(r)}`);
  return r.fail.reason;
}

function pick(obj: object | undefined, keys: string[]): Record<string, unknown> {
  const source = (obj ?? {}) as Record<string, unknown>;
  return Object.fromEntries(keys.filter((k) => k in source).map((k) => [k, source[k]]));
}
