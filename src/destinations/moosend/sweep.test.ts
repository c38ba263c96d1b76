import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { pino } from 'pino';
import type { DestinationContext, SyncOp } from '../types.js';
import { unsubscribeKey } from './inbound.js';
import { moosend } from './index.js';
import { moosendSettings, type MoosendSettings } from './settings.js';
import { moosendSimulator } from './simulator.js';
import { FIRST_LOOKBACK_MS, SKEW_MS, SWEEP_PAGE_SIZE, sweepUnsubscribes } from './sweep.js';

const MIN = 60_000;

describe('moosend unsubscribe sweep', () => {
  const sim = moosendSimulator();
  let app: FastifyInstance;
  let baseUrl = '';
  const ctx = (lists?: Record<string, string>, extra: Partial<MoosendSettings> = {}): DestinationContext<MoosendSettings> => ({
    name: 'mo',
    settings: { ...moosendSettings.parse(sim.settingsFor(baseUrl)), ...extra },
    identifyBy: 'email',
    log: pino({ level: 'silent' }),
    timeoutMs: 2000,
    ...(lists ? { lists } : {}),
  });
  const subscribe = async (list: string, emails: string[]) => {
    const ops: SyncOp[] = emails.map((email) => ({ kind: 'addToList', person: { email }, listId: list, attributes: {} }));
    const results = await moosend.deliver(ctx(), ops);
    assert.ok(results.every((r) => 'ok' in r));
  };

  before(async () => {
    app = Fastify();
    await app.register(sim.plugin, { prefix: '/moosend' });
    baseUrl = `${await app.listen({ port: 0, host: '127.0.0.1' })}/moosend`;
  });
  after(() => app.close());
  beforeEach(() => sim.reset());

  it('reports who unsubscribed since the cursor, once per person, with the webhook\'s dedup key', async () => {
    const now = Date.now();
    await subscribe('L-demo', ['ann@example.com', 'bob@example.com', 'cid@example.com']);
    await subscribe('L-prop', ['ann@example.com']);
    sim.unsubscribeMember('L-demo', 'ann@example.com', now - 5 * MIN);
    sim.unsubscribeMember('L-prop', 'ann@example.com', now - 4 * MIN);
    sim.unsubscribeMember('L-demo', 'bob@example.com', now - 3 * 3_600_000);
    const { events, cursor } = await sweepUnsubscribes(ctx({ 'Demo scheduled': 'L-demo', 'Proposal sent': 'L-prop' }), new Date(now - 60 * MIN).toISOString(), now);
    assert.deepEqual(events.map((e) => [e.dedupKey, e.event.kind, e.event.email, e.event.occurredAt, e.event.source]), [
      [unsubscribeKey('mo', 'ann@example.com'), 'email.unsubscribed', 'ann@example.com', now - 5 * MIN, 'mo'],
    ]);
    assert.match(events[0]!.event.detail!, /list L-demo/);
    // The next window starts one interval (10 m) plus the skew before this run.
    assert.equal(cursor, new Date(now - 10 * MIN - SKEW_MS).toISOString());
  });

  it('the first run looks back a day, not through the account\'s history', async () => {
    const now = Date.now();
    await subscribe('L1', ['recent@example.com', 'old@example.com']);
    sim.unsubscribeMember('L1', 'recent@example.com', now - FIRST_LOOKBACK_MS + MIN);
    sim.unsubscribeMember('L1', 'old@example.com', now - FIRST_LOOKBACK_MS - MIN);
    const { events } = await sweepUnsubscribes(ctx({ Qualified: 'L1' }), null, now);
    assert.deepEqual(events.map((e) => e.event.email), ['recent@example.com']);
  });

  it('pages through every unsubscribed member (the listing is not sorted by unsubscribe time)', async () => {
    const emails = Array.from({ length: SWEEP_PAGE_SIZE * 2 + 10 }, (_, i) => `p${i}@example.com`);
    await subscribe('L-big', emails);
    const now = Date.now();
    // The earliest subscribers (last pages: newest subscription first) unsubscribed most recently.
    emails.forEach((e, i) => sim.unsubscribeMember('L-big', e, i < 5 ? now - MIN : now - 30 * 3_600_000));
    const before = sim.requests.length;
    const { events } = await sweepUnsubscribes(ctx({ Big: 'L-big' }), new Date(now - 60 * MIN).toISOString(), now);
    assert.deepEqual(events.map((e) => e.event.email).sort(), emails.slice(0, 5).sort());
    assert.deepEqual(sim.requests.slice(before).map((r) => r.path), Array(3).fill('/v3/lists/L-big/subscribers/Unsubscribed.json'));
  });

  it('sweeps the automation lists too; skips a list Moosend does not know; nothing mapped reads nothing', async () => {
    await subscribe('L-won', ['won@example.com']);
    sim.unsubscribeMember('L-won', 'won@example.com');
    const { events } = await sweepUnsubscribes(ctx({ Gone: 'no-such-list' }, { automations: { 'lead.won': 'L-won' } }), null);
    assert.deepEqual(events.map((e) => e.event.email), ['won@example.com']);
    const before = sim.requests.length;
    assert.deepEqual((await sweepUnsubscribes(ctx({}), null)).events, []);
    assert.equal(sim.requests.length, before);
  });

  it('without the common lists in its context, sweeps every list of the account', async () => {
    await subscribe('L-a', ['a@example.com']);
    await subscribe('L-b', ['b@example.com']);
    sim.unsubscribeMember('L-b', 'b@example.com');
    const { events } = await sweepUnsubscribes(ctx(), null);
    assert.deepEqual(events.map((e) => e.event.email), ['b@example.com']);
  });

  it('fails the run (the sweeper keeps the cursor) when Moosend fails', async () => {
    sim.faults.failNext(1, 503);
    await assert.rejects(sweepUnsubscribes(ctx({ Q: 'L-x' }), null), /sweep of list L-x failed: HTTP 503/);
    sim.rateLimitNext(1);
    await assert.rejects(sweepUnsubscribes(ctx({ Q: 'L-x' }), null), /RATE-LIMITING/);
  });

  it('runs at the configured interval; 0 turns it off', () => {
    assert.equal(moosend.sweep.intervalMs(moosendSettings.parse({ apiKey: 'k' })), 600_000);
    assert.equal(moosend.sweep.intervalMs(moosendSettings.parse({ apiKey: 'k', unsubscribeSweep: 0 })), 0);
  });
});
