/**
 * Scale-out on PostgreSQL with real `kommo-sync worker` processes: for every registered destination
 * (and the test kit's fake), three workers share one queue without ever working on one ordering key
 * at once, each job runs exactly once and in per-key order; and together they never send Kommo
 * more than 7 requests in any second.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify from 'fastify';
import { parse, stringify } from 'yaml';
import { destinationTypes, getDestination, registerDestination } from '../../src/destinations/index.js';
import { startWorld } from '../../src/demo/world.js';
import { KOMMO_OPS_V1, SYNC_OPS_V1 } from '../../src/queue/jobs.js';
import { openStore } from '../../src/store/open.js';
import type { NewJob, Store } from '../../src/store/store.js';
import { freshSchema, pgTest } from '../pg.js';
import { waitFor } from './wait.js';
import { BIN } from './cli.js';
import { fake } from '../kit/fake-destination/index.js';


function startWorkers(n: number, config: string, env: Record<string, string> = {}): ChildProcess[] {
  return Array.from({ length: n }, () => {
    const p = spawn(process.execPath, [BIN, 'worker', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    p.stderr?.on('data', (d: Buffer) => process.stderr.write(`[worker ${p.pid}] ${d}`));
    p.stdout?.resume(); // the log (JSON lines on stdout); whenRunning reads it
    return p;
  });
}

/**
 * Resolves when every worker logged that it runs. A test about sharing work enqueues only then:
 * otherwise the first process up can drain a fast destination's queue before the others start.
 */
function whenRunning(procs: ChildProcess[]): Promise<void> {
  return Promise.all(procs.map((p) => new Promise<void>((resolve, reject) => {
    let seen = '';
    const onData = (d: Buffer) => {
      seen = (seen + d.toString()).slice(-4096);
      if (seen.includes('worker is running')) {
        p.stdout?.off('data', onData);
        resolve();
      }
    };
    p.stdout?.on('data', onData);
    p.once('exit', (code) => reject(new Error(`worker ${p.pid} exited with ${code} before it ran`)));
  }))).then(() => undefined);
}

async function stopAll(procs: ChildProcess[]): Promise<void> {
  await Promise.all(procs.map((p) => new Promise<void>((resolve) => {
    if (p.exitCode !== null) return resolve();
    p.once('exit', () => resolve());
    p.kill('SIGTERM');
  })));
}

/** Writes a worker config: the generated world config, on PostgreSQL, with these overrides. */
function writeConfig(dir: string, worldYaml: string, storeUrl: string, worker: Record<string, unknown>): string {
  const cfg = parse(worldYaml) as Record<string, unknown>;
  cfg.store = storeUrl;
  cfg.worker = { poll: '20ms', lease: '10s', ...worker };
  cfg.log = { level: 'info' };
  const file = join(dir, `kommo-sync-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, stringify(cfg));
  return file;
}

async function drained(store: Store): Promise<boolean> {
  const s = await store.stats(Date.now());
  return s.inboxPending === 0 && s.jobs.pending === 0 && s.jobs.leased === 0;
}

// Every registered destination that takes events, the test kit's fake included (registered here as
// a plugin would be), is shared by the workers the same way.
registerDestination(fake);
const PLUGIN_ENV = { KOMMO_SYNC_DESTINATIONS: new URL('../kit/fake-destination/index.ts', import.meta.url).pathname, NODE_OPTIONS: '--import tsx' };

for (const type of destinationTypes().filter((t) => getDestination(t)!.supports.trackEvent)) {
  await pgTest(`${type}: three worker processes drain 3,000 jobs over 300 keys: no key at once, each job once, in order`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kommo-sync-scale-'));
    const db = await freshSchema('ks_scale');
    const world = await startWorld({ destinations: [type] });
    // The simulator in an app of our own, to time each request (the window an overlap would show in).
    const sim = getDestination(type)!.simulator();
    const spans: Array<{ start: number; end: number; body: string }> = [];
    const app = Fastify({ logger: false, bodyLimit: 10 * 1024 * 1024 });
    app.addHook('preHandler', async (req) => {
      (req as unknown as { started: number }).started = performance.now();
      await new Promise((r) => setTimeout(r, 3)); // widen the window in which an overlap would show
    });
    app.addHook('onResponse', async (req) => {
      spans.push({ start: (req as unknown as { started: number }).started, end: performance.now(), body: `${req.url} ${JSON.stringify(req.body ?? '')}` });
    });
    await app.register(sim.plugin, { prefix: '/sim' });
    const simUrl = await app.listen({ port: 0, host: '127.0.0.1' });
    const store = await openStore(db.url);
    let workers: ChildProcess[] = [];
    try {
      const cfg = parse(world.yaml) as { accounts: { acme: { destinations: Record<string, Record<string, unknown>> } } };
      Object.assign(cfg.accounts.acme.destinations[type]!, sim.settingsFor(`${simUrl}/sim`));
      const config = writeConfig(dir, stringify(cfg), db.url, { batchSize: 40 });

      const KEYS = 300;
      const PER_KEY = 10;
      const email = (k: number) => `k${k}@example.com`;
      const jobs: NewJob[] = [];
      for (let n = 0; n < PER_KEY; n++) {
        for (let k = 0; k < KEYS; k++) {
          jobs.push({
            account: 'acme',
            destination: `acme/${type}`,
            type: SYNC_OPS_V1,
            orderingKey: `lead:${k}`,
            payload: { subject: email(k), ops: [{ kind: 'trackEvent', person: { email: email(k) }, name: `seq_${n}`, properties: { seq: n }, timestamp: Date.now(), messageId: `job-${k}-${n}` }] },
          });
        }
      }
      workers = startWorkers(3, config, PLUGIN_ENV);
      await whenRunning(workers);
      for (let i = 0; i < jobs.length; i += 1000) await store.enqueueJobs(jobs.slice(i, i + 1000));

      await waitFor(() => drained(store), `${KEYS * PER_KEY} jobs done`, 150_000);
      const stats = await store.stats(Date.now());
      assert.equal(stats.jobs.done, KEYS * PER_KEY, 'every job done');
      assert.equal(stats.jobs.dead, 0);

      // Exactly once and in order (the simulator's neutral view): each key's events arrived as
      // seq_0..seq_9, once each.
      const byKey = new Map<string, string[]>();
      for (const i of sim.items) if (i.kind === 'trackEvent' && i.ok && !i.duplicate) byKey.set(i.person, [...(byKey.get(i.person) ?? []), i.target ?? '?']);
      assert.equal(byKey.size, KEYS);
      for (const [key, seqs] of byKey) assert.deepEqual(seqs, [...Array(PER_KEY).keys()].map((n) => `seq_${n}`), `order and count for ${key}`);

      // Never two requests in flight for one key at the same time.
      for (let k = 0; k < KEYS; k++) {
        const needle = JSON.stringify(email(k)).slice(1, -1);
        const list = spans.filter((s) => s.body.includes(needle)).sort((a, b) => a.start - b.start);
        for (let i = 1; i < list.length; i++) assert.ok(list[i]!.start >= list[i - 1]!.end, `${email(k)} was delivered by two workers at once`);
      }
      const leasedBy = new Set((await store.listJobs({ state: 'done', limit: 5000 })).map((j) => j.leasedBy));
      assert.ok(leasedBy.size >= 2, `the work was shared (${leasedBy.size} workers took jobs)`);
    } finally {
      await stopAll(workers);
      await store.close();
      await app.close();
      await world.close();
      await db.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

await pgTest('three worker processes together never send Kommo more than 7 requests in a second', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kommo-sync-scale-'));
  const db = await freshSchema('ks_rate');
  const world = await startWorld({ destinations: [] });
  const store = await openStore(db.url);
  let workers: ChildProcess[] = [];
  try {
    const config = writeConfig(dir, world.yaml, db.url, { batchSize: 1 });
    const k = world.kommo;
    const leads = Array.from({ length: 20 }, (_, i) => k.createLead({ name: `L${i}` }).id);
    // One note per job and one job per claim: every job is one Kommo request.
    const jobs: NewJob[] = Array.from({ length: 70 }, (_, i) => ({
      account: 'acme',
      destination: 'acme/kommo',
      type: KOMMO_OPS_V1,
      orderingKey: `note:${i}`,
      payload: { subject: `lead ${leads[i % leads.length]}`, ops: [{ kind: 'addNote', leadId: leads[i % leads.length]!, text: `note ${i}` }] },
    }));
    await store.enqueueJobs(jobs);
    k.resetLog();
    workers = startWorkers(3, config);
    await waitFor(() => drained(store), 'notes written', 120_000);
    assert.equal(k.notes.size, 70);
    const times = k.requests.map((r) => r.at).sort((a, b) => a - b);
    const densest = times.map((t, i) => times.slice(i).filter((u) => u < t + 1000)).sort((a, b) => b.length - a.length)[0] ?? [];
    assert.ok(k.maxRequestsInWindow(1000) <= 7, `Kommo saw ${k.maxRequestsInWindow(1000)} requests in one second: ${densest.map((t) => t - densest[0]!).join(', ')} ms; ${JSON.stringify(k.requests.filter((r) => densest.includes(r.at)).map((r) => r.path))}`);
    assert.equal(k.requests.filter((r) => r.status === 429).length, 0, 'no 429s');
    const posts = k.requests.filter((r) => r.method === 'POST').length;
    assert.ok(posts >= 70, `each note was its own request (${posts})`);
  } finally {
    await stopAll(workers);
    await store.close();
    await world.close();
    await db.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});
