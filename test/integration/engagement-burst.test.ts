/**
 * A burst of opens for leads kommo-sync already knows costs Kommo almost nothing: the email index
 * names the leads and one router batch reads them together, instead of a contact search and a
 * lead read per open (about 2 Kommo calls per event before).
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import pino from 'pino';
import type { CustomerioSimulator } from '../../src/destinations/customerio/simulator.js';
import { startWorld } from '../../src/demo/world.js';
import { startService } from '../../src/runtime/service.js';
import { waitFor } from './wait.js';

it('400 opens of 100 known leads: at most 0.05 Kommo calls per open, hot-lead tasks exact', { timeout: 180_000 }, async () => {
  const world = await startWorld({ destinations: ['customerio'], overrides: { server: { port: 0, host: '127.0.0.1' }, log: { level: 'silent' } } });
  const service = await startService({ loaded: world.loaded, log: pino({ level: 'silent' }), intake: true, work: true, port: 0, host: '127.0.0.1' });
  try {
    world.subscribe(service.url!);
    const k = world.kommo;
    const cio = world.vendors.get('customerio')!.sim as CustomerioSimulator;
    const LEADS = 100;
    const OPENS_EACH = 4;
    const emails = Array.from({ length: LEADS }, (_, i) => `open${i}@example.com`);
    for (const email of emails) {
      const c = k.createContact({ name: email, email });
      k.createLead({ name: `Deal ${email}`, contactIds: [c.id] });
    }
    await k.flushWebhooks();
    await waitFor(async () => (await Promise.all(emails.map((e) => service.store.leadsByEmail(world.account, e)))).every((ids) => ids.length === 1), 'the email index knows every lead', 60_000);
    await waitFor(async () => {
      const s = await service.store.stats(Date.now());
      return s.inboxPending === 0 && s.jobs.pending === 0 && s.jobs.leased === 0;
    }, 'the creations synced');
    k.resetLog();
    const tasksBefore = k.tasks.size;

    const url = world.vendorWebhookUrl(service.url!, 'customerio');
    for (let round = 0; round < OPENS_EACH; round++) {
      const statuses = await Promise.all(emails.map((email) => cio.sendEngagement(url, 'opened', email, { subject: 'Proposal' })));
      assert.ok(statuses.every((s) => s === 200));
    }
    await waitFor(async () => {
      const s = await service.store.stats(Date.now());
      return s.inboxPending === 0 && s.jobs.pending === 0 && s.jobs.leased === 0 && k.tasks.size - tasksBefore >= LEADS;
    }, 'opens routed and tasks written', 90_000);
    const events = LEADS * OPENS_EACH;
    const perEvent = k.requests.length / events;
    assert.ok(perEvent <= 0.05, `${k.requests.length} Kommo requests for ${events} opens = ${perEvent.toFixed(3)} per open: ${JSON.stringify(k.requests.map((r) => `${r.method} ${r.path}`))}`);
    assert.equal(k.tasks.size - tasksBefore, LEADS, 'one hot-lead task per lead (3 opens in 48 h, then the cooldown)');
    assert.ok(!k.requests.some((r) => r.method === 'GET' && r.path === '/api/v4/contacts'), 'no contact search for known emails');
  } finally {
    await service.close();
    await world.close();
  }
});
