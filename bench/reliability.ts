/**
 * Reliability figures, as an operator meets them (the field report's table):
 *  1. restart: `kill -9` of `kommo-sync serve` in the middle of a burst of stage changes, then a
 *     restart; time from the restart to the first Kommo write and until every claim the killed
 *     process held is done (SQLite: taken back at start; PostgreSQL: after one lease), and the most
 *     Kommo requests in any 1 s window across the restart (the limit is 7);
 *  2. outage: a destination answers 503 for `--outage` seconds (60 by default) while leads keep
 *     changing; time from its recovery until everything is delivered;
 *  3. engagement: a burst of opens for leads kommo-sync already knows; Kommo calls per open.
 *
 *   node --import tsx bench/reliability.ts [--only restart|outage|engagement] [--outage 60] [--opens 1000] [--json FILE]
 *
 * The simulators run in this process; the service runs as `node bin/kommo-sync.js serve` (restart)
 * or in this process (outage, engagement).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { parse, stringify } from 'yaml';
import { startWorld, type World } from '../src/demo/world.js';
import type { CustomerioSimulator } from '../src/destinations/customerio/simulator.js';
import { startService } from '../src/runtime/service.js';
import { openStore } from '../src/store/open.js';
import type { Store } from '../src/store/store.js';
import { choiceFlag, freePort, HOST, intFlag, machine, onCleanup, parseFlags, progress, runBench, scratchPostgres, sleep, spawnNode, waitReady, waitUntil } from './lib.js';

const flags = parseFlags(process.argv.slice(2), ['only', 'outage', 'opens', 'json'] as const);
const only = choiceFlag(flags.only, 'only', ['all', 'restart', 'outage', 'engagement'] as const, 'all');
const outageS = intFlag(flags.outage, 'outage', 60);
const opens = intFlag(flags.opens, 'opens', 1000);
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const idle = async (store: Pick<Store, 'stats'>) => {
  const s = await store.stats(Date.now());
  return s.inboxPending === 0 && s.jobs.pending === 0 && s.jobs.leased === 0;
};

/** kill -9 mid-burst and restart; returns the restart figures. */
async function restart(storeKind: 'sqlite' | 'postgres'): Promise<Record<string, number | string>> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kommo-sync-rel-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  const storeUrl = storeKind === 'sqlite' ? `sqlite:${path.join(dir, 'ks.db')}` : scratchPostgres().url;
  // Kommo answers in 300 ms, so the kill lands with claims held.
  const world = await startWorld({ destinations: [], kommoLatencyMs: 300 });
  onCleanup(() => world.close());
  const lease = '30s';
  const cfg = parse(world.yaml) as Record<string, unknown>;
  cfg.store = storeUrl;
  cfg.worker = { lease, poll: '50ms', batchSize: 5 };
  const config = path.join(dir, 'kommo-sync.yaml');
  writeFileSync(config, stringify(cfg));
  const port = await freePort();
  const url = `http://${HOST}:${port}`;
  let serve = spawnNode('serve', ['bin/kommo-sync.js', 'serve', '--config', config, '--port', String(port)], repoRoot);
  await waitReady(url, serve);
  world.subscribe(url);
  const k = world.kommo;
  const leads = Array.from({ length: 40 }, (_, i) => k.createLead({ name: `Deal ${i}`, contactIds: [k.createContact({ name: `P ${i}`, email: `p${i}@example.com` }).id] }).id);
  await k.flushWebhooks();
  await sleep(1500);
  k.resetLog();
  const target = k.status('Negotiation');
  for (const id of leads) k.moveLead(id, target.id);
  await k.flushWebhooks();
  const store = await openStore(storeUrl);
  onCleanup(() => store.close());
  const noted = () => [...k.notes.values()].filter((n) => String(n.params.text).includes(target.name)).length;
  await waitUntil('the first notes', () => noted() > 0, 60_000);
  serve.proc.kill('SIGKILL');
  await serve.exited;
  const atKill = await store.stats(Date.now());
  const posts = () => k.requests.filter((r) => r.method === 'POST').length;
  const before = posts();
  const restartedAt = Date.now();
  serve = spawnNode('serve2', ['bin/kommo-sync.js', 'serve', '--config', config, '--port', String(port)], repoRoot);
  await waitUntil('a Kommo write after the restart', () => posts() > before, 120_000, 20);
  const firstWrite = k.requests.filter((r) => r.method === 'POST')[before]!.at - restartedAt;
  await waitUntil('every note and an idle queue', async () => noted() >= leads.length && (await idle(store)), 120_000, 20);
  const drained = Date.now() - restartedAt;
  await serve.stop();
  return {
    store: storeKind,
    lease,
    claimsHeldAtKill: atKill.jobs.leased,
    restartToFirstKommoWriteMs: Math.round(firstWrite),
    restartToClaimsDoneMs: drained,
    maxKommoRequestsIn1s: k.maxRequestsInWindow(1000),
  };
}

/** A destination down for `outageS` seconds; time from its recovery until all is delivered. */
async function outage(): Promise<Record<string, number>> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kommo-sync-rel-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  const world: World = await startWorld({ destinations: ['customerio'], store: `sqlite:${path.join(dir, 'ks.db')}`, overrides: { server: { port: 0, host: HOST }, log: { level: 'silent' } } });
  onCleanup(() => world.close());
  const service = await startService({ loaded: world.loaded, log: pino({ level: 'silent' }), intake: true, work: true, port: 0, host: HOST });
  onCleanup(() => service.close());
  world.subscribe(service.url!);
  const k = world.kommo;
  const cio = world.vendors.get('customerio')!.sim as CustomerioSimulator;
  cio.faults.outage({ status: 503 });
  const started = Date.now();
  const stages = ['Qualified', 'Demo scheduled', 'Proposal sent', 'Negotiation'];
  let n = 0;
  // Leads keep coming and moving during the outage, as on a normal day.
  while (Date.now() - started < outageS * 1000) {
    const c = k.createContact({ name: `O ${n}`, email: `o${n}@example.com` });
    const lead = k.createLead({ name: `Outage deal ${n}`, contactIds: [c.id] });
    k.moveLead(lead.id, k.status(stages[n % stages.length]!).id);
    await k.flushWebhooks();
    n++;
    await sleep(1000);
  }
  const down = (Date.now() - started) / 1000;
  cio.faults.outage(null);
  const recovered = Date.now();
  await waitUntil('everything delivered after recovery', async () => (await idle(service.store)) && Array.from({ length: n }, (_, i) => `o${i}@example.com`).every((e) => cio.people.has(e)), 300_000, 50);
  return { outageSeconds: Number(down.toFixed(1)), leadsDuringOutage: n, recoveryToAllDeliveredMs: Date.now() - recovered, dead: (await service.store.stats(Date.now())).jobs.dead };
}

/** Opens for known leads: Kommo calls per open. */
async function engagement(): Promise<Record<string, number>> {
  const world = await startWorld({ destinations: ['customerio'], overrides: { server: { port: 0, host: HOST }, log: { level: 'silent' } } });
  onCleanup(() => world.close());
  const service = await startService({ loaded: world.loaded, log: pino({ level: 'silent' }), intake: true, work: true, port: 0, host: HOST });
  onCleanup(() => service.close());
  world.subscribe(service.url!);
  const k = world.kommo;
  const cio = world.vendors.get('customerio')!.sim as CustomerioSimulator;
  const leads = Math.max(1, Math.floor(opens / 4));
  const emails = Array.from({ length: leads }, (_, i) => `e${i}@example.com`);
  for (const email of emails) k.createLead({ name: email, contactIds: [k.createContact({ name: email, email }).id] });
  await k.flushWebhooks();
  await waitUntil('the leads synced and indexed', async () => (await idle(service.store)) && (await service.store.leadsByEmail(world.account, emails.at(-1)!)).length > 0, 120_000);
  k.resetLog();
  const url = world.vendorWebhookUrl(service.url!, 'customerio');
  const t0 = Date.now();
  for (let i = 0; i < opens; i += 50) {
    await Promise.all(Array.from({ length: Math.min(50, opens - i) }, (_, j) => cio.sendEngagement(url, 'opened', emails[(i + j) % leads]!)));
  }
  await waitUntil('the opens routed', () => idle(service.store), 120_000);
  const requests = k.requests.length;
  return { opens, knownLeads: leads, kommoRequests: requests, kommoRequestsPerOpen: Number((requests / opens).toFixed(4)), reads: k.requests.filter((r) => r.method === 'GET').length, seconds: Number(((Date.now() - t0) / 1000).toFixed(1)) };
}

async function main(): Promise<boolean> {
  const m = machine();
  progress(`reliability bench: ${only}; ${m.nproc} CPUs, node ${m.node}, load ${m.load}, calibration ${m.calibrationMs} ms`);
  const results: Record<string, unknown> = {};
  const checks: Array<[string, boolean]> = [];
  if (only === 'all' || only === 'restart') {
    for (const kind of ['sqlite', 'postgres'] as const) {
      const r = await restart(kind);
      results[`restart_${kind}`] = r;
      progress(`restart (${kind}): ${JSON.stringify(r)}`);
      const leaseMs = 30_000;
      checks.push([`${kind}: first Kommo write within ${kind === 'sqlite' ? '5 s' : 'lease + 5 s'} of the restart`, Number(r.restartToFirstKommoWriteMs) <= (kind === 'sqlite' ? 5000 : leaseMs + 5000)]);
      checks.push([`${kind}: at most 7 Kommo requests in any 1 s across the restart`, Number(r.maxKommoRequestsIn1s) <= 7]);
    }
  }
  if (only === 'all' || only === 'outage') {
    const r = await outage();
    results.outage = r;
    progress(`outage: ${JSON.stringify(r)}`);
    checks.push([`everything delivered within 10 s of recovery after a ${outageS} s outage`, r.recoveryToAllDeliveredMs! <= 10_000 && r.dead === 0]);
  }
  if (only === 'all' || only === 'engagement') {
    const r = await engagement();
    results.engagement = r;
    progress(`engagement: ${JSON.stringify(r)}`);
    checks.push(['at most 0.05 Kommo calls per open', r.kommoRequestsPerOpen! <= 0.05]);
  }
  process.stdout.write('\n=== reliability results ===\n');
  for (const [k, v] of Object.entries(results)) process.stdout.write(`${k.padEnd(20)} ${JSON.stringify(v)}\n`);
  for (const [what, ok] of checks) process.stdout.write(`${ok ? 'target met   ' : 'TARGET MISSED'} ${what}\n`);
  const summary = { bench: 'reliability', machine: m, settings: { only, outageS, opens }, results, targets: Object.fromEntries(checks) };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  if (flags.json) writeFileSync(flags.json, `${JSON.stringify(summary, null, 2)}\n`);
  return true;
}

runBench(main, 30 * 60_000);
