/**
 * A contact who opted out (the unsubscribe rule's field holds its value) is still updated but not
 * subscribed to lists. The rule may name the field as the rest of the config does: by name in any
 * case, by code or by id.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import pino from 'pino';
import { startWorld } from '../../src/demo/world.js';
import { registerDestination } from '../../src/destinations/index.js';
import { startService } from '../../src/runtime/service.js';
import { fake } from '../kit/fake-destination/index.js';
import { waitFor } from './wait.js';

registerDestination(fake);

for (const spelling of ['email OPT-IN', 'by id'] as const) {
  it(`an opted-out contact is updated but joins no list (unsubscribe.contactField given ${spelling === 'by id' ? 'as the field id' : `as "${spelling}"`})`, { timeout: 60_000 }, async () => {
    const world = await startWorld({ destinations: ['fake'] });
    const fieldId = world.kommo.customFields('contacts').find((f) => f.name === 'Email opt-in')!.id;
    await world.close();
    const contactField = spelling === 'by id' ? String(fieldId) : spelling;
    const w = await startWorld({
      destinations: ['fake'],
      overrides: { log: { level: 'silent' }, worker: { poll: '50ms' } },
      account_overrides: { engagement: { unsubscribe: { contactField, value: false, tag: 'Email Unsubscribed' } } },
    });
    const service = await startService({ loaded: w.loaded, log: pino({ level: 'silent' }), intake: true, work: true, port: 0, host: '127.0.0.1' });
    try {
      w.subscribe(service.url!);
      const k = w.kommo;
      const sim = w.vendors.get('fake')!.sim;
      const out = k.createLead({ name: 'Out', contactIds: [k.createContact({ name: 'Out', email: 'out@example.com', fields: { 'Email opt-in': false } }).id] });
      const inn = k.createLead({ name: 'In', contactIds: [k.createContact({ name: 'In', email: 'in@example.com', fields: { 'Email opt-in': true } }).id] });
      await k.flushWebhooks();
      for (const l of [out, inn]) k.moveLead(l.id, k.status('Proposal sent').id);
      await k.flushWebhooks();
      await waitFor(() => sim.items.some((i) => i.ok && i.kind === 'addToList' && i.person === 'in@example.com'), 'the subscribed contact joined the list');
      await waitFor(async () => { const s = await service.store.stats(Date.now()); return s.inboxPending === 0 && s.jobs.pending === 0 && s.jobs.leased === 0; }, 'everything settled');
      assert.ok(sim.items.some((i) => i.ok && i.kind === 'upsertPerson' && i.person === 'out@example.com'), 'the opted-out contact is still updated');
      assert.ok(!sim.items.some((i) => i.kind === 'addToList' && i.person === 'out@example.com'), 'the opted-out contact joined no list');
    } finally {
      await service.close();
      await w.close();
    }
  });
}
