/**
 * A burst into Segment through the real service: 2,000 leads change stage at once; every event goes
 * out through /v1/batch in few requests, each within Segment's limits (500 KB, 2,500 messages,
 * 32 KB per message), and each stage change arrives exactly once.
 */
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import pino from 'pino';
import { startWorld, type World } from '../../src/demo/world.js';
import type { SegmentSimulator } from '../../src/destinations/segment/simulator.js';
import { startService, type Service } from '../../src/runtime/service.js';
import { waitFor } from './wait.js';

const EVENTS = 2000;
let world: World;
let service: Service;

before(async () => {
  world = await startWorld({ destinations: ['segment'] });
  service = await startService({ loaded: world.loaded, log: pino({ level: 'silent' }), intake: true, work: true, port: 0, host: '127.0.0.1' });
});
after(async () => {
  await service?.close();
  await world?.close();
});

it(`${EVENTS} stage changes go out in batches within the size limits, each once`, { timeout: 180_000 }, async () => {
  const seg = world.vendors.get('segment')!.sim as SegmentSimulator;
  const k = world.kommo;
  // Created before the subscription, so only the moves send webhooks.
  const leads = Array.from({ length: EVENTS }, (_, i) => {
    const c = k.createContact({ name: `Person ${i}`, email: `person${i}@example.com` });
    return k.createLead({ name: `Deal ${i}`, price: 1000 + i, contactIds: [c.id], fields: { Industry: 'SaaS', Source: i % 2 ? 'Website' : 'Referral' } }).id;
  });
  world.subscribe(service.url!);
  seg.reset();
  const target = k.status('Negotiation').id;
  for (const id of leads) k.moveLead(id, target);
  await k.flushWebhooks();
  const tracked = () => new Set(seg.messages.filter((m) => m.type === 'track' && m.event === 'Stage Changed').map((m) => m.userId));
  await waitFor(() => tracked().size === EVENTS, 'every stage change reached Segment', 150_000);
  await waitFor(async () => {
    const s = await service.store.stats(Date.now());
    return s.inboxPending === 0 && s.jobs.pending === 0 && s.jobs.leased === 0;
  }, 'queue drained', 60_000);

  const stageChanges = seg.messages.filter((m) => m.type === 'track' && m.event === 'Stage Changed');
  assert.equal(stageChanges.length, EVENTS, 'each stage change once');
  assert.ok(seg.items.every((i) => i.ok), 'nothing dropped');
  for (const r of seg.requests) {
    const body = r.body as { batch: unknown[] };
    assert.equal(r.path, '/v1/batch');
    assert.equal(r.status, 200);
    assert.ok(Buffer.byteLength(JSON.stringify(body)) <= 500_000, 'request within 500 KB');
    assert.ok(body.batch.length <= 2500, 'at most 2,500 messages');
    for (const m of body.batch) assert.ok(Buffer.byteLength(JSON.stringify(m)) <= 32_000);
  }
  const perEvent = seg.requests.length / EVENTS;
  const sizes = seg.requests.map((r) => (r.body as { batch: unknown[] }).batch.length);
  process.stdout.write(`# segment burst: ${seg.requests.length} requests for ${EVENTS} events (${perEvent.toFixed(4)} per event), ${seg.messages.length} messages, batch sizes ${Math.min(...sizes)}..${Math.max(...sizes)}\n`);
  // The lead engineer's bench target is 0.01; here the webhooks trickle in one by one, so claims are
  // smaller than in a backlog. A loose bound keeps batching honest without making the test flaky.
  assert.ok(perEvent <= 0.05, `${perEvent} requests per event`);
});
