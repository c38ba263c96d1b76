/**
 * Overload: 429 storms with Retry-After from every destination, and a Kommo that allows fewer
 * requests than configured. Nothing is lost, Retry-After is honoured (no request to a destination
 * before its Retry-After ran out), and Kommo never blocks the account (no 403) — it sees no more than
 * its limit in any second once it said so. (Three processes and restarts: test/integration/
 * scale-out.test.ts and restart.test.ts.)
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import pino from 'pino';
import { startWorld } from '../../src/demo/world.js';
import { registerDestination } from '../../src/destinations/index.js';
import { startService } from '../../src/runtime/service.js';
import { fake } from '../kit/fake-destination/index.js';
import { waitFor } from '../integration/wait.js';

registerDestination(fake);

it('429 storms with Retry-After from every destination: honoured, nothing lost', { timeout: 180_000 }, async () => {
  const world = await startWorld({ overrides: { server: { port: 0, host: '127.0.0.1' }, log: { level: 'silent' }, worker: { poll: '50ms' } } });
  const service = await startService({ loaded: world.loaded, log: pino({ level: 'silent' }), intake: true, work: true, port: 0, host: '127.0.0.1' });
  try {
    world.subscribe(service.url!);
    const k = world.kommo;
    // Every destination answers its next 3 requests 429 with Retry-After: 2.
    for (const v of world.vendors.values()) v.sim.faults.failNext(3, 429, 2);
    const emails = Array.from({ length: 30 }, (_, i) => `storm${i}@example.com`);
    // Created in a stage every destination acts on (Moosend only has lists for the demo's open stages).
    for (const email of emails) k.createLead({ name: email, statusId: k.status('Qualified').id, contactIds: [k.createContact({ name: email, email }).id] });
    await k.flushWebhooks();
    for (const [type, v] of world.vendors) {
      await waitFor(() => emails.every((e) => v.sim.items.some((i) => i.ok && i.person === e)), `${type} got everyone after the storm`, 90_000);
      const answers = v.sim.requests;
      const storm = answers.filter((r) => r.status === 429);
      assert.ok(storm.length >= 1, `${type} answered 429`);
      // After each 429 the next request to that endpoint came no sooner than Retry-After (2 s).
      // (Per endpoint: some vendors, e.g. Iterable, limit each endpoint on its own.)
      for (const r of storm) {
        const next = answers.find((x) => x.at > r.at && x.path === r.path);
        if (next) assert.ok(next.at - r.at >= 1900, `${type}: next ${r.path} ${next.at - r.at} ms after a 429 with Retry-After: 2`);
      }
    }
    assert.equal((await service.store.stats(Date.now())).jobs.dead, 0);
  } finally {
    await service.close();
    await world.close();
  }
});

it('a Kommo that allows 3 requests/s while the config says 7: its 429s slow us down, it never blocks us, nothing is lost', { timeout: 180_000 }, async () => {
  const world = await startWorld({ destinations: ['customerio'], kommoRateLimit: 3, overrides: { server: { port: 0, host: '127.0.0.1' }, log: { level: 'silent' }, worker: { poll: '50ms', batchSize: 1 } } });
  const service = await startService({ loaded: world.loaded, log: pino({ level: 'silent' }), intake: true, work: true, port: 0, host: '127.0.0.1' });
  try {
    world.subscribe(service.url!);
    const k = world.kommo;
    const leads = Array.from({ length: 20 }, (_, i) => k.createLead({ name: `Crowded ${i}`, contactIds: [k.createContact({ name: `C${i}`, email: `crowded${i}@example.com` }).id] }).id);
    await k.flushWebhooks();
    // One note per job and batch size 1: many writes, paced by Kommo's 429s.
    for (const id of leads) k.moveLead(id, k.status('Negotiation').id);
    await k.flushWebhooks();
    await waitFor(() => leads.every((id) => [...k.notes.values()].some((n) => n.entity_id === id && String(n.params.text).includes('Negotiation'))), 'every note written', 150_000);
    assert.equal(k.blocked, false, 'Kommo never blocked the account');
    assert.equal(k.requests.filter((r) => r.status === 403).length, 0);
    assert.ok(k.requests.some((r) => r.status === 429), 'Kommo did push back');
    assert.equal((await service.store.stats(Date.now())).jobs.dead, 0);
  } finally {
    await service.close();
    await world.close();
  }
});
