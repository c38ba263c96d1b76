/**
 * The connector against its simulator over real HTTP: which key goes where, batching and order,
 * partial failures, people Encharge does not know, and the event subscriptions doctor manages.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import type { DestinationContext, IdentifyBy, InboundParsed, SyncOp } from '../types.js';
import { encharge } from './index.js';
import { enchargeSettings, type EnchargeSettings } from './settings.js';
import { enchargeSimulator } from './simulator.js';

const T = 1_700_000_000_123;
const jane = { email: 'jane@example.com', id: 'kommo-contact-7' };
const bob = { email: 'bob@example.com', id: 'kommo-contact-8' };

function memoryLogger(): { log: Logger; text: () => string } {
  const lines: string[] = [];
  return { log: pino({ level: 'trace' }, { write: (s: string) => void lines.push(s) }), text: () => lines.join('') };
}

describe('encharge against its simulator', () => {
  const sim = enchargeSimulator();
  let app: FastifyInstance;
  let baseUrl: string;
  const mem = memoryLogger();
  const ctxFor = (extra: Partial<EnchargeSettings> = {}, identifyBy: IdentifyBy = 'email'): DestinationContext<EnchargeSettings> => ({
    name: 'encharge',
    settings: { ...enchargeSettings.parse(sim.settingsFor(baseUrl)), ...extra },
    identifyBy,
    log: mem.log,
    timeoutMs: 2000,
  });

  before(async () => {
    app = Fastify();
    await app.register(sim.plugin, { prefix: '/enc' });
    baseUrl = `${await app.listen({ port: 0, host: '127.0.0.1' })}/enc`;
  });
  after(() => app.close());
  beforeEach(() => sim.reset());

  it('a stage change: the person upserted with the API key, the event sent to Ingest with the write key', async () => {
    const ops: SyncOp[] = [
      { kind: 'upsertPerson', person: jane, attributes: { firstName: 'Jane', kommo_lead_id: 42, kommo_current_stage: 'proposal_sent' }, timestamp: T },
      { kind: 'trackEvent', person: jane, name: 'deal_moved_to_proposal_sent', properties: { lead_id: 42, stage: 'proposal_sent' }, timestamp: T, messageId: 'm1' },
    ];
    assert.deepEqual(await encharge.deliver(ctxFor(), ops), [{ ok: true, httpStatus: 200 }, { ok: true, httpStatus: 200 }]);
    assert.deepEqual(sim.requests.map((r) => [r.method, r.path, r.headers['x-encharge-token']]), [
      ['POST', '/v1/people', sim.credentials.apiKey],
      ['POST', '/ingest/v1/', sim.credentials.writeKey],
    ]);
    const person = sim.person('jane@example.com');
    assert.deepEqual(person?.fields, { firstName: 'Jane', kommo_lead_id: 42, kommo_current_stage: 'proposal_sent' });
    assert.deepEqual(sim.events.map((e) => [e.name, e.person, e.properties]), [['deal_moved_to_proposal_sent', 'jane@example.com', { lead_id: 42, stage: 'proposal_sent', kommo_message_id: 'm1' }]]);
  });

  it('a round of many stage changes costs one upsert request plus one request per event', async () => {
    const people = Array.from({ length: 30 }, (_, i) => ({ email: `p${i}@example.com` }));
    const ops: SyncOp[] = people.flatMap((person): SyncOp[] => [
      { kind: 'upsertPerson', person, attributes: { kommo_current_stage: 'demo' }, timestamp: T },
      { kind: 'trackEvent', person, name: 'deal_moved_to_demo', properties: {}, timestamp: T, messageId: `m-${person.email}` },
    ]);
    const results = await encharge.deliver(ctxFor(), ops);
    assert.ok(results.every((r) => 'ok' in r));
    assert.equal(sim.requests.filter((r) => r.path === '/v1/people').length, 1);
    assert.equal(sim.requests.filter((r) => r.path === '/ingest/v1/').length, 30);
    assert.equal(sim.events.length, 30);
  });

  it('one bad person in a batch fails alone (the refused upsert is resent person by person)', async () => {
    const ops: SyncOp[] = [jane, { email: 'not-an-email' }, bob].map((person) => ({ kind: 'upsertPerson', person, attributes: { a: 1 }, timestamp: T }));
    const results = await encharge.deliver(ctxFor(), ops);
    assert.deepEqual(results.map((r) => ('ok' in r ? 'ok' : 'fail' in r ? r.fail.code : 'retry')), ['ok', 'invalid', 'ok']);
    assert.match(JSON.stringify(results[1]), /needs a valid email/);
    assert.ok(sim.person('jane@example.com') && sim.person('bob@example.com'));
  });

  it('a person whose upsert did not go through gets no event (a retried job must not send it twice)', async () => {
    sim.faults.failNext(1, 503);
    const ops: SyncOp[] = [
      { kind: 'upsertPerson', person: jane, attributes: {}, timestamp: T },
      { kind: 'trackEvent', person: jane, name: 'x', properties: {}, timestamp: T, messageId: 'm' },
    ];
    const results = await encharge.deliver(ctxFor(), ops);
    assert.ok(results.every((r) => 'retry' in r), JSON.stringify(results));
    assert.equal(sim.events.length, 0);
    assert.equal(sim.requests.length, 1);
  });

  it('a wrong write key fails the events with auth, and the REST work still goes through', async () => {
    const ops: SyncOp[] = [
      { kind: 'upsertPerson', person: bob, attributes: {}, timestamp: T },
      { kind: 'trackEvent', person: jane, name: 'x', properties: {}, timestamp: T, messageId: 'm' },
    ];
    const results = await encharge.deliver(ctxFor({ writeKey: 'wrong-write-key' }), ops);
    assert.ok('ok' in results[0]!);
    assert.ok('fail' in results[1]! && results[1].fail.code === 'auth', JSON.stringify(results[1]));
  });

  it('suppress unsubscribes, and a later upsert does not subscribe them again', async () => {
    const ctx = ctxFor();
    await encharge.deliver(ctx, [{ kind: 'upsertPerson', person: jane, attributes: { a: 1 }, timestamp: T }, { kind: 'suppress', person: jane }]);
    await encharge.deliver(ctx, [{ kind: 'upsertPerson', person: jane, attributes: { a: 2 }, timestamp: T }]);
    assert.equal(sim.person('jane@example.com')?.unsubscribed, true);
    assert.equal(sim.person('jane@example.com')?.fields.a, 2);
  });

  it('erasure deletes people for good, several in one request', async () => {
    const ctx = ctxFor();
    await encharge.deliver(ctx, [jane, bob].map((person): SyncOp => ({ kind: 'upsertPerson', person, attributes: {}, timestamp: T })));
    const before = sim.requests.length;
    assert.deepEqual(await encharge.deliver(ctx, [{ kind: 'erasePerson', person: jane }, { kind: 'erasePerson', person: bob }]), [{ ok: true, httpStatus: 204 }, { ok: true, httpStatus: 204 }]);
    const sent = sim.requests.slice(before);
    assert.deepEqual(sent.map((r) => [r.method, r.path]), [['DELETE', '/v1/people']]);
    assert.deepEqual(sent[0]?.body, { query: { 'people[0][email]': 'jane@example.com', 'people[1][email]': 'bob@example.com', force: 'true' } });
    assert.equal(sim.people.size, 0, 'deleted, not archived');
  });

  it('tags move with the stage; a person Encharge does not know is created first when it answers 404', async () => {
    sim.unknownPeople = 'reject';
    const ctx = ctxFor();
    const ops: SyncOp[] = [
      { kind: 'removeFromList', person: jane, listId: 'demo-scheduled' },
      { kind: 'addToList', person: bob, listId: 'proposal-sent', attributes: { firstName: 'Bob' } },
      { kind: 'suppress', person: { email: 'stranger@example.com' } },
    ];
    const results = await encharge.deliver(ctx, ops);
    assert.deepEqual(results.map((r) => 'ok' in r), [true, true, true], JSON.stringify(results));
    assert.deepEqual([...(sim.person('bob@example.com')?.tags ?? [])], ['proposal-sent']);
    assert.equal(sim.person('bob@example.com')?.fields.firstName, 'Bob', 'created with the attributes addToList carries');
    assert.equal(sim.person('stranger@example.com')?.unsubscribed, true, 'suppressed people are known to Encharge as unsubscribed');
    assert.equal(sim.person('jane@example.com'), undefined, 'nothing to untag: nobody is created');
    assert.deepEqual(sim.requests.filter((r) => r.path !== '/v1/tags' || r.method !== 'DELETE').map((r) => `${r.method} ${r.path} ${r.status}`).sort(), [
      'POST /v1/people 200', 'POST /v1/people 200', 'POST /v1/people/unsubscribe 204', 'POST /v1/people/unsubscribe 404', 'POST /v1/tags 201', 'POST /v1/tags 404',
    ]);
  });

  it('identifies by userId when identifyBy is id', async () => {
    const ctx = ctxFor({}, 'id');
    await encharge.deliver(ctx, [
      { kind: 'upsertPerson', person: jane, attributes: { plan: 'pro' }, timestamp: T },
      { kind: 'trackEvent', person: jane, name: 'x', properties: {}, timestamp: T, messageId: 'm' },
    ]);
    assert.equal(sim.person('kommo-contact-7')?.email, 'jane@example.com');
    assert.deepEqual(sim.events[0]?.user, { userId: 'kommo-contact-7', email: 'jane@example.com' });
  });

  it('check() passes, and names the problem on a wrong API key', async () => {
    await encharge.check(ctxFor());
    await assert.rejects(encharge.check(ctxFor({ apiKey: 'wrong-api-key' })), /Encharge rejected the API key \(401\)/);
  });

  describe('event subscriptions (doctor)', () => {
    let receiver: FastifyInstance;
    let hookUrl = '';
    const received: InboundParsed[] = [];
    before(async () => {
      receiver = Fastify();
      receiver.removeAllContentTypeParsers();
      receiver.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
      receiver.post('/webhooks/acme/encharge/s3cret', async (request) => {
        const query = Object.fromEntries(new URL(request.url, 'http://x').searchParams);
        received.push(...encharge.inbound.parse({ rawBody: request.body as Buffer, headers: request.headers, query, now: Date.now() }, 'encharge'));
        return { ok: true };
      });
      hookUrl = `${await receiver.listen({ port: 0, host: '127.0.0.1' })}/webhooks/acme/encharge/s3cret`;
    });
    after(() => receiver.close());

    it('register subscribes one URL per event type; Encharge then posts tag and unsubscribe events there', async () => {
      received.length = 0;
      const ctx = ctxFor({ webhookEvents: ['unsubscribedUser', 'added-tag-clicked-pricing'] });
      await encharge.webhookRegistration.register(ctx, hookUrl);
      assert.deepEqual(sim.subscriptions.map((s) => [s.eventType, s.url]), [
        ['unsubscribedUser', `${hookUrl}?event=unsubscribedUser`],
        ['added-tag-clicked-pricing', `${hookUrl}?event=added-tag-clicked-pricing`],
      ]);
      await encharge.deliver(ctx, [{ kind: 'upsertPerson', person: jane, attributes: {}, timestamp: T }]);
      assert.deepEqual(await sim.tagPerson('jane@example.com', 'clicked-pricing'), [200]);
      assert.deepEqual(await sim.tagPerson('jane@example.com', 'newsletter'), [], 'not subscribed');
      assert.deepEqual(await sim.unsubscribePerson('jane@example.com'), [200]);
      assert.deepEqual(received.map((p) => [p.event.kind, p.event.email, p.event.detail]), [
        ['tag.added', 'jane@example.com', 'clicked-pricing'],
        ['email.unsubscribed', 'jane@example.com', undefined],
      ]);
    });

    it('register also subscribes the signal tags of the common signals key (without listing them in webhookEvents)', async () => {
      const before = sim.subscriptions.length;
      await encharge.webhookRegistration.register({ ...ctxFor(), signalTags: ['visited-pricing', ' unsubscribedUser-not-a-tag'] }, hookUrl);
      assert.deepEqual(sim.subscriptions.slice(before).map((s) => s.eventType), ['unsubscribedUser', 'added-tag-visited-pricing', 'added-tag-unsubscribedUser-not-a-tag']);
      await assert.rejects(encharge.webhookRegistration.list({ ...ctxFor(), signalTags: ['visited-pricing'] }), /unsubscribedUser, added-tag-visited-pricing are subscribed/);
    });

    it('list says plainly that Encharge cannot list subscriptions', async () => {
      await assert.rejects(encharge.webhookRegistration.list(ctxFor()), /cannot list event subscriptions[\s\S]*unsubscribedUser/);
      await assert.rejects(encharge.webhookRegistration.list(ctxFor({ apiKey: 'wrong-api-key' })), /rejected the API key \(401\)/);
      await assert.rejects(encharge.webhookRegistration.register(ctxFor({ apiKey: 'wrong-api-key' }), hookUrl), /rejected the API key \(401\) while subscribing to unsubscribedUser/);
    });
  });

  it('never logs a credential', () => {
    const text = mem.text();
    assert.match(text, /vendor request/);
    for (const s of [sim.credentials.apiKey, sim.credentials.writeKey]) assert.ok(!text.includes(s), 'credential in logs');
    assert.match(text, /"x-encharge-token":"\[redacted\]"/);
  });
});
