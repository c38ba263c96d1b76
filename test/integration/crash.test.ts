/**
 * Kill -9 while jobs are leased: nothing acknowledged is lost. The service runs as a real child
 * process (`kommo-sync serve`) on a SQLite file; Kommo answers slowly so deliveries are in flight.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { stringify, parse } from 'yaml';
import { startWorld, type World } from '../../src/demo/world.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { waitFor } from './wait.js';
import { BIN, freePort } from './cli.js';

let world: World;
let dir: string;
let child: ChildProcess | null = null;


function serve(config: string, port: number): ChildProcess {
  const p = spawn(process.execPath, [BIN, 'serve', '--config', config, '--port', String(port)], { stdio: ['ignore', 'ignore', 'pipe'] });
  p.stderr?.on('data', (d: Buffer) => process.stderr.write(`[child] ${d}`));
  return p;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'kommo-sync-crash-'));
  // Slow Kommo: every request takes 400 ms, so a kill lands while jobs and inbox events are leased.
  world = await startWorld({ destinations: [], kommoLatencyMs: 400 });
});
after(async () => {
  child?.kill('SIGKILL');
  await world?.close();
  rmSync(dir, { recursive: true, force: true });
});

it('jobs leased by a killed process run after restart; nothing is lost', async () => {
  const dbFile = join(dir, 'ks.db');
  const cfg = parse(world.yaml) as Record<string, unknown>;
  cfg.store = `sqlite:${dbFile}`;
  cfg.server = { port: 0, host: '127.0.0.1' };
  cfg.worker = { lease: '1s', poll: '50ms', backoff: { base: '100ms', factor: 2, max: '1s' }, batchSize: 5 };
  const configFile = join(dir, 'kommo-sync.yaml');
  writeFileSync(configFile, stringify(cfg));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;

  child = serve(configFile, port);
  await waitFor(async () => (await fetch(`${url}/readyz`).catch(() => null))?.status === 200, 'service ready', 20_000);
  world.subscribe(url);

  const k = world.kommo;
  const leads = Array.from({ length: 20 }, (_, i) => {
    const c = k.createContact({ name: `C${i}`, email: `c${i}@example.com` });
    return k.createLead({ name: `L${i}`, contactIds: [c.id] }).id;
  });
  const target = k.status('Negotiation').id;
  for (const id of leads) k.moveLead(id, target);
  await k.flushWebhooks();
  const acknowledged = k.webhooksSent.filter((w) => w.status === 200).length;
  assert.ok(acknowledged >= 40, `the service acknowledged the webhooks (${acknowledged})`);

  // Kill -9 as soon as work is in flight.
  const store = await openSqliteStore(dbFile);
  await waitFor(async () => {
    const s = await store.stats(Date.now());
    return s.jobs.leased > 0 || s.jobs.pending > 0;
  }, 'jobs exist', 20_000);
  child.kill('SIGKILL');
  await new Promise((r) => child!.once('exit', r));
  const atKill = await store.stats(Date.now());
  assert.ok(atKill.jobs.leased + atKill.jobs.pending + atKill.inboxPending > 0, 'work was left over at the kill');

  child = serve(configFile, port);
  const noted = () => new Set([...k.notes.values()].filter((n) => String(n.params.text).includes('Negotiation')).map((n) => n.entity_id));
  await waitFor(() => noted().size === leads.length, 'every stage change noted after the restart', 60_000);
  await waitFor(async () => {
    const s = await store.stats(Date.now());
    return s.inboxPending === 0 && s.jobs.pending === 0 && s.jobs.leased === 0;
  }, 'queue drained', 30_000);
  const final = await store.stats(Date.now());
  assert.equal(final.jobs.dead, 0, 'no dead letters');
  for (const id of leads) assert.ok(noted().has(id), `lead ${id} got its note`);
  await store.close();
});
