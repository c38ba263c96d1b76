/**
 * An agency runs many Kommo accounts in one deployment: a burst in one account does not delay
 * another account's events beyond that account's own work (claims are fair across accounts and
 * accounts are routed side by side), and each account's Kommo limit holds on its own.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import pino from 'pino';
import { startAgencyWorld } from '../../src/demo/agency.js';
import { startService, type Service } from '../../src/runtime/service.js';
import { waitFor } from './wait.js';

it('a backlog of 2,000 events in one account does not hold back a quiet account; each account keeps its own 7/s', { timeout: 240_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kommo-sync-agency-'));
  const store = `sqlite:${join(dir, 'ks.db')}`;
  // A slow Kommo, so working through the busy account's backlog takes a while.
  const world = await startAgencyWorld({ accounts: 3, store, kommoLatencyMs: 250 });
  const loaded = world.loaded;
  // First only intake runs: the busy account's burst is stored, not yet routed (a backlog).
  const intake = await startService({ loaded, log: pino({ level: 'silent' }), intake: true, work: false, port: 0, host: '127.0.0.1' });
  let service: Service | null = null;
  try {
    world.subscribe(intake.url!);
    const [busy, quiet] = [world.accounts[0]!, world.accounts[1]!];
    const burstLeads = Array.from({ length: 1000 }, (_, i) => busy.kommo.createLead({ name: `Busy ${i}`, contactIds: [busy.kommo.createContact({ name: `B${i}`, email: `busy${i}@example.com` }).id] }).id);
    const quietLead = quiet.kommo.createLead({ name: 'Quiet', contactIds: [quiet.kommo.createContact({ name: 'Q', email: 'quiet@example.com' }).id] }).id;
    for (const id of burstLeads) busy.kommo.moveLead(id, busy.kommo.status('Proposal sent').id);
    await Promise.all(world.accounts.map((a) => a.kommo.flushWebhooks()));
    assert.ok((await intake.store.stats(Date.now())).inboxPending >= 2000, 'the backlog is stored');

    // Now the router and workers start, and the quiet account's one change arrives.
    service = await startService({ loaded, log: pino({ level: 'silent' }), intake: false, work: true });
    const t0 = Date.now();
    quiet.kommo.moveLead(quietLead, quiet.kommo.status('Proposal sent').id);
    await quiet.kommo.flushWebhooks();
    await waitFor(() => [...quiet.kommo.notes.values()].some((n) => n.entity_id === quietLead && String(n.params.text).includes('Proposal sent')), 'the quiet account\'s note', 90_000);
    const quietMs = Date.now() - t0;
    const busyDone = () => [...busy.kommo.notes.values()].filter((n) => String(n.params.text).includes('Proposal sent')).length;
    const busyAtQuiet = busyDone();
    await waitFor(() => busyDone() >= burstLeads.length, 'the backlog done', 180_000);
    // The quiet account's change costs it a few reads and a note at its own 7/s (plus the router's
    // linger): it must not wait for the busy account's backlog.
    assert.ok(busyAtQuiet < burstLeads.length, `the quiet account was served while the backlog was still going (${busyAtQuiet}/${burstLeads.length})`);
    assert.ok(quietMs < 5_000, `the quiet account's note took ${quietMs} ms`);
    for (const a of world.accounts) assert.ok(a.kommo.maxRequestsInWindow(1000) <= 7, `${a.name}: ${a.kommo.maxRequestsInWindow(1000)} requests in one second`);
  } finally {
    await service?.close();
    await intake.close();
    await world.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
