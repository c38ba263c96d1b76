/**
 * A destination down for a while (500s, then no answer at all) while the others keep working:
 * - the other destinations keep receiving everything, on time;
 * - the service does not spin (its CPU stays low: one probe at a time, no hot loop);
 * - after recovery everything queued for the sick destination drains within seconds;
 * - with a short max age, jobs older than it end in dead letters with the reason.
 * Every registered destination takes its turn as the sick one (OUTAGE_SECONDS each, 12 by default;
 * RELIABILITY_HEAVY=1 runs them for 60 s).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { startWorld, type World } from '../../src/demo/world.js';
import { destinationTypes, getDestination, registerDestination } from '../../src/destinations/index.js';
import { startService, type Service } from '../../src/runtime/service.js';
import { fake } from '../kit/fake-destination/index.js';
import { waitFor } from '../integration/wait.js';

registerDestination(fake);

const HEAVY = process.env.RELIABILITY_HEAVY === '1';
const OUTAGE_S = Number(process.env.OUTAGE_SECONDS ?? (HEAVY ? 60 : 12));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('a destination outage', () => {
  let world: World;
  let service: Service;
  let n = 0;
  const stages = ['Qualified', 'Demo scheduled', 'Proposal sent', 'Negotiation'];

  before(async () => {
    world = await startWorld({ overrides: { server: { port: 0, host: '127.0.0.1' }, log: { level: 'silent' }, worker: { poll: '50ms', backoff: { base: '1s', factor: 4, max: '64s' } } } });
    service = await startService({ loaded: world.loaded, log: pino({ level: 'silent' }), intake: true, work: true, port: 0, host: '127.0.0.1' });
    world.subscribe(service.url!);
  });
  after(async () => {
    await service?.close();
    await world?.close();
  });

  /** One new lead moved to a stage; returns its email. */
  async function traffic(): Promise<string> {
    const k = world.kommo;
    const email = `outage${n}@example.com`;
    const c = k.createContact({ name: `Outage ${n}`, email });
    const lead = k.createLead({ name: `Outage deal ${n}`, contactIds: [c.id] });
    k.moveLead(lead.id, k.status(stages[n % stages.length]!).id);
    n++;
    await k.flushWebhooks();
    return email;
  }
  const reached = (type: string, email: string) => world.vendors.get(type)!.sim.items.some((i) => i.ok && i.person === email);

  for (const sick of destinationTypes().filter((t) => getDestination(t)!.supports.upsertPerson || getDestination(t)!.supports.addToList)) {
    it(`${sick} fails (500s, then no answer): the others keep flowing, no hot loop, everything drains after recovery`, { timeout: (OUTAGE_S * 3 + 90) * 1000 }, async () => {
      const sim = world.vendors.get(sick)!.sim;
      const others = [...world.vendors.keys()].filter((t) => t !== sick);
      const sent: string[] = [];
      const cpu0 = process.cpuUsage();
      const t0 = Date.now();
      sim.faults.outage({ status: 500 });
      let mode: 'errors' | 'timeouts' = 'errors';
      while (Date.now() - t0 < OUTAGE_S * 1000) {
        if (mode === 'errors' && Date.now() - t0 > (OUTAGE_S * 1000) / 2) {
          sim.faults.outage('timeout');
          mode = 'timeouts';
        }
        const email = await traffic();
        sent.push(email);
        // The healthy destinations get it promptly, outage or not.
        for (const t of others) await waitFor(() => reached(t, email), `${t} got ${email} during ${sick}'s outage`, 10_000);
        await sleep(500);
      }
      const cpuShare = (() => {
        const u = process.cpuUsage(cpu0);
        return (u.user + u.system) / 1000 / (Date.now() - t0);
      })();
      // Simulators, intake, the other deliveries and this test share this process; a hot retry loop
      // against the sick destination would take a whole core.
      assert.ok(cpuShare < 0.5, `the process used ${(cpuShare * 100).toFixed(0)}% of a core during the outage`);
      const before = sim.requests.length;
      sim.faults.outage(null);
      const recovered = Date.now();
      await waitFor(() => sent.every((e) => reached(sick, e)), `${sick} got every lead after recovery`, 60_000);
      const drainMs = Date.now() - recovered;
      assert.ok(drainMs < 15_000, `${sick} drained ${drainMs} ms after recovery`);
      assert.ok(sim.requests.length > before);
      await waitFor(async () => {
        const s = await service.store.stats(Date.now());
        return s.inboxPending === 0 && s.jobs.pending === 0 && s.jobs.leased === 0;
      }, 'queue idle', 30_000);
      assert.equal((await service.store.stats(Date.now())).jobs.dead, 0);
    });
  }
});

it('jobs older than the max age end in dead letters with the reason', { timeout: 120_000 }, async () => {
  const world = await startWorld({ destinations: ['customerio'], overrides: { server: { port: 0, host: '127.0.0.1' }, log: { level: 'silent' }, worker: { poll: '50ms', maxAge: '3s', backoff: { base: '500ms', factor: 2, max: '1s' } } } });
  const service = await startService({ loaded: world.loaded, log: pino({ level: 'silent' }), intake: true, work: true, port: 0, host: '127.0.0.1' });
  try {
    world.subscribe(service.url!);
    const sim = world.vendors.get('customerio')!.sim;
    sim.faults.outage({ status: 503 });
    const k = world.kommo;
    const c = k.createContact({ name: 'Old Job', email: 'old.job@example.com' });
    k.createLead({ name: 'Old job deal', contactIds: [c.id] });
    await k.flushWebhooks();
    await waitFor(async () => (await service.store.listJobs({ state: 'dead', destination: `${world.account}/customerio` })).length > 0, 'a dead letter', 60_000);
    const [dead] = await service.store.listJobs({ state: 'dead', destination: `${world.account}/customerio` });
    assert.match(dead!.lastError!, /gave up after .* \(max age\): HTTP 503/);
    sim.faults.outage(null);
  } finally {
    await service.close();
    await world.close();
  }
});
