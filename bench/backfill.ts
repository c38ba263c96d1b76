/**
 * Backfill benchmark: `kommo-sync backfill` of N existing leads (default 100,000) against the Kommo
 * simulator at its real 7 requests/s limit. How long until every lead is synced, how many Kommo
 * requests that costs (2 per page of 250, so ~800 for 100,000: the floor is near 2 minutes), the
 * service's peak memory (it must stream, not hold the account), and how fast a live webhook that
 * arrives mid-way is delivered.
 *
 *   node --import tsx bench/backfill.ts [--leads 100000] [--destinations customerio] [--timeout S] [--json FILE]
 *
 * The simulated world (Kommo, the destinations' simulators) runs in this process with the N leads
 * created before any webhook subscription; the service is `node bin/kommo-sync.js serve` on a SQLite
 * file in its own process, as deployed, so its peak RSS (VmHWM) is its own. The backfill is
 * requested with the real CLI (`backfill --detach`); the clock runs from the request found in the
 * store until the backfill is done and no job is pending or leased.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';
import { startWorld } from '../src/demo/world.js';
import { destinationTypes } from '../src/destinations/index.js';
import { lastBackfill } from '../src/runtime/backfill.js';
import { openStore } from '../src/store/open.js';
import {
  cpuSecondsOf, fmt, freePort, HOST, intFlag, machine, machineCpu, memoryOf, onCleanup, parseFlags, progress, runBench, sleep, spawnNode, waitReady, waitUntil,
} from './lib.js';

const flags = parseFlags(process.argv.slice(2), ['leads', 'destinations', 'timeout', 'json'] as const);
const leads = intFlag(flags.leads, 'leads', 100_000);
const dests = (flags.destinations ?? 'customerio').split(',').map((s) => s.trim()).filter(Boolean);
for (const d of dests) if (!destinationTypes().includes(d)) throw new Error(`--destinations: unknown ${d}; registered: ${destinationTypes().join(', ')}`);
const timeoutS = intFlag(flags.timeout, 'timeout', 600);
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TARGETS = { seconds: 180, rssMiB: 250, kommoWindow: 7 };

async function main(): Promise<boolean> {
  const m = machine();
  const cpuAtStart = machineCpu();
  progress(`backfill bench: ${fmt(leads)} leads, destinations ${dests.join(',')}; ${m.nproc} CPUs, node ${m.node}, load ${m.load}, calibration ${m.calibrationMs} ms`);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kommo-sync-backfill-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  const storeUrl = `sqlite:${path.join(dir, 'backfill.db')}`;
  const world = await startWorld({ store: storeUrl, destinations: dests, overrides: { server: { port: 0, host: HOST }, log: { level: 'warn' } } });
  onCleanup(() => world.close());
  const kommo = world.kommo;

  // The account as it is before kommo-sync: leads spread over the stages, each with a contact.
  const t0 = performance.now();
  const stages = ['New lead', 'Qualified', 'Demo scheduled', 'Proposal sent', 'Negotiation'].map((n) => kommo.status(n).id);
  const industries = ['SaaS', 'E-commerce', 'Healthcare', 'Finance', 'Education', 'Other'];
  for (let i = 0; i < leads; i++) {
    const c = kommo.createContact({ name: `Person ${i}`, email: `person${i}@example.com` });
    kommo.createLead({ name: `Deal ${i}`, price: 1000 + i, contactIds: [c.id], statusId: stages[i % stages.length]!, fields: { Industry: industries[i % industries.length]!, Source: i % 2 ? 'Website' : 'Referral' } });
  }
  progress(`created ${fmt(leads)} leads with contacts in ${fmt((performance.now() - t0) / 1000, 1)} s`);

  const cfg = parse(world.yaml) as Record<string, unknown>;
  const configFile = path.join(dir, 'kommo-sync.yaml');
  writeFileSync(configFile, stringify(cfg));
  const port = await freePort();
  const serviceUrl = `http://${HOST}:${port}`;
  const serve = spawnNode('serve', ['bin/kommo-sync.js', 'serve', '--config', configFile, '--port', String(port)], repoRoot);
  await waitReady(serviceUrl, serve);
  world.subscribe(serviceUrl);
  const store = await openStore(storeUrl);
  onCleanup(() => store.close());
  await sleep(500);
  kommo.resetLog();
  for (const d of dests) world.vendors.get(d)!.sim.reset();
  const serveCpu0 = cpuSecondsOf(serve.pid);

  const cli = spawnNode('backfill', ['bin/kommo-sync.js', 'backfill', '--detach', '--config', configFile], repoRoot);
  await waitUntil('the backfill request in the store', async () => (await lastBackfill(store, world.account)) !== null, 60_000, 100);
  await cli.exited;
  const started = (await lastBackfill(store, world.account))!.startedAt;
  progress('backfill requested');

  let liveLatencyMs: number | null = null;
  let liveSent = false;
  let backfillDoneAt: number | null = null;
  let drainedAt: number | null = null;
  let peakRss = 0;
  let lastLine = 0;
  const deadline = Date.now() + timeoutS * 1000;
  const cio = dests[0] ? world.vendors.get(dests[0])!.sim : null;
  for (;;) {
    const s = await lastBackfill(store, world.account);
    const st = await store.stats(Date.now());
    peakRss = Math.max(peakRss, memoryOf(serve.pid).hwmMiB);
    const now = Date.now();
    if (s?.status === 'done' && backfillDoneAt === null) backfillDoneAt = s.finishedAt ?? now;
    // A live change half-way: how long it waits behind the backfill.
    if (!liveSent && s && s.total !== null && s.leads >= s.total / 2 && cio) {
      liveSent = true;
      const sentAt = Date.now();
      const c = kommo.createContact({ name: 'Live Person', email: 'live@example.com' });
      kommo.createLead({ name: 'Live deal', contactIds: [c.id] });
      void (async () => {
        await waitUntil('the live lead delivered', () => cio.items.some((i) => i.person === 'live@example.com' && i.ok), 120_000, 20);
        liveLatencyMs = Date.now() - sentAt;
        progress(`live lead delivered ${fmt(liveLatencyMs)} ms after its creation, at ${fmt(s.leads)} of ${fmt(s.total!)} leads`);
      })().catch(() => undefined);
    }
    if (backfillDoneAt !== null && st.jobs.pending + st.jobs.leased === 0 && st.inboxPending === 0) {
      drainedAt = now;
      break;
    }
    if (now - lastLine >= 5000) {
      lastLine = now;
      progress(`  t=${fmt((now - started) / 1000, 0)}s ${s?.status} ${fmt(s?.leads ?? 0)}/${s?.total === null || !s ? '?' : fmt(s.total)} leads, ${s?.waiting ?? ''} jobs pending ${st.jobs.pending} leased ${st.jobs.leased} done ${st.jobs.done}; Kommo requests ${kommo.requests.length}; service RSS peak ${fmt(peakRss)} MiB`);
    }
    if (now > deadline) {
      progress(`gave up after ${timeoutS} s`);
      break;
    }
    await sleep(100);
  }
  const wallS = ((drainedAt ?? Date.now()) - started) / 1000;
  const serveCores = (cpuSecondsOf(serve.pid) - serveCpu0) / wallS;
  peakRss = Math.max(peakRss, memoryOf(serve.pid).hwmMiB);
  const cpuAtEnd = machineCpu();
  const machineBusy = (cpuAtEnd.busy - cpuAtStart.busy) / Math.max(1, cpuAtEnd.total - cpuAtStart.total);
  const state = await lastBackfill(store, world.account);
  await serve.stop(15_000);

  const reqs = [...kommo.requests];
  const listReqs = reqs.filter((r) => r.method === 'GET' && r.path === '/api/v4/leads').length;
  const contactReqs = reqs.filter((r) => r.method === 'GET' && r.path === '/api/v4/contacts').length;
  const k429 = reqs.filter((r) => r.status === 429).length;
  const window = kommo.maxRequestsInWindow(1000);
  const perDest = dests.map((d) => {
    const sim = world.vendors.get(d)!.sim;
    const upserts = new Map<string, number>();
    for (const i of sim.items) if (i.kind === 'upsertPerson' && i.ok) upserts.set(i.person, (upserts.get(i.person) ?? 0) + 1);
    let missing = 0;
    let twice = 0;
    for (let i = 0; i < leads; i++) {
      const n = upserts.get(`person${i}@example.com`) ?? 0;
      if (n === 0) missing++;
      if (n > 1) twice++;
    }
    return { type: d, requests: sim.requests.length, missing, twice };
  });
  const drained = drainedAt !== null;
  const backfillS = backfillDoneAt === null ? null : (backfillDoneAt - started) / 1000;
  const checks: Array<[string, boolean]> = [
    ['backfill done, queue drained', drained && state?.status === 'done'],
    [`all ${fmt(leads)} leads read`, state?.leads === leads],
    ...perDest.map((d): [string, boolean] => [`${d.type}: every person upserted exactly once`, d.missing === 0 && d.twice === 0]),
    ['no 429 from Kommo', k429 === 0],
    ['the live lead delivered during the run', liveLatencyMs !== null],
  ];
  const targets: Array<[string, boolean]> = [
    [`done and delivered in < ${TARGETS.seconds} s`, drained && wallS < TARGETS.seconds],
    [`service peak RSS < ${TARGETS.rssMiB} MB`, peakRss < TARGETS.rssMiB],
    [`max Kommo requests in any 1 s <= ${TARGETS.kommoWindow}`, window <= TARGETS.kommoWindow],
  ];
  const summary = {
    bench: 'backfill',
    machine: m,
    settings: { leads, destinations: dests, store: 'sqlite' },
    results: {
      seconds: Number(wallS.toFixed(1)),
      backfillSeconds: backfillS === null ? null : Number(backfillS.toFixed(1)),
      leadsPerSecond: Math.round(leads / wallS),
      servicePeakRssMiB: Math.round(peakRss),
      serviceCores: Number(serveCores.toFixed(2)),
      machineBusy: Number(machineBusy.toFixed(2)),
      loadAtEnd: os.loadavg().map((x) => x.toFixed(2)).join(' '),
      liveLeadMs: liveLatencyMs,
      kommo: { total: reqs.length, leadPages: listReqs, contactReads: contactReqs, maxIn1s: window, status429: k429, backfillReported: state?.requests ?? null },
      jobs: state?.jobs ?? null,
      destinations: perDest,
    },
    checks: Object.fromEntries(checks),
    targets: Object.fromEntries(targets),
  };
  const line = (label: string, value: string): void => {
    process.stdout.write(`${label.padEnd(36)} ${value}\n`);
  };
  process.stdout.write('\n=== backfill results ===\n');
  line('leads', `${fmt(leads)} (destinations ${dests.join(', ')}, store sqlite, service = \`kommo-sync serve\` process)`);
  line('machine', `load ${m.load} at the start, ${os.loadavg().map((x) => x.toFixed(2)).join(' ')} at the end; all CPUs ${fmt(machineBusy * 100)}% busy during the run; calibration ${m.calibrationMs} ms`);
  line('time', `${fmt(wallS, 1)} s from the request to everything delivered (backfill itself done after ${backfillS === null ? '-' : fmt(backfillS, 1)} s) = ${fmt(leads / wallS)} leads/s`);
  line('service', `peak RSS ${fmt(peakRss)} MiB, ${fmt(serveCores, 2)} cores`);
  line('Kommo requests', `${reqs.length}: ${listReqs} lead lists (pages and counting), ${contactReqs} contact reads; max ${window} in any 1 s; ${k429} x 429`);
  line('live lead during the backfill', liveLatencyMs === null ? 'not delivered' : `delivered after ${fmt(liveLatencyMs)} ms`);
  for (const d of perDest) line(`${d.type}`, `${d.requests} requests; ${d.missing} people missing, ${d.twice} upserted twice`);
  for (const [what, ok] of checks) line(ok ? 'check ok' : 'CHECK FAILED', what);
  for (const [what, ok] of targets) line(ok ? 'target met' : 'TARGET MISSED', what);
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  if (flags.json) writeFileSync(flags.json, `${JSON.stringify(summary, null, 2)}\n`);
  return checks.every(([, ok]) => ok);
}

runBench(main, timeoutS * 1000 + 300_000);
