/**
 * The connector against its simulator over real HTTP (Fastify on port 0, mounted under a prefix):
 * what Iterable ends up holding, request counts, partial failures, throttling, and logs.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import type { DestinationContext, IdentifyBy, ItemResult, SyncOp } from '../types.js';
import { iterable } from './index.js';
import { iterableSettings, type IterableSettings } from './settings.js';
import { iterableSimulator, type IterableSimulator, type IterableSimulatorOptions } from './simulator.js';

const T = 1_700_000_000_123; // unix ms
const jane = { email: 'jane@example.com', id: 'kommo-contact-7' };

function memoryLogger(): { log: Logger; text: () => string } {
  const lines: string[] = [];
  return { log: pino({ level: 'trace' }, { write: (s: string) => void lines.push(s) }), text: () => lines.join('') };
}
function outcome(r: ItemResult | undefined): string {
  if (!r) return 'none';
  return 'ok' in r ? 'ok' : 'retry' in r ? 'retry' : `fail:${r.fail.code}`;
}

async function mount(opts: IterableSimulatorOptions = {}): Promise<{ sim: IterableSimulator; app: FastifyInstance; baseUrl: string }> {
  const sim = iterableSimulator(opts);
  const app = Fastify();
  await app.register(sim.plugin, { prefix: '/itbl' });
  const baseUrl = `${await app.listen({ port: 0, host: '127.0.0.1' })}/itbl`;
  return { sim, app, baseUrl };
}

/** What a won deal queues for Iterable (as the core plans it with Iterable's defaults). */
function wonOps(person: { email: string; id: string }, messageId: string): SyncOp[] {
  return [
    { kind: 'upsertPerson', person, attributes: { firstName: 'Jane', crmDealId: 42, dealValue: 9000, isCustomer: true }, timestamp: T },
    { kind: 'trackEvent', person, name: 'deal_won', properties: { dealId: 42, dealValue: 9000, currency: 'USD' }, timestamp: T, messageId: `${messageId}-e` },
    { kind: 'triggerWorkflow', person, workflowId: '12345', data: { dealId: 42 }, messageId: `${messageId}-w` },
  ];
}

describe('iterable against its simulator', () => {
  let sim: IterableSimulator;
  let app: FastifyInstance;
  let baseUrl: string;
  const mem = memoryLogger();
  const ctxFor = (extra: Partial<IterableSettings> = {}, identifyBy: IdentifyBy = 'email'): DestinationContext<IterableSettings> => ({
    name: 'iterable',
    settings: { ...iterableSettings.parse(sim.settingsFor(baseUrl)), ...extra },
    identifyBy,
    log: mem.log,
    timeoutMs: 2000,
  });

  before(async () => {
    ({ sim, app, baseUrl } = await mount());
  });
  after(() => app.close());

  it('a won deal: one user update, one event, one workflow trigger', async () => {
    sim.reset();
    const results = await iterable.deliver(ctxFor(), wonOps(jane, 'job-1'));
    assert.deepEqual(results.map(outcome), ['ok', 'ok', 'ok']);
    assert.deepEqual(sim.requests.map((r) => `${r.method} ${r.path}`), ['POST /users/bulkUpdate', 'POST /events/trackBulk', 'POST /workflows/triggerWorkflow']);
    assert.ok(sim.requests.every((r) => r.headers['api-key'] === sim.credentials.apiKey), 'Api-Key header');
    assert.deepEqual(sim.users.get('jane@example.com')?.dataFields, { firstName: 'Jane', crmDealId: 42, dealValue: 9000, isCustomer: true });
    assert.deepEqual(sim.events.map((e) => [e.person, e.eventName, e.id, e.createdAt]), [['jane@example.com', 'deal_won', 'job-1-e', 1_700_000_000]]);
    assert.deepEqual(sim.workflowTriggers, [{ person: 'jane@example.com', workflowId: 12345, dataFields: { dealId: 42 } }]);
  });

  it('a retried event updates the same event in Iterable instead of adding one', async () => {
    sim.reset();
    const ops = wonOps(jane, 'job-2').slice(0, 2);
    await iterable.deliver(ctxFor(), ops);
    await iterable.deliver(ctxFor(), ops);
    assert.equal(sim.events.length, 1);
    assert.equal(sim.events[0]?.updates, 1);
    assert.deepEqual(sim.items.filter((i) => i.kind === 'trackEvent').map((i) => Boolean(i.duplicate)), [false, true]);
  });

  it('a burst of 200 people is one request per endpoint', async () => {
    sim.reset();
    const ops: SyncOp[] = [];
    for (let i = 0; i < 200; i++) {
      const person = { email: `p${i}@example.com`, id: `kommo-contact-${i}` };
      ops.push(
        { kind: 'upsertPerson', person, attributes: { kommo_stage: 'proposal_sent', dealValue: i }, timestamp: T },
        { kind: 'trackEvent', person, name: 'crm_stage_changed', properties: { stageId: 102 }, timestamp: T, messageId: `burst-${i}` },
        { kind: 'removeFromList', person, listId: '1101' },
        { kind: 'addToList', person, listId: '1102', attributes: {} },
      );
    }
    const results = await iterable.deliver(ctxFor(), ops);
    assert.ok(results.every((r) => 'ok' in r));
    assert.equal(sim.requests.length, 4, sim.requests.map((r) => r.path).join(', '));
    assert.equal(sim.users.size, 200);
    assert.equal(sim.events.length, 200);
    assert.equal(sim.lists.get('1102')?.size, 200);
  });

  it('a bulk answer naming one item: only that item is retried or failed, each with its reason', async () => {
    sim.reset();
    const people = ['a', 'b', 'c'].map((n) => ({ email: `${n}@example.com`, id: `kommo-contact-${n}` }));
    sim.failItem('b@example.com', 'notFoundEmails', { endpoint: 'trackBulk' });
    sim.failItem('c@example.com', 'forgottenEmails', { endpoint: 'bulkUpdate' });
    const ops = people.flatMap((p, i): SyncOp[] => [
      { kind: 'upsertPerson', person: p, attributes: { n: i }, timestamp: T },
      { kind: 'trackEvent', person: p, name: 'crm_stage_changed', properties: {}, timestamp: T, messageId: `partial-${i}` },
    ]);
    const results = await iterable.deliver(ctxFor(), ops);
    assert.deepEqual(results.map(outcome), ['ok', 'ok', 'ok', 'retry', 'fail:rejected', 'ok']);
    assert.match(JSON.stringify(results[3]), /notFoundEmails.*not known to Iterable yet/);
    assert.match(JSON.stringify(results[4]), /forgottenEmails/);
    // The retry of b's event alone lands once; nobody else's event is sent again.
    const again = await iterable.deliver(ctxFor(), [ops[3]!]);
    assert.deepEqual(again.map(outcome), ['ok']);
    assert.deepEqual(sim.events.map((e) => e.person).sort(), ['a@example.com', 'b@example.com', 'c@example.com']);
  });

  it('a workflow trigger waits while the person\'s event in the same delivery failed (no double journey)', async () => {
    sim.reset();
    sim.failItem('jane@example.com', 'notFoundEmails', { endpoint: 'trackBulk' });
    const ops = wonOps(jane, 'job-3');
    const first = await iterable.deliver(ctxFor(), ops);
    assert.deepEqual(first.map(outcome), ['ok', 'retry', 'retry']);
    assert.match(JSON.stringify(first[2]), /workflow not triggered yet/);
    assert.equal(sim.workflowTriggers.length, 0);
    const second = await iterable.deliver(ctxFor(), ops);
    assert.deepEqual(second.map(outcome), ['ok', 'ok', 'ok']);
    assert.equal(sim.workflowTriggers.length, 1);
  });

  it('a throttled endpoint stops only its own requests; an outage stops everything', async () => {
    sim.reset();
    sim.faults.failNext(1, 429, 2);
    const ops: SyncOp[] = [
      { kind: 'upsertPerson', person: jane, attributes: { a: 1 }, timestamp: T },
      { kind: 'addToList', person: jane, listId: '1101', attributes: {} },
      { kind: 'removeFromList', person: jane, listId: '1102' },
    ];
    const throttled = await iterable.deliver(ctxFor(), ops);
    assert.deepEqual(throttled.map(outcome), ['retry', 'ok', 'ok']);
    assert.equal((throttled[0] as { retry: { afterMs?: number } }).retry.afterMs, 2000);
    sim.reset();
    sim.faults.failNext(1, 503);
    const down = await iterable.deliver(ctxFor(), ops);
    assert.deepEqual(down.map(outcome), ['retry', 'retry', 'retry']);
    assert.equal(sim.requests.length, 1, 'nothing else sent into an outage');
  });

  it('suppress unsubscribes from the channel; the list id comes from the settings', async () => {
    sim.reset();
    const results = await iterable.deliver(ctxFor(), [{ kind: 'suppress', person: jane }]);
    assert.deepEqual(results.map(outcome), ['ok']);
    assert.equal(sim.channelUnsubscribed.get('jane@example.com'), '1900');
    const none = await iterable.deliver(ctxFor({ suppressListId: undefined }), [{ kind: 'suppress', person: jane }]);
    assert.match(JSON.stringify(none[0]), /suppressListId is not set/);
  });

  it('erase deletes the user; erase: forget also refuses later data for them', async () => {
    sim.reset();
    const ctx = ctxFor();
    await iterable.deliver(ctx, [{ kind: 'upsertPerson', person: { email: 'Del+1@Example.com' }, attributes: { a: 1 }, timestamp: T }]);
    assert.equal(sim.users.has('del+1@example.com'), true);
    assert.deepEqual((await iterable.deliver(ctx, [{ kind: 'erasePerson', person: { email: 'del+1@example.com' } }])).map(outcome), ['ok']);
    assert.equal(sim.users.has('del+1@example.com'), false);
    const forget = ctxFor({ erase: 'forget' });
    assert.deepEqual((await iterable.deliver(forget, [{ kind: 'erasePerson', person: jane }])).map(outcome), ['ok']);
    assert.equal(sim.forgotten.has('jane@example.com'), true);
    const later = await iterable.deliver(ctx, [{ kind: 'upsertPerson', person: jane, attributes: { a: 2 }, timestamp: T }]);
    assert.match(JSON.stringify(later[0]), /forgotten/);
    assert.equal(outcome(later[0]), 'fail:rejected');
  });

  it('identifies by userId when identifyBy is id', async () => {
    sim.reset();
    const ctx = ctxFor({}, 'id');
    const results = await iterable.deliver(ctx, wonOps(jane, 'job-4'));
    assert.deepEqual(results.map(outcome), ['ok', 'ok', 'ok']);
    assert.deepEqual(sim.users.get('kommo-contact-7'), { email: 'jane@example.com', userId: 'kommo-contact-7', dataFields: { firstName: 'Jane', crmDealId: 42, dealValue: 9000, isCustomer: true, email: 'jane@example.com' } });
    assert.equal(sim.events[0]?.person, 'kommo-contact-7');
  });

  it('a field changing type is refused for that user only', async () => {
    sim.reset();
    await iterable.deliver(ctxFor(), [{ kind: 'upsertPerson', person: jane, attributes: { dealValue: 1000 }, timestamp: T }]);
    const results = await iterable.deliver(ctxFor(), [
      { kind: 'upsertPerson', person: { email: 'x@example.com' }, attributes: { dealValue: 'a lot' }, timestamp: T },
      { kind: 'upsertPerson', person: { email: 'y@example.com' }, attributes: { dealValue: 5 }, timestamp: T },
    ]);
    assert.deepEqual(results.map(outcome), ['fail:invalid', 'ok']);
    assert.match(JSON.stringify(results[0]), /invalidDataEmails/);
  });

  it('check() passes, and names the host and the region on a rejected key', async () => {
    await iterable.check(ctxFor());
    await assert.rejects(iterable.check(ctxFor({ apiKey: 'wrong' })), (err: Error) => err.message.includes(`Iterable rejected the API key at ${baseUrl}`) && /BadApiKey/.test(err.message));
    await assert.rejects(iterable.check(ctxFor({ baseUrl: 'http://127.0.0.1:9/api' })), /Could not reach Iterable at http:\/\/127\.0\.0\.1:9\/api/);
  });

  it('never logs a credential', () => {
    const text = mem.text();
    assert.match(text, /vendor request/);
    assert.ok(!text.includes(sim.credentials.apiKey), 'API key in the logs');
  });
});

describe('iterable within documented rate limits', () => {
  it('the simulator enforces bulkUpdate\'s 5 per second; the connector retries without a Retry-After', async () => {
    const { sim, app, baseUrl } = await mount({ documentedLimits: true });
    try {
      const ctx: DestinationContext<IterableSettings> = { name: 'iterable', settings: iterableSettings.parse(sim.settingsFor(baseUrl)), identifyBy: 'email', log: pino({ level: 'silent' }), timeoutMs: 2000 };
      // Within one second (the connector's own perSecond keeps real deliveries at 5/s).
      const start = Date.now();
      const results: ItemResult[] = [];
      for (let i = 0; i < 6; i++) results.push(...await iterable.deliver(ctx, [{ kind: 'upsertPerson', person: { email: `r${i}@example.com` }, attributes: {}, timestamp: T }]));
      if (Math.floor(Date.now() / 1000) !== Math.floor(start / 1000)) return; // crossed a second boundary: nothing to assert
      assert.deepEqual(results.map(outcome), ['ok', 'ok', 'ok', 'ok', 'ok', 'retry']);
      assert.equal((results[5] as { retry: { afterMs?: number } }).retry.afterMs, undefined);
      assert.equal(iterable.limits.perSecond, 5);
    } finally {
      await app.close();
    }
  });
});
