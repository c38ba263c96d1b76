/**
 * Restarts and refusals, as an operator meets them:
 * - `kill -9` of `kommo-sync serve` mid-burst on SQLite: the restarted process takes its old claims
 *   back at once (it is the store's only user), so work resumes in seconds, not after the lease;
 *   and Kommo never sees more requests in one second than the limit, across the restart.
 * - the same on PostgreSQL, where a dead process's claims come back after one (short) lease.
 * - Kommo refusing the account (403): its work is paused, not dead-lettered nor retried in a
 *   loop; /readyz and the metrics say why; it resumes when Kommo answers again.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, it } from 'node:test';
import pino from 'pino';
import { parse, stringify } from 'yaml';
import { startWorld, type World } from '../../src/demo/world.js';
import { startService } from '../../src/runtime/service.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';
import { freshSchema, pgTest } from '../pg.js';
import { BIN, freePort } from './cli.js';
import { waitFor } from './wait.js';

const children: ChildProcess[] = [];
after(() => {
  for (const c of children) c.kill('SIGKILL');
});

function serve(config: string, port: number): ChildProcess {
  const p = spawn(process.execPath, [BIN, 'serve', '--config', config, '--port', String(port)], { stdio: ['ignore', 'ignore', 'pipe'] });
  p.stderr?.on('data', (d: Buffer) => process.stderr.write(`[serve] ${d}`));
  children.push(p);
  return p;
}

async function kill9(p: ChildProcess): Promise<void> {
  p.kill('SIGKILL');
  if (p.exitCode === null && p.signalCode === null) await new Promise((r) => p.once('exit', r));
}

/** Kill -9 mid-burst, restart, and time the first Kommo write after the restart. */
async function killAndRestart(world: World, storeUrl: string, lease: string): Promise<{ firstWriteAfterRestartMs: number; drainAfterRestartMs: number; leasedAtKill: number; maxKommoIn1s: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'kommo-sync-restart-'));
  try {
    const cfg = parse(world.yaml) as Record<string, unknown>;
    cfg.store = storeUrl;
    cfg.worker = { lease, poll: '50ms', batchSize: 10 };
    const config = join(dir, 'kommo-sync.yaml');
    writeFileSync(config, stringify(cfg));
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    let child = serve(config, port);
    await waitFor(async () => (await fetch(`${url}/readyz`).catch(() => null))?.status === 200, 'service ready', 30_000);
    world.subscribe(url);
    const k = world.kommo;
    const leads = Array.from({ length: 30 }, (_, i) => {
      const c = k.createContact({ name: `R${i}`, email: `r${i}@example.com` });
      return k.createLead({ name: `Deal R${i}`, contactIds: [c.id] }).id;
    });
    await k.flushWebhooks();
    k.resetLog();
    const target = k.status('Negotiation');
    for (const id of leads) k.moveLead(id, target.id);
    await k.flushWebhooks();
    const store: Store = await openStore(storeUrl);
    try {
      const noted = () => new Set([...k.notes.values()].filter((n) => String(n.params.text).includes(target.name)).map((n) => n.entity_id));
      // Kill while Kommo writes are under way (some notes written, not all).
      await waitFor(() => noted().size > 0, 'the first notes', 30_000);
      // Kill while the worker holds claims it took a moment ago: their Kommo write (1 s here) is
      // still in flight, so the claims are certainly held at the kill, however loaded the machine.
      const leaseMs = Number(lease.replace('s', '')) * 1000;
      await waitFor(async () => (await store.listJobs({ state: 'leased' })).some((j) => (j.leaseUntil ?? 0) - Date.now() > leaseMs - 300), 'fresh claims held', 30_000);
      await kill9(child);
      const left = await store.stats(Date.now());
      assert.ok(left.jobs.leased > 0 && noted().size < leads.length, `claims held at the kill (${JSON.stringify(left.jobs)})`);
      const writesBefore = k.requests.filter((r) => r.method === 'POST').length;
      const restartedAt = Date.now();
      child = serve(config, port);
      await waitFor(() => k.requests.filter((r) => r.method === 'POST').length > writesBefore, 'a Kommo write after the restart', 60_000);
      const firstWrite = k.requests.filter((r) => r.method === 'POST').slice(writesBefore)[0]!;
      await waitFor(() => noted().size === leads.length, 'every stage change noted', 90_000);
      await waitFor(async () => {
        const s = await store.stats(Date.now());
        return s.inboxPending === 0 && s.jobs.pending === 0 && s.jobs.leased === 0;
      }, 'drained', 60_000);
      // Drained includes the jobs the killed process held (their notes may have been written).
      const drainAfterRestartMs = Date.now() - restartedAt;
      assert.equal((await store.stats(Date.now())).jobs.dead, 0);
      await kill9(child);
      return { firstWriteAfterRestartMs: firstWrite.at - restartedAt, drainAfterRestartMs, leasedAtKill: left.jobs.leased, maxKommoIn1s: k.maxRequestsInWindow(1000) };
    } finally {
      await store.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

it('SQLite: after kill -9 the restarted serve takes its claims back at once, and Kommo\'s limit holds across the restart', { timeout: 240_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kommo-sync-restart-db-'));
  // Slow Kommo writes, so the kill lands with claims held; the lease (30 s, the default) is what
  // the old code waited out.
  const world = await startWorld({ destinations: [], kommoLatencyMs: 1000 });
  try {
    const r = await killAndRestart(world, `sqlite:${join(dir, 'ks.db')}`, '30s');
    // The jobs claimed at the kill are done well before their 30 s leases would have expired.
    assert.ok(r.drainAfterRestartMs < 25_000, `drained ${r.drainAfterRestartMs} ms after the restart (lease 30 s, ${r.leasedAtKill} claims held at the kill)`);
    assert.ok(r.firstWriteAfterRestartMs < 15_000, `first write ${r.firstWriteAfterRestartMs} ms after the restart`);
    assert.ok(r.maxKommoIn1s <= 7, `Kommo saw ${r.maxKommoIn1s} requests in one second`);
  } finally {
    await world.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

await pgTest('PostgreSQL: a killed process\'s claims come back after one short lease', async () => {
  const db = await freshSchema('ks_restart');
  const world = await startWorld({ destinations: [], kommoLatencyMs: 1000 });
  try {
    const r = await killAndRestart(world, db.url, '4s');
    assert.ok(r.firstWriteAfterRestartMs < 4_000 + 12_000, `first write ${r.firstWriteAfterRestartMs} ms after the restart (lease 4 s)`);
    assert.ok(r.drainAfterRestartMs < 4_000 + 25_000, `drained ${r.drainAfterRestartMs} ms after the restart (lease 4 s)`);
    assert.ok(r.maxKommoIn1s <= 7, `Kommo saw ${r.maxKommoIn1s} requests in one second`);
  } finally {
    await world.close();
    await db.dispose();
  }
});

it('Kommo refusing the account (403) pauses its work: nothing dead, no retry loop, /readyz says why; it resumes when Kommo answers', { timeout: 120_000 }, async () => {
  const world = await startWorld({ destinations: ['customerio'], overrides: { server: { port: 0, host: '127.0.0.1' }, log: { level: 'silent' }, worker: { pauseRecheck: '2s', poll: '50ms' } } });
  const service = await startService({ loaded: world.loaded, log: pino({ level: 'silent' }), intake: true, work: true, port: 0, host: '127.0.0.1' });
  try {
    world.subscribe(service.url!);
    const k = world.kommo;
    const c = k.createContact({ name: 'Pat Pause', email: 'pat@example.com' });
    const lead = k.createLead({ name: 'Paused deal', contactIds: [c.id] });
    await k.flushWebhooks();
    await waitFor(async () => (await service.store.stats(Date.now())).jobs.done > 0, 'the new lead synced');

    k.block();
    k.moveLead(lead.id, k.status('Proposal sent').id);
    await k.flushWebhooks();
    await waitFor(async () => {
      const ready = (await (await fetch(`${service.url}/readyz`)).json()) as { status?: string; paused?: Array<{ account: string; reason: string }> };
      return ready.status === 'degraded' && ready.paused?.[0]?.account === 'acme' && /403/.test(ready.paused[0].reason);
    }, '/readyz names the paused account and why');
    const metrics = await (await fetch(`${service.url}/metrics`)).text();
    assert.match(metrics, /kommo_sync_account_paused\{account="acme"\} 1/);

    // While paused: the event waits in the inbox, nothing is dead, Kommo is not hammered.
    const seen = k.requests.length;
    await new Promise((r) => setTimeout(r, 1500));
    const s = await service.store.stats(Date.now());
    assert.equal(s.inboxPending, 1, 'the stage change waits in the inbox');
    assert.equal(s.inboxFailed, 0);
    assert.equal(s.jobs.dead, 0);
    assert.ok(k.requests.length - seen <= 2, `at most a probe reached Kommo while paused (${k.requests.length - seen})`);

    k.unblock();
    await waitFor(() => [...k.notes.values()].some((n) => n.entity_id === lead.id && String(n.params.text).includes('Proposal sent')), 'resumed: the stage change was synced and noted', 30_000);
    const ready = (await (await fetch(`${service.url}/readyz`)).json()) as { status?: string };
    assert.equal(ready.status, undefined, 'ready again');
  } finally {
    await service.close();
    await world.close();
  }
});
