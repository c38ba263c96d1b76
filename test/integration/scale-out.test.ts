/**
 * Scale-out on PostgreSQL with real `kommo-sync worker` processes: three workers share one queue
 * without ever working on one ordering key at once, each job runs exactly once and in per-key
 * order, and together they never send Kommo more than 7 requests in any second.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify from 'fastify';
import { parse, stringify } from 'yaml';
import { customerioSimulator } from '../../src/destinations/customerio/simulator.js';
import { startWorld } from '../../src/demo/world.js';
import { KOMMO_OPS_V1, SYNC_OPS_V1 } from '../../src/queue/jobs.js';
import { openStore } from '../../src/store/open.js';
import type { NewJob, Store } from '../../src/store/store.js';
import { freshSchema, pgTest } from '../pg.js';
import { waitFor } from './wait.js';
import { BIN } from './cli.js';


function startWorkers(n: number, config: string): ChildProcess[] {
  return Array.from({ length: n }, () => {
    const p = spawn(process.execPath, [BIN, 'worker', '--config', config], { stdio: ['ignore', 'ignore', 'pipe'] });
    p.stderr?.on('data', (d: Buffer) => process.stderr.write(`[worker ${p.pid}] ${d}`));
    return p;
  });
}

async function stopAll(procs: ChildProcess[]): Promise<void> {
  await Promise.all(procs.map((p) => new Promise<void>((resolve) => {
    if (p.exitCode !== null) return resolve();
    p.once('exit', () => resolve());
    p.kill('SIGTERM');
  })));
}

/** Writes a worker config: the generated world config, on PostgreSQL, with these overrides. */
function writeConfig(dir: string, worldYaml: string, storeUrl: string, worker: Record<string, unknown>, cioBaseUrl?: string): string {
  const cfg = parse(worldYaml) as { accounts: Record<string, { destinations: Record<string, Record<string, unknown>> }> } & Record<string, unknown>;
  cfg.store = storeUrl;
  cfg.worker = { poll: '20ms', lease: '10s', ...worker };
  cfg.log = { level: 'warn' };
  const cio = cfg.accounts.acme!.destinations.customerio;
  if (cio && cioBaseUrl) cio.baseUrl = cioBaseUrl;
  const file = join(dir, `kommo-sync-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, stringify(cfg));
  return file;
}

async function drained(store: Store): Promise<boolean> {
  const s = await store.stats(Date.now());
  return s.inboxPending === 0 && s.jobs.pending === 0 && s.jobs.leased === 0;
}

await pgTest('three worker processes drain 5,000 jobs over 500 keys: no key at once, each job once, in order', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kommo-sync-scale-'));
  const db = await freshSchema('ks_scale');
  const world = await startWorld({ destinations: ['customerio'] });
  // A recording Customer.io: each batch request's time span and the keys it carried.
  const sim = customerioSimulator();
  const spans: Array<{ start: number; end: number; keys: string[] }> = [];
  const app = Fastify({ logger: false, bodyLimit: 10 * 1024 * 1024 });
  app.addHook('preHandler', async (req) => {
    (req as unknown as { started: number }).started = performance.now();
    await new Promise((r) => setTimeout(r, 3)); // widen the window in which an overlap would show
  });
  app.addHook('onResponse', async (req) => {
    const body = req.body as { batch?: Array<{ identifiers?: { email?: string } }> } | undefined;
    spans.push({ start: (req as unknown as { started: number }).started, end: performance.now(), keys: (body?.batch ?? []).map((i) => i.identifiers?.email ?? '?') });
  });
  await app.register(sim.plugin, { prefix: '/cio' });
  const simUrl = await app.listen({ port: 0, host: '127.0.0.1' });
  const store = await openStore(db.url);
  let workers: ChildProcess[] = [];
  try {
    const settings = sim.settingsFor(`${simUrl}/cio`);
    const yaml = stringify({ ...(parse(world.yaml) as object) });
    const withCreds = parse(yaml) as { accounts: { acme: { destinations: { customerio: Record<string, unknown> } } } };
    Object.assign(withCreds.accounts.acme.destinations.customerio, settings);
    const config = writeConfig(dir, stringify(withCreds), db.url, { batchSize: 40 });

    const KEYS = 500;
    const PER_KEY = 10;
    const jobs: NewJob[] = [];
    for (let n = 0; n < PER_KEY; n++) {
      for (let k = 0; k < KEYS; k++) {
        jobs.push({
          account: 'acme',
          destination: 'acme/customerio',
          type: SYNC_OPS_V1,
          orderingKey: `lead:${k}`,
          payload: { subject: `k${k}@example.com`, ops: [{ kind: 'trackEvent', person: { email: `k${k}@example.com` }, name: 'seq', properties: { seq: n }, timestamp: Date.now(), messageId: `job-${k}-${n}` }] },
        });
      }
    }
    for (let i = 0; i < jobs.length; i += 1000) await store.enqueueJobs(jobs.slice(i, i + 1000));

    workers = startWorkers(3, config);
    await waitFor(() => drained(store), '5,000 jobs done', 150_000);
    const stats = await store.stats(Date.now());
    assert.equal(stats.jobs.done, KEYS * PER_KEY, 'every job done');
    assert.equal(stats.jobs.dead, 0);

    // Exactly once and in order: each key's events arrived as seq 0..9, once each.
    const byKey = new Map<string, number[]>();
    for (const e of sim.events) byKey.set(e.person, [...(byKey.get(e.person) ?? []), Number(e.data.seq)]);
    assert.equal(byKey.size, KEYS);
    for (const [key, seqs] of byKey) assert.deepEqual(seqs, [...Array(PER_KEY).keys()], `order and count for ${key}`);

    // Never two requests in flight for one key at the same time.
    const perKey = new Map<string, Array<{ start: number; end: number }>>();
    for (const s of spans) for (const key of s.keys) perKey.set(key, [...(perKey.get(key) ?? []), s]);
    for (const [key, list] of perKey) {
      list.sort((a, b) => a.start - b.start);
      for (let i = 1; i < list.length; i++) assert.ok(list[i]!.start >= list[i - 1]!.end, `${key} was delivered by two workers at once`);
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
