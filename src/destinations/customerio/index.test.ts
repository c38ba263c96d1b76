import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import { type DestinationContext, type IdentifyBy, type SyncOp } from '../types.js';
import { authorization } from './client.js';
import { customerio } from './index.js';
import { toEventId } from './ops.js';
import { customerioSettings, type CustomerioSettings } from './settings.js';
import { customerioSimulator } from './simulator.js';

const T = 1_700_000_000_123; // unix ms
const jane = { email: 'jane@example.com', id: 'kommo-contact-7' };

function memoryLogger(): { log: Logger; text: () => string } {
  const lines: string[] = [];
  return { log: pino({ level: 'trace' }, { write: (s: string) => void lines.push(s) }), text: () => lines.join('') };
}


/** About 30 KB of attributes, each value within Customer.io's 1,000-byte limit. */
const bigAttributes = () => Object.fromEntries(Array.from({ length: 30 }, (_, j) => [`note_${j}`, 'x'.repeat(990)]));

describe('customerio against its simulator', () => {
  const sim = customerioSimulator();
  let app: FastifyInstance;
  let baseUrl: string;
  const mem = memoryLogger();
  const ctxFor = (extra: Partial<CustomerioSettings> = {}, identifyBy: IdentifyBy = 'email'): DestinationContext<CustomerioSettings> => ({
    name: 'cio',
    settings: { ...customerioSettings.parse(sim.settingsFor(baseUrl)), ...extra },
    identifyBy,
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
    const ctx = ctxFor({}, 'id');
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
      kind: 'upsertPerson', person: { email: `p${i}@example.com` }, attributes: bigAttributes(), timestamp: T,
    }));
    const results = await customerio.deliver(ctxFor(), ops);
    assert.ok(results.every((r) => 'ok' in r));
    assert.equal(sim.requests.length, 3);
    assert.equal(sim.people.size, 40);
  });

  it('stops sending after a request that fails for everyone (429)', async () => {
    sim.reset();
    sim.faults.failNext(1, 429, 5);
    const ops: SyncOp[] = Array.from({ length: 40 }, (_, i) => ({
      kind: 'upsertPerson', person: { email: `p${i}@example.com` }, attributes: bigAttributes(), timestamp: T,
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
