/**
 * The connector against its simulators over real HTTP (Fastify on port 0, mounted under a prefix).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import type { DestinationContext, ItemResult, SyncOp } from '../types.js';
import { authorization, postBatch, rudderstackBatchUrl } from './client.js';
import { rudderstack, segment } from './index.js';
import { LIBRARY_CONTEXT, sendBatches, type BatchPlan, type TrackingMessage } from './ops.js';
import { rudderstackSettings, segmentSettings, type RudderstackSettings, type SegmentSettings } from './settings.js';
import { rudderstackSimulator, segmentSimulator } from './simulator.js';

const T = 1_700_000_000_123;
const ann = { email: 'ann@example.com', id: 'kommo-contact-7' };
const MID = '01HF6Z3F2V5W4X7Y8Z9A0B1C2D';
const won: SyncOp[] = [
  { kind: 'upsertPerson', person: ann, attributes: { email: 'ann@example.com', 'company.name': 'Acme', customer: true, mrr: 1200 }, timestamp: T },
  { kind: 'groupAccount', person: ann, groupId: 'kommo-company-5', traits: { name: 'Acme' }, timestamp: T, messageId: '01HF6Z3F2V5W4X7Y8Z9A0B1C2E' },
  { kind: 'trackEvent', person: ann, name: 'Deal Won', properties: { deal_id: 42, amount: 1200 }, timestamp: T, messageId: MID },
];

function memoryLogger(): { log: Logger; text: () => string } {
  const lines: string[] = [];
  return { log: pino({ level: 'trace' }, { write: (s: string) => void lines.push(s) }), text: () => lines.join('') };
}
const kinds = (results: ItemResult[]) => results.map((r) => ('ok' in r ? 'ok' : 'fail' in r ? r.fail.code : 'retry'));

describe('segment against its simulator', () => {
  const sim = segmentSimulator();
  const eu = segmentSimulator({ region: 'eu' });
  let app: FastifyInstance;
  let mount = '';
  const mem = memoryLogger();
  const ctxFor = (extra: Partial<SegmentSettings> = {}, s = sim): DestinationContext<SegmentSettings> => ({
    name: 'segment',
    settings: { ...segmentSettings.parse(s.settingsFor(`${mount}/${s === sim ? 'seg' : 'eu'}`)), ...extra },
    identifyBy: 'email',
    log: mem.log,
    timeoutMs: 2000,
  });

  before(async () => {
    app = Fastify();
    await app.register(sim.plugin, { prefix: '/seg' });
    await app.register(eu.plugin, { prefix: '/eu' });
    mount = await app.listen({ port: 0, host: '127.0.0.1' });
  });
  after(() => app.close());

  it('sends identify, group and track in one /v1/batch request with Basic writeKey auth', async () => {
    sim.reset();
    assert.deepEqual(kinds(await segment.deliver(ctxFor(), won)), ['ok', 'ok', 'ok']);
    assert.equal(sim.requests.length, 1);
    const req = sim.requests[0]!;
    assert.equal(req.path, '/v1/batch');
    assert.equal(req.headers.authorization, authorization(sim.writeKey));
    assert.equal(req.headers['content-type'], 'application/json');
    const body = req.body as { batch: TrackingMessage[]; sentAt: string; writeKey?: string };
    assert.equal(body.writeKey, undefined, 'the key is not repeated in the body');
    assert.ok(Date.parse(body.sentAt) > T);
    assert.deepEqual(body.batch.map((m) => m.type), ['identify', 'group', 'track']);
    assert.deepEqual(sim.profiles.get('ann@example.com'), { email: 'ann@example.com', company: { name: 'Acme' }, customer: true, mrr: 1200 });
    assert.deepEqual(sim.groups.get('kommo-company-5')?.traits, { name: 'Acme' });
    const track = sim.messages.find((m) => m.type === 'track')!;
    assert.deepEqual([track.event, track.messageId, track.timestamp, track.properties], ['Deal Won', MID, new Date(T).toISOString(), { deal_id: 42, amount: 1200 }]);
    assert.deepEqual(track.context, LIBRARY_CONTEXT);
  });

  it('a retried delivery sends the same messageIds, and Segment drops the repeats', async () => {
    sim.reset();
    await segment.deliver(ctxFor(), won);
    const ids = sim.messages.map((m) => m.messageId);
    assert.deepEqual(kinds(await segment.deliver(ctxFor(), won)), ['ok', 'ok', 'ok']);
    assert.equal(sim.messages.length, 3, 'nothing applied twice');
    assert.deepEqual(sim.items.slice(3).map((i) => i.duplicate), [true, true, true]);
    assert.equal(new Set(ids).size, 3);
  });

  it('group: false answers groups ok without sending them', async () => {
    sim.reset();
    assert.deepEqual(kinds(await segment.deliver(ctxFor({ group: false }), won)), ['ok', 'ok', 'ok']);
    assert.deepEqual(sim.messages.map((m) => m.type), ['identify', 'track']);
  });

  it('fails a message over 32 KB alone, with the reason; the rest goes', async () => {
    sim.reset();
    const big: SyncOp = { kind: 'upsertPerson', person: ann, attributes: { notes: 'x'.repeat(40_000) }, timestamp: T };
    const results = await segment.deliver(ctxFor(), [won[2]!, big, won[0]!]);
    assert.deepEqual(kinds(results), ['ok', 'invalid', 'ok']);
    assert.match((results[1] as { fail: { reason: string } }).fail.reason, /identify message is \d+ bytes; Segment accepts at most 32000/);
    assert.equal(sim.messages.length, 2);
  });

  it('a batch Segment refuses whole (400) is split until the culprit fails alone', async () => {
    sim.reset();
    // Built by hand: planBatches would never send a 33 KB message.
    const message = (i: number, pad = ''): TrackingMessage => ({
      type: 'track', userId: `p${i}@example.com`, event: 'Stage Changed', properties: pad ? { pad } : {}, timestamp: new Date(T).toISOString(), messageId: `split-${i}`, context: LIBRARY_CONTEXT,
    });
    const batch = Array.from({ length: 6 }, (_, i) => message(i, i === 4 ? 'x'.repeat(33_000) : ''));
    const body = { batch, sentAt: new Date().toISOString() };
    const plan: BatchPlan = { requests: [{ body, opIndexes: [0, 1, 2, 3, 4, 5], bytes: Buffer.byteLength(JSON.stringify(body)) }], decided: new Map() };
    const ctx = ctxFor();
    const results = await sendBatches(plan, 6, (b) => postBatch(ctx, `${ctx.settings.baseUrl}/batch`, b), 'Segment');
    assert.deepEqual(kinds(results), ['ok', 'ok', 'ok', 'ok', 'invalid', 'ok']);
    assert.match((results[4] as { fail: { reason: string } }).fail.reason, /^Segment refused the message: HTTP 400/);
    assert.equal(sim.messages.length, 5);
    assert.ok(sim.requests.length <= 7, `${sim.requests.length} requests`);
  });

  it('packs a large delivery into requests within 500 KB and 2,500 messages', async () => {
    sim.reset();
    const ops: SyncOp[] = Array.from({ length: 3000 }, (_, i) => ({
      kind: 'trackEvent', person: { email: `p${i}@example.com` }, name: 'Stage Changed', properties: { deal_id: i, note: 'n'.repeat(i % 3 ? 40 : 400) }, timestamp: T, messageId: `burst-${i}`,
    }));
    const results = await segment.deliver(ctxFor(), ops);
    assert.ok(results.every((r) => 'ok' in r));
    assert.equal(sim.messages.length, 3000);
    assert.ok(sim.requests.length >= 2);
    for (const r of sim.requests) {
      assert.ok(Buffer.byteLength(JSON.stringify(r.body)) <= 500_000);
      assert.ok((r.body as { batch: unknown[] }).batch.length <= 2500);
    }
  });

  it('after a 429 the rest of the delivery is answered retry, unsent, with Retry-After', async () => {
    sim.reset();
    const ops: SyncOp[] = Array.from({ length: 40 }, (_, i) => ({
      kind: 'upsertPerson', person: { email: `p${i}@example.com` }, attributes: { notes: 'x'.repeat(30_000) }, timestamp: T,
    }));
    sim.faults.failNext(1, 429, 5);
    const results = await segment.deliver(ctxFor(), ops);
    assert.equal(sim.requests.length, 1);
    assert.ok(results.every((r) => 'retry' in r && r.retry.afterMs === 5000));
  });

  it('cannot tell a wrong write key: check() passes with a warning, the events are answered 200 and vanish', async () => {
    sim.reset();
    const wrong = ctxFor({ writeKey: 'a-wrong-write-key-of-some-length' });
    await segment.check(wrong);
    assert.match(mem.text(), /accepts any write key/);
    assert.deepEqual(kinds(await segment.deliver(wrong, won)), ['ok', 'ok', 'ok']);
    assert.equal(sim.messages.length, 0);
    assert.ok(sim.items.every((i) => !i.ok && /unknown write key/.test(i.reason ?? '')));
  });

  it('an EU workspace: its events vanish on the US host (the region warning), arrive on the EU host', async () => {
    eu.reset();
    const root = `${mount}/eu`;
    const onUs: SegmentSettings = segmentSettings.parse({ writeKey: eu.writeKey, baseUrl: eu.hosts(root).us });
    const ctx = (settings: SegmentSettings): DestinationContext<SegmentSettings> => ({ name: 'segment', settings, identifyBy: 'email', log: mem.log, timeoutMs: 2000 });
    assert.deepEqual(kinds(await segment.deliver(ctx(onUs), won)), ['ok', 'ok', 'ok']);
    assert.equal(eu.messages.length, 0);
    assert.match(eu.items[0]?.reason ?? '', /workspace lives in eu/);
    assert.match(segment.configWarnings?.(segmentSettings.parse({ writeKey: 'k' })).join() ?? '', /region is not set/);
    await segment.deliver(ctx(segmentSettings.parse({ writeKey: eu.writeKey, region: 'eu', baseUrl: eu.hosts(root).eu })), won);
    assert.equal(eu.messages.length, 3);
  });

  it('check() names an unreachable host', async () => {
    await assert.rejects(segment.check(ctxFor({ baseUrl: 'http://127.0.0.1:9/v1' })), /Could not reach Segment at http:\/\/127\.0\.0\.1:9\/v1\/batch/);
  });

  it('never logs the write key', () => {
    const text = mem.text();
    assert.match(text, /vendor request/);
    for (const s of [sim.writeKey, eu.writeKey, authorization(sim.writeKey).slice(6)]) assert.ok(!text.includes(s), 'credential in logs');
  });
});

describe('rudderstack against its simulator', () => {
  const sim = rudderstackSimulator();
  let app: FastifyInstance;
  let mount = '';
  const mem = memoryLogger();
  const ctxFor = (extra: Partial<RudderstackSettings> = {}): DestinationContext<RudderstackSettings> => ({
    name: 'rudder',
    settings: { ...rudderstackSettings.parse(sim.settingsFor(`${mount}/rs`)), ...extra },
    identifyBy: 'id',
    log: mem.log,
    timeoutMs: 2000,
  });

  before(async () => {
    app = Fastify();
    await app.register(sim.plugin, { prefix: '/rs' });
    mount = await app.listen({ port: 0, host: '127.0.0.1' });
  });
  after(() => app.close());

  it('sends to the data plane URL with its write key and reads the text OK', async () => {
    sim.reset();
    await rudderstack.check(ctxFor());
    assert.deepEqual(kinds(await rudderstack.deliver(ctxFor(), won)), ['ok', 'ok', 'ok']);
    const req = sim.requests.at(-1)!;
    assert.equal(`${mount}/rs${req.path}`, rudderstackBatchUrl(ctxFor().settings));
    assert.equal(req.headers.authorization, authorization(sim.writeKey));
    assert.deepEqual(sim.messages.map((m) => m.userId), ['kommo-contact-7', 'kommo-contact-7', 'kommo-contact-7'], 'identifyBy: id');
  });

  it('a wrong write key: check() throws, deliver() fails with auth', async () => {
    await assert.rejects(rudderstack.check(ctxFor({ writeKey: 'wrong' })), /RudderStack rejected the write key \(HTTP 401: Invalid Write Key\)/);
    assert.deepEqual(kinds(await rudderstack.deliver(ctxFor({ writeKey: 'wrong' }), won)), ['auth', 'auth', 'auth']);
  });

  it('a disabled source: check() says so, deliver() fails not_found', async () => {
    sim.setSourceEnabled(false);
    try {
      await assert.rejects(rudderstack.check(ctxFor()), /Source is disabled.*the source is disabled, or dataPlaneUrl is wrong/);
      assert.deepEqual(kinds(await rudderstack.deliver(ctxFor(), won)), ['not_found', 'not_found', 'not_found']);
    } finally {
      sim.setSourceEnabled(true);
    }
  });

  it('a batch the gateway refuses whole (400: a message without ids) is split until that message fails alone', async () => {
    sim.reset();
    const message = (i: number, userId: string): TrackingMessage => ({
      type: 'track', userId, event: 'Stage Changed', properties: {}, timestamp: new Date(T).toISOString(), messageId: `r-${i}`, context: LIBRARY_CONTEXT,
    });
    const batch = [message(0, 'a'), message(1, ''), message(2, 'c')];
    const body = { batch, sentAt: new Date().toISOString() };
    const plan: BatchPlan = { requests: [{ body, opIndexes: [0, 1, 2], bytes: Buffer.byteLength(JSON.stringify(body)) }], decided: new Map() };
    const ctx = ctxFor();
    const results = await sendBatches(plan, 3, (b) => postBatch(ctx, rudderstackBatchUrl(ctx.settings), b), 'RudderStack');
    assert.deepEqual(kinds(results), ['ok', 'invalid', 'ok']);
    assert.match((results[1] as { fail: { reason: string } }).fail.reason, /RudderStack refused the message: HTTP 400: Request neither has anonymousId nor userId/);
  });

  it('a 429 without Retry-After is a plain retry (the worker backs off)', async () => {
    sim.faults.failNext(1, 429);
    const [r] = await rudderstack.deliver(ctxFor(), [won[2]!]);
    assert.deepEqual(r, { retry: { reason: 'HTTP 429: Max Requests Limit reached' }, httpStatus: 429 });
  });

  it('never logs the write key', () => {
    assert.ok(!mem.text().includes(sim.writeKey));
  });
});
