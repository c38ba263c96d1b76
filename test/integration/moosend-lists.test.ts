/**
 * Moosend list membership over real HTTP, with `leaveLists: remove`: moving a lead moves the
 * person from the previous stage's list to the next; a burst of stage entries goes through
 * subscribe_many, at few Moosend requests per event; an opt-out in another tool suppresses the
 * person in Moosend's whole account.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { parse, stringify } from 'yaml';
import { parseConfigText } from '../../src/config/load.js';
import { startWorld, type World } from '../../src/demo/world.js';
import type { CustomerioSimulator } from '../../src/destinations/customerio/simulator.js';
import type { MoosendSimulator } from '../../src/destinations/moosend/simulator.js';
import { startService, type Service } from '../../src/runtime/service.js';
import { waitFor } from './wait.js';

describe('Moosend lists with leaveLists: remove', () => {
  let world: World;
  let service: Service;
  let sim: MoosendSimulator;
  let lists: Record<string, string>;

  before(async () => {
    world = await startWorld({ destinations: ['moosend', 'customerio'] });
    const cfg = parse(world.yaml) as { accounts: { acme: { destinations: { moosend: { lists: Record<string, string>; leaveLists?: string } } } } };
    cfg.accounts.acme.destinations.moosend.leaveLists = 'remove';
    lists = cfg.accounts.acme.destinations.moosend.lists;
    const loaded = parseConfigText(stringify(cfg), 'moosend-lists.yaml', {});
    service = await startService({ loaded, log: pino({ level: 'silent' }), intake: true, work: true, port: 0, host: '127.0.0.1' });
    world.subscribe(service.url!);
    sim = world.vendors.get('moosend')!.sim as MoosendSimulator;
  });
  after(async () => {
    await service?.close();
    await world?.close();
  });

  const drained = async (timeoutMs = 15_000) => {
    await waitFor(async () => {
      const s = await service.store.stats(Date.now());
      return s.inboxPending === 0 && s.jobs.pending === 0 && s.jobs.leased === 0;
    }, 'inbox and queue drained', timeoutMs);
  };

  it('moving a lead moves the person from the previous stage\'s list to the next', async () => {
    const k = world.kommo;
    const c = k.createContact({ name: 'Lin Mover', email: 'lin@example.com' });
    const l = k.createLead({ name: 'Move deal', price: 700, contactIds: [c.id], statusId: k.status('Qualified').id });
    await k.flushWebhooks();
    await waitFor(() => sim.member(lists.Qualified!, 'lin@example.com')?.subscribeType === 1, 'in the Qualified list');
    await drained();
    k.moveLead(l.id, k.status('Demo scheduled').id);
    await k.flushWebhooks();
    await waitFor(() => sim.member(lists['Demo scheduled']!, 'lin@example.com')?.subscribeType === 1, 'in the Demo scheduled list');
    await waitFor(() => sim.member(lists.Qualified!, 'lin@example.com')?.subscribeType === 4, 'removed from the Qualified list');
    assert.equal(sim.member(lists.Qualified!, 'lin@example.com')!.unsubscribedOn, null, 'removed, not unsubscribed: no opt-out for the sweep to find');
    // Won is not a mapped stage: the person leaves the last list and joins none.
    k.moveLead(l.id, 142);
    await k.flushWebhooks();
    await waitFor(() => sim.member(lists['Demo scheduled']!, 'lin@example.com')?.subscribeType === 4, 'removed from the Demo scheduled list on a win');
  });

  it('a burst of stage entries goes through subscribe_many, at few requests per event', { timeout: 120_000 }, async (t) => {
    const k = world.kommo;
    const n = 200;
    const leads: number[] = [];
    for (let i = 0; i < n; i++) {
      const c = k.createContact({ name: `Burst ${i}`, email: `burst${i}@example.com` });
      leads.push(k.createLead({ name: `Burst deal ${i}`, price: 1000 + i, contactIds: [c.id] }).id);
    }
    await k.flushWebhooks();
    await drained(60_000);
    // Moosend's own windows (subscribe_many: 2 per 10 s) are on for the burst.
    sim.setRateLimits(true);
    const before = sim.requests.length;
    const target = k.status('Negotiation').id;
    for (const id of leads) k.moveLead(id, target);
    await k.flushWebhooks();
    const list = () => sim.lists.get(lists.Negotiation!)!;
    await waitFor(() => [...list().members.values()].filter((m) => m.email.startsWith('burst') && m.subscribeType === 1).length === n, `all ${n} in the Negotiation list`, 90_000);
    await drained(60_000);
    const sent = sim.requests.slice(before);
    t.diagnostic(`${sent.length} Moosend requests for ${n} stage entries: ${(sent.length / n).toFixed(3)} per event`);
    assert.ok(sent.some((r) => r.path.endsWith('/subscribe_many.json')), 'the bulk endpoint is used');
    assert.ok(sent.length <= n * 0.05, `${sent.length} Moosend requests for ${n} stage entries (${sent.map((r) => r.path.split('/').pop()).join(', ')})`);
    assert.equal((await service.store.stats(Date.now())).jobs.dead, 0);
    sim.setRateLimits(false);
  });

  it('an opt-out reported by another tool suppresses the person in the whole Moosend account', async () => {
    const k = world.kommo;
    const c = k.createContact({ name: 'Opt Out', email: 'optout@example.com' });
    k.createLead({ name: 'Opt deal', price: 1, contactIds: [c.id], statusId: k.status('Qualified').id });
    await k.flushWebhooks();
    await waitFor(() => sim.member(lists.Qualified!, 'optout@example.com')?.subscribeType === 1, 'subscribed in Moosend');
    await drained();
    const cio = world.vendors.get('customerio')!.sim as CustomerioSimulator;
    assert.equal(await cio.sendEngagement(world.vendorWebhookUrl(service.url!, 'customerio'), 'unsubscribed', 'optout@example.com'), 200);
    await waitFor(() => sim.suppressed.has('optout@example.com'), 'unsubscribed from the Moosend account');
    assert.equal(sim.member(lists.Qualified!, 'optout@example.com')!.subscribeType, 2);
  });
});
