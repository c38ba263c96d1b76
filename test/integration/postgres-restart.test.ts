/**
 * A PostgreSQL restart in the middle of a run: webhooks that cannot be stored get 503 (so Kommo
 * retries them), the service and its workers reconnect by themselves, and every acknowledged
 * webhook is processed. Restarts this machine's PostgreSQL cluster, so it runs last-ish and alone
 * (npm test runs files one at a time).
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { startWorld } from '../../src/demo/world.js';
import { parseBracketForm } from '../../src/kommo/form.js';
import { parseKommoWebhook } from '../../src/kommo/webhook.js';
import { openStore } from '../../src/store/open.js';
import { freshSchema, pgTest, postgresUnreachable } from '../pg.js';
import { waitFor } from './wait.js';
import { BIN, freePort } from './cli.js';



/**
 * Asynchronous on purpose: this process runs the Kommo simulator, whose 2 s answer timeout would
 * otherwise fire while a synchronous `pg_ctlcluster stop` blocked its event loop, and report the
 * service as silent when it was not.
 */
async function pgCluster(action: 'stop' | 'start'): Promise<void> {
  const version = readdirSync('/etc/postgresql').sort().at(-1)!;
  await promisify(execFile)('pg_ctlcluster', ['--skip-systemctl-redirect', version, 'main', action, ...(action === 'stop' ? ['-m', 'fast'] : [])]);
}

await pgTest('a PostgreSQL restart mid-run: 503 while it is down, nothing acknowledged is lost', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kommo-sync-pgrestart-'));
  const db = await freshSchema('ks_restart');
  const world = await startWorld({ destinations: [] });
  let child: ChildProcess | null = null;
  try {
    const cfg = parse(world.yaml) as Record<string, unknown>;
    cfg.store = db.url;
    cfg.worker = { poll: '50ms', lease: '5s', backoff: { base: '200ms', factor: 2, max: '2s' } };
    const configFile = join(dir, 'kommo-sync.yaml');
    writeFileSync(configFile, stringify(cfg));
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    child = spawn(process.execPath, [BIN, 'serve', '--config', configFile, '--port', String(port)], { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr?.on('data', (d: Buffer) => process.stderr.write(`[serve] ${d}`));
    await waitFor(async () => (await fetch(`${url}/readyz`).catch(() => null))?.status === 200, 'service ready', 30_000);
    world.subscribe(url);

    const k = world.kommo;
    const leads = Array.from({ length: 60 }, (_, i) => k.createLead({ name: `L${i}` }).id);
    await k.flushWebhooks();
    const stages = ['Qualified', 'Demo scheduled', 'Negotiation'];
    // Moves keep coming, one every 40 ms, while the database restarts underneath.
    let moving = true;
    const mover = (async () => {
      let i = 0;
      while (moving) {
        k.moveLead(leads[i % leads.length]!, k.status(stages[Math.floor(i / leads.length) % stages.length]!).id);
        i++;
        await new Promise((r) => setTimeout(r, 40));
      }
    })();
    await new Promise((r) => setTimeout(r, 1500));
    // A restart with some downtime, so webhooks certainly arrive while the database is away.
    await pgCluster('stop');
    try {
      await new Promise((r) => setTimeout(r, 1500));
    } finally {
      await pgCluster('start');
    }
    await waitFor(async () => (await postgresUnreachable()) === null, 'PostgreSQL back', 30_000);
    await new Promise((r) => setTimeout(r, 1500));
    moving = false;
    await mover;
    await k.flushWebhooks();

    const refused = k.webhooksSent.filter((w) => w.status === 503);
    assert.ok(refused.length > 0, 'webhooks arriving while PostgreSQL was down got 503');
    const other = k.webhooksSent.filter((w) => w.status !== 200 && w.status !== 503);
    assert.deepEqual(other.map((w) => `${w.status} ${w.error ?? ''}`), [], 'only 200 or 503 (status 0: no answer within Kommo\'s 2 s)');

    // Every acknowledged stage change gets its note (a note per distinct lead+stage+time).
    const store = await openStore(db.url);
    try {
      await waitFor(async () => {
        const s = await store.stats(Date.now());
        return s.inboxPending === 0 && s.jobs.pending === 0 && s.jobs.leased === 0;
      }, 'queue drained after the restart', 60_000);
      const s = await store.stats(Date.now());
      assert.equal(s.jobs.dead, 0);
      // Each stage change Kommo got a 200 for (as leads[status] or leads[update]) gives one note.
      // A change answered only with 503 may still have been stored (the commit went through but its
      // answer was lost with the connection); Kommo would re-send it and dedup would absorb it.
      const keys = (status: number) => {
        const out = new Set<string>();
        for (const w of k.webhooksSent) {
          if (w.status !== status || (w.event !== 'status_lead' && w.event !== 'update_lead')) continue;
          for (const e of parseKommoWebhook(parseBracketForm(w.body)).events) if (e.event.kind === 'lead.stage_changed') out.add(e.dedupKey);
        }
        return out;
      };
      const acknowledged = keys(200);
      const refusedOnly = [...keys(503)].filter((key) => !acknowledged.has(key));
      assert.ok(acknowledged.size > 20);
      assert.ok(k.notes.size >= acknowledged.size, `an acknowledged stage change was lost: ${k.notes.size} notes for ${acknowledged.size} changes`);
      assert.ok(k.notes.size <= acknowledged.size + refusedOnly.length, `more notes (${k.notes.size}) than stage changes sent (${acknowledged.size} + ${refusedOnly.length} refused)`);
    } finally {
      await store.close();
    }
    assert.equal(child.exitCode, null, 'the service survived the restart');
  } finally {
    child?.kill('SIGKILL');
    await world.close();
    await db.dispose().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
});
