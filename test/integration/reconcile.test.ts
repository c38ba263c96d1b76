/**
 * Reconciliation of missed webhooks: Kommo sometimes never delivers (or retries) a webhook. The
 * service's sweep reads Kommo's event log and stores what the inbox never saw, under the webhook's
 * own dedup key: a dropped webhook is delivered late, a delivered one is not delivered again.
 * The real service against the Kommo and Customer.io simulators over HTTP.
 */
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import pino from 'pino';
import { parse, stringify } from 'yaml';
import { parseConfigText } from '../../src/config/load.js';
import { startWorld, type World } from '../../src/demo/world.js';
import type { SimulatedItem } from '../../src/destinations/types.js';
import { parseStats, sweepStatsKey } from '../../src/runtime/sweeper.js';
import { startService, type Service } from '../../src/runtime/service.js';
import { waitFor } from './wait.js';

let world: World;
let service: Service;

before(async () => {
  world = await startWorld({ destinations: ['customerio'] });
  const cfg = parse(world.yaml) as { accounts: Record<string, { kommo: Record<string, unknown> }> };
  cfg.accounts[world.account]!.kommo.reconcile = '2s';
  const loaded = parseConfigText(stringify(cfg), 'reconcile.yaml', {});
  service = await startService({ loaded, log: pino({ level: 'silent' }), intake: true, work: true, port: 0, host: '127.0.0.1' });
  world.subscribe(service.url!);
});
after(async () => {
  await service?.close();
  await world?.close();
});

const events = (email: string, name: string): SimulatedItem[] =>
  world.vendors.get('customerio')!.sim.items.filter((i) => i.kind === 'trackEvent' && i.person === email && i.target === name && i.ok && !i.duplicate);
const found = async (): Promise<number> => parseStats(await service.store.kvGet(sweepStatsKey(world.account, 'kommo')))?.totalFound ?? 0;

it('a lead addition and a stage move whose webhooks Kommo dropped are found and delivered; delivered ones are not repeated', { timeout: 90_000 }, async () => {
  const k = world.kommo;
  // Seen: a new lead whose webhook arrives.
  const ann = k.createContact({ name: 'Ann Seen', email: 'ann@reconcile.example' });
  const seen = k.createLead({ name: 'Seen deal', contactIds: [ann.id] });
  await k.flushWebhooks();
  await waitFor(() => events('ann@reconcile.example', 'kommo_lead_created').length === 1, 'the seen lead delivered by its webhook');

  // Missed: a new lead, and a move of the seen one; Kommo never delivers their webhooks.
  k.dropWebhooks(1, ['add_lead']);
  const bob = k.createContact({ name: 'Bob Missed', email: 'bob@reconcile.example' });
  k.createLead({ name: 'Missed deal', contactIds: [bob.id] });
  k.dropWebhooks(2, ['status_lead', 'update_lead']);
  k.moveLead(seen.id, k.status('Qualified').id);
  await k.flushWebhooks();
  assert.equal(k.webhooksDropped.length, 3);

  await waitFor(() => events('bob@reconcile.example', 'kommo_lead_created').length === 1, 'the missed lead delivered by the sweep', 30_000);
  await waitFor(() => events('ann@reconcile.example', 'kommo_stage_changed').length === 1, 'the missed move delivered by the sweep', 30_000);

  // Seen again: a move whose webhook arrives; later sweeps read it in the log and must drop it.
  k.moveLead(seen.id, k.status('Demo scheduled').id);
  await k.flushWebhooks();
  await waitFor(() => events('ann@reconcile.example', 'kommo_stage_changed').length === 2, 'the seen move delivered by its webhook');
  const runs = async () => (await service.metrics.registry.getSingleMetric('kommo_sync_sweep_runs_total')!.get()).values.filter((v) => v.labels.source === 'kommo' && v.labels.outcome === 'ok').reduce((n, v) => n + v.value, 0);
  const before = await runs();
  await waitFor(async () => (await runs()) >= before + 3, 'three more sweeps over the log', 30_000);

  assert.equal(events('ann@reconcile.example', 'kommo_lead_created').length, 1, 'the seen addition once');
  assert.equal(events('ann@reconcile.example', 'kommo_stage_changed').length, 2, 'each move once');
  assert.equal(events('bob@reconcile.example', 'kommo_lead_created').length, 1, 'the missed addition once');
  assert.equal(await found(), 2, 'the sweep counts what it found');
  const metric = (await service.metrics.registry.getSingleMetric('kommo_sync_sweep_events_total')!.get()).values.find((v) => v.labels.source === 'kommo');
  assert.equal(metric?.value, 2);
  // The log is read within the rate limit and 100 events at a time.
  const reads = k.requests.filter((r) => r.path === '/api/v4/events');
  assert.ok(reads.length > 0 && reads.every((r) => /limit=100/.test(r.query) && r.status !== 429));
});
