import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import type { DestinationContext, ItemResult, SyncOp } from '../types.js';
import { scrubKey } from './client.js';
import { moosend } from './index.js';
import { moosendSettings, type MoosendSettings } from './settings.js';
import { moosendSimulator, type MoosendSimOptions, type MoosendSimulator } from './simulator.js';

function memoryLogger(): { log: Logger; text: () => string } {
  const lines: string[] = [];
  return { log: pino({ level: 'trace' }, { write: (s: string) => void lines.push(s) }), text: () => lines.join('') };
}

const outcome = (r: ItemResult) => ('ok' in r ? 'ok' : 'retry' in r ? 'retry' : `fail:${r.fail.code}`);
const add = (email: string, listId: string, attributes: Record<string, string | number> = {}): SyncOp => ({ kind: 'addToList', person: { email }, listId, attributes });

/** The simulator on a real port, under a path prefix, and contexts pointing at it. */
function harness(simOptions: MoosendSimOptions = {}) {
  const sim: MoosendSimulator = moosendSimulator(simOptions);
  const mem = memoryLogger();
  let app: FastifyInstance;
  let baseUrl = '';
  const t = {
    sim,
    mem,
    ctx: (extra: Partial<MoosendSettings> = {}, lists?: Record<string, string>): DestinationContext<MoosendSettings> => ({
      name: 'moosend',
      settings: { ...moosendSettings.parse(sim.settingsFor(baseUrl)), ...extra },
      identifyBy: 'email',
      log: mem.log,
      timeoutMs: 2000,
      ...(lists ? { lists } : {}),
    }),
  };
  before(async () => {
    app = Fastify();
    await app.register(sim.plugin, { prefix: '/moosend' });
    baseUrl = `${await app.listen({ port: 0, host: '127.0.0.1' })}/moosend`;
  });
  after(() => app.close());
  return t;
}

describe('moosend against its simulator', () => {
  const t = harness();
  const { sim } = t;
  beforeEach(() => sim.reset());

  it('subscribes with the custom fields; the same subscription again changes nothing', async () => {
    const list = sim.createList('Demo scheduled', { fields: ['KommoStage', 'DealValue'] });
    const op = add('Ann@Example.com', list.id, { Name: 'Ann Lee', KommoStage: 'Demo scheduled', DealValue: 1200, Unknown: 'x' });
    assert.deepEqual((await moosend.deliver(t.ctx(), [op])).map(outcome), ['ok']);
    const m = sim.member(list.id, 'ann@example.com')!;
    assert.equal(m.subscribeType, 1);
    assert.equal(m.name, 'Ann Lee');
    assert.deepEqual(Object.fromEntries(m.fields), { KommoStage: 'Demo scheduled', DealValue: '1200' });
    assert.equal(m.externalOptIn, true, 'doubleOptIn: false flags the opt-in as given elsewhere');
    assert.deepEqual(sim.ignoredFields, [{ list: list.id, email: 'ann@example.com', field: 'Unknown' }]);
    assert.deepEqual((await moosend.deliver(t.ctx(), [op])).map(outcome), ['ok']);
    assert.equal(list.members.size, 1, 'an upsert by email: no duplicate');
    assert.deepEqual(sim.items.map((i) => [i.kind, i.ok, i.duplicate ?? false]), [['addToList', true, false], ['addToList', true, true]]);
    assert.deepEqual(sim.requests.map((r) => r.path), [`/v3/subscribers/${list.id}/subscribe.json`, `/v3/subscribers/${list.id}/subscribe.json`]);
  });

  it('sends many people for one list in one subscribe_many, and fails only the addresses Moosend ignores', async () => {
    const ops = Array.from({ length: 300 }, (_, i) => add(`p${i}@example.com`, 'L-bulk', { KommoStage: 'Proposal sent' }));
    // Passes our loose check, but not Moosend's.
    ops[7] = add('broken@nodot', 'L-bulk');
    const results = await moosend.deliver(t.ctx(), ops);
    assert.equal(sim.requests.length, 1);
    assert.equal(sim.requests[0]!.path, '/v3/subscribers/L-bulk/subscribe_many.json');
    assert.deepEqual(results.map(outcome).filter((o) => o !== 'ok'), ['fail:invalid']);
    assert.equal(outcome(results[7]!), 'fail:invalid');
    assert.equal(sim.lists.get('L-bulk')!.members.size, 299);
  });

  it('asks Moosend to confirm where doubleOptIn says so, per stage', async () => {
    await moosend.deliver(t.ctx({ doubleOptIn: { 'Demo scheduled': true } }, { 'Demo scheduled': 'L-demo', 'Proposal sent': 'L-prop' }), [add('a@example.com', 'L-demo'), add('a@example.com', 'L-prop')]);
    assert.equal(sim.member('L-demo', 'a@example.com')!.externalOptIn, false);
    assert.equal(sim.member('L-prop', 'a@example.com')!.externalOptIn, true);
  });

  it('removes (not unsubscribes) from the previous list, one or many', async () => {
    await moosend.deliver(t.ctx(), [add('a@example.com', 'L1'), add('b@example.com', 'L1'), add('c@example.com', 'L2')]);
    const results = await moosend.deliver(t.ctx(), [
      { kind: 'removeFromList', person: { email: 'a@example.com' }, listId: 'L1' },
      { kind: 'removeFromList', person: { email: 'b@example.com' }, listId: 'L1' },
      { kind: 'removeFromList', person: { email: 'c@example.com' }, listId: 'L2' },
      { kind: 'removeFromList', person: { email: 'nobody@example.com' }, listId: 'L2' },
    ]);
    assert.deepEqual(results.map(outcome), ['ok', 'ok', 'ok', 'ok']);
    assert.equal(sim.member('L1', 'a@example.com')!.subscribeType, 4, 'Removed: the sweep does not read it as an opt-out');
    assert.equal(sim.member('L2', 'c@example.com')!.subscribeType, 4);
    assert.deepEqual(sim.requests.slice(-2).map((r) => r.path), ['/v3/subscribers/L1/remove_many.json', '/v3/subscribers/L2/remove_many.json']);
  });

  it('suppress unsubscribes from the whole account in one request', async () => {
    await moosend.deliver(t.ctx(), [add('a@example.com', 'L1')]);
    await moosend.deliver(t.ctx(), [add('a@example.com', 'L2')]);
    const before = sim.requests.length;
    assert.deepEqual((await moosend.deliver(t.ctx(), [{ kind: 'suppress', person: { email: 'A@example.com' } }])).map(outcome), ['ok']);
    assert.deepEqual(sim.requests.slice(before).map((r) => [r.path, r.body]), [['/v3/subscribers/unsubscribe.json', { Email: 'a@example.com' }]]);
    assert.equal(sim.member('L1', 'a@example.com')!.subscribeType, 2);
    assert.equal(sim.member('L2', 'a@example.com')!.subscribeType, 2);
    assert.ok(sim.suppressed.has('a@example.com'));
  });

  it('erase removes the person from every list of the account, mapped or not', async () => {
    await moosend.deliver(t.ctx(), [add('gone@example.com', 'L1'), add('stay@example.com', 'L1')]);
    await moosend.deliver(t.ctx(), [add('gone@example.com', 'L2')]);
    sim.createList('Unrelated newsletter');
    const results = await moosend.deliver(t.ctx({}, { Qualified: 'L1' }), [{ kind: 'erasePerson', person: { email: 'gone@example.com' } }]);
    assert.deepEqual(results.map(outcome), ['ok']);
    assert.equal(sim.member('L1', 'gone@example.com')!.subscribeType, 4);
    assert.equal(sim.member('L2', 'gone@example.com')!.subscribeType, 4);
    assert.equal(sim.member('L1', 'stay@example.com')!.subscribeType, 1);
    assert.ok(sim.items.some((i) => i.kind === 'erasePerson' && i.person === 'gone@example.com' && i.ok));
  });

  it('classifies by the envelope: a bad key inside HTTP 200 fails auth, and nothing more is sent', async () => {
    const results = await moosend.deliver(t.ctx({ apiKey: 'not-the-key-0000' }), [add('a@example.com', 'L1'), add('b@example.com', 'L2'), { kind: 'suppress', person: { email: 'c@example.com' } }]);
    assert.deepEqual(results.map(outcome), ['fail:auth', 'fail:auth', 'fail:auth']);
    assert.equal(sim.requests.length, 1);
    assert.equal(sim.requests[0]!.status, 200);
    await assert.rejects(moosend.check(t.ctx({ apiKey: 'not-the-key-0000' })), /rejected the API key.*104 API_KEY_NOT_VALID/);
  });

  it('a rate-limit envelope with HTTP 200 retries after the 10 s window and stops only that endpoint', async () => {
    sim.rateLimitNext(1);
    const results = await moosend.deliver(t.ctx(), [
      add('a@example.com', 'L1'),
      add('b@example.com', 'L2'),
      { kind: 'suppress', person: { email: 'c@example.com' } },
    ]);
    assert.deepEqual(results.map((r) => ('retry' in r ? `retry:${r.retry.afterMs}` : outcome(r))), ['retry:10000', 'retry:10000', 'ok']);
    assert.equal(sim.throttled, 1);
    assert.deepEqual(sim.requests.map((r) => [r.path, r.status]), [['/v3/subscribers/L1/subscribe.json', 200], ['/v3/subscribers/unsubscribe.json', 200]]);
  });

  it('check() names a mapped list or automation list that does not exist', async () => {
    const list = sim.createList('Proposal sent');
    await moosend.check(t.ctx({}, { 'Proposal sent': list.id }));
    await assert.rejects(
      moosend.check(t.ctx({ automations: { 'lead.won': 'no-such-list' } }, { 'Proposal sent': list.id, 'Demo scheduled': 'deleted-list' })),
      /no mailing list deleted-list \(lists\."Demo scheduled"\), no-such-list \(automations\.lead\.won\); the account's lists: .*Proposal sent \(/,
    );
  });

  it('keeps the API key out of logs and reasons, even if Moosend echoed it', async () => {
    await moosend.deliver(t.ctx(), [add('a@example.com', 'L1')]);
    const key = sim.credentials.apiKey;
    assert.ok(t.mem.text().includes('apikey=redacted'), 'requests are logged, with the key masked');
    assert.ok(!t.mem.text().includes(key));
    assert.deepEqual(scrubKey({ Code: 104, Error: `key ${key} is not valid`, Context: [key] }, key), { Code: 104, Error: 'key [redacted] is not valid', Context: ['[redacted]'] });
  });
});

describe('moosend against a strict simulator', () => {
  const t = harness({ strictLists: true, rateLimits: true });
  const { sim } = t;
  beforeEach(() => sim.reset());

  it('an unknown list is LIST_NOT_FOUND: fail not_found, not retried', async () => {
    const [r] = await moosend.deliver(t.ctx(), [add('a@example.com', 'no-such-list')]);
    assert.ok(r && 'fail' in r && r.fail.code === 'not_found', JSON.stringify(r));
    assert.match(r.fail.reason, /Code 200 LIST_NOT_FOUND/);
  });

  it('Moosend\'s own windows: a third bulk subscribe within 10 s is throttled, the rest of the delivery goes on', async () => {
    const list = sim.createList('Bulk');
    const batch = (n: number) => [add(`x${n}@example.com`, list.id), add(`y${n}@example.com`, list.id)];
    assert.deepEqual((await moosend.deliver(t.ctx(), batch(1))).map(outcome), ['ok', 'ok']);
    assert.deepEqual((await moosend.deliver(t.ctx(), batch(2))).map(outcome), ['ok', 'ok']);
    const third = await moosend.deliver(t.ctx(), [...batch(3), add('single@example.com', sim.createList('Other').id)]);
    assert.deepEqual(third.map(outcome), ['retry', 'retry', 'ok'], 'the single subscribe has its own window');
    assert.equal(sim.throttled, 1);
  });
});
