/**
 * Burst benchmark: a sales team moves N leads to another stage at once. How long until every
 * resulting sync is done, how many Kommo API requests that costs (7 requests/s budget), and how
 * many requests each destination received, per event, with nothing lost in any of them.
 *
 *   node --import tsx bench/burst.ts [--events 2000] [--store sqlite|postgres] [--destinations all|none|TYPE,TYPE]
 *                                    [--service process|in-process] [--mode live|backlog] [--processes N]
 *                                    [--timeout S] [--json FILE] [--profile DIR]
 *
 * Destinations come from the registry (`all` = every registered type, default customerio;
 * KOMMO_SYNC_DESTINATIONS adds plugins, as for the CLI). The simulated world (Kommo simulator at its
 * default 7 requests/s limit, each destination's simulator) runs in this process; the service (intake + router + workers, real HTTP on 127.0.0.1, a SQLite file or a
 * scratch PostgreSQL schema) runs as `node bin/kommo-sync.js serve` in its own process by default, as
 * deployed (`--service in-process`: startService() in this process, sharing its event loop with the
 * simulators; `--mode backlog` is always in-process). This process only reads the store to see when
 * the work is done. N leads with a main contact each are created before the webhook
 * subscription exists (so creation sends no webhook), the logs of both simulators are reset, then
 * every lead is moved to another stage in one go; the simulator sends the resulting webhooks
 * (`leads[status]` and `leads[update]` for each move) to the service, one at a time, as fast as the
 * service answers. The clock runs from the first move until the inbox is empty, no job is pending
 * or leased, and (the world config has crmNotes for stage changes) every lead has its sync note.
 *
 * --mode backlog (diagnostic): the webhooks are all stored first by an intake-only service; then a
 * router + worker service is started on the same store and the clock runs from its start. This is
 * the best case for batching (every event is in the inbox at once), so it shows the request floor
 * of the design, separately from how fast the webhooks arrive.
 *
 * --processes N (PostgreSQL, live mode): besides the service (intake + router +
 * workers), N-1 child processes `node bin/kommo-sync.js worker --config F` work on the same schema
 * against the same simulators; the Kommo figures then cover all processes together.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { parse, stringify } from 'yaml';
import { loadDestinationPlugins } from '../src/cli/plugins.js';
import { startWorld } from '../src/demo/world.js';
import { destinationTypes } from '../src/destinations/index.js';
import { startService, type Service } from '../src/runtime/service.js';
import { openStore } from '../src/store/open.js';
import type { Store } from '../src/store/store.js';
import {
  choiceFlag, cpuSecondsOf, fmt, freePort, HOST, intFlag, machine, onCleanup, parseFlags, profileArgs, progress, runBench, scratchPostgres, sleep, spawnNode, waitReady, type Child,
} from './lib.js';

const flags = parseFlags(process.argv.slice(2), ['events', 'store', 'destinations', 'mode', 'processes', 'service', 'timeout', 'json', 'profile'] as const);
const events = intFlag(flags.events, 'events', 2000);
const storeKind = choiceFlag(flags.store, 'store', ['sqlite', 'postgres'] as const, 'sqlite');
await loadDestinationPlugins(process.env.KOMMO_SYNC_DESTINATIONS);
const dests = destinationList(flags.destinations ?? 'customerio');
const dest = dests.length ? dests.join(',') : 'none';
const timeoutS = intFlag(flags.timeout, 'timeout', 120);
const mode = choiceFlag(flags.mode, 'mode', ['live', 'backlog'] as const, 'live');
const processes = intFlag(flags.processes, 'processes', 1);
const serviceKind = mode === 'backlog' ? 'in-process' : choiceFlag(flags.service, 'service', ['process', 'in-process'] as const, 'process');
if (processes > 1 && storeKind !== 'postgres') throw new Error('--processes N > 1 needs --store postgres (worker processes share the queue through PostgreSQL)');
if (processes > 1 && mode !== 'live') throw new Error('--processes N > 1 is for --mode live only');
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** How long the extra worker processes get to start (they log warnings only, so there is no line to wait for). */
const CHILD_START_MS = 3000;

const TARGETS = { kommoPerEvent: 0.02, drainSeconds: 10, kommoWindow: 7 };
/** Requests per event each vendor's issue set as its target (types not listed: none). */
const VENDOR_TARGETS: Record<string, number> = { customerio: 0.05, iterable: 0.02, moosend: 0.05, segment: 0.01, rudderstack: 0.01 };

function destinationList(v: string): string[] {
  if (v === 'none') return [];
  const all = destinationTypes();
  if (v === 'all') return all;
  const list = v.split(',').map((x) => x.trim()).filter(Boolean);
  const unknown = list.filter((t) => !all.includes(t));
  if (unknown.length) throw new Error(`--destinations: unknown ${unknown.join(', ')}; registered: ${all.join(', ')} (or all, none)`);
  return list;
}

function classifyKommo(method: string, p: string): string {
  if (method === 'GET' && p === '/api/v4/leads') return 'GET leads';
  if (method === 'GET' && p === '/api/v4/contacts') return 'GET contacts';
  if (method === 'POST' && /^\/api\/v4\/leads(\/\d+)?\/notes$/.test(p)) return 'POST notes';
  return 'other';
}

async function main(): Promise<boolean> {
  const m = machine();
  progress(`burst bench: ${events} stage changes, store=${storeKind}, destinations=${dest}, processes=${processes}; ${m.nproc} CPUs, node ${m.node}, load ${m.load}, calibration ${m.calibrationMs} ms`);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kommo-sync-burst-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  const storeUrl = storeKind === 'sqlite' ? `sqlite:${path.join(dir, 'burst.db')}` : scratchPostgres().url;

  const world = await startWorld({
    store: storeUrl,
    destinations: dests,
    overrides: { server: { port: 0, host: HOST }, log: { level: 'warn' } },
  });
  onCleanup(() => world.close());
  const kommo = world.kommo;
  const log = pino({ level: 'warn' }, pino.destination(2));
  // live: one service does everything, as `kommo-sync serve`. backlog: intake only for now.
  let serviceUrl: string;
  let store: Pick<Store, 'stats'>;
  let intake: Service | null = null;
  let serveChild: Child | null = null;
  if (serviceKind === 'process') {
    const cfg = parse(world.yaml) as Record<string, unknown>;
    cfg.store = storeUrl;
    const configFile = path.join(dir, 'kommo-sync-serve.yaml');
    writeFileSync(configFile, stringify(cfg));
    const port = await freePort();
    serviceUrl = `http://${HOST}:${port}`;
    // --profile DIR: a V8 CPU profile of the service process (written when it exits).
    const prof = profileArgs(flags.profile);
    serveChild = spawnNode('serve', [...prof, 'bin/kommo-sync.js', 'serve', '--config', configFile, '--port', String(port)], repoRoot);
    await waitReady(serviceUrl, serveChild);
    // Read-only use: the service process migrated the store and does all the writing.
    const reader = await openStore(storeUrl);
    onCleanup(() => reader.close());
    store = reader;
  } else {
    intake = await startService({ loaded: world.loaded, log, intake: true, work: mode === 'live', port: 0, host: HOST });
    const started = intake;
    onCleanup(() => started.close());
    serviceUrl = intake.url!;
    store = intake.store;
  }
  progress(`service at ${serviceUrl} (${serviceKind === 'process' ? `\`kommo-sync serve\` process, pid ${serveChild!.pid}` : mode === 'live' ? 'intake + router + workers in this process' : 'intake only, in this process'}), Kommo simulator at ${world.kommoUrl} (7 requests/s), store ${storeKind}`);

  // --processes N: N-1 `kommo-sync worker` processes on the same schema and simulators. The schema
  // is already migrated by the service above. Started now, so their startup reads are done (and
  // wiped by the log reset below) before the burst.
  const workers: Child[] = [];
  let workersStarted = 0;
  if (processes > 1) {
    const cfg = parse(world.yaml) as Record<string, unknown>;
    cfg.store = storeUrl;
    const configFile = path.join(dir, 'kommo-sync-worker.yaml');
    writeFileSync(configFile, stringify(cfg));
    for (let i = 1; i < processes; i++) {
      const child = spawnNode(`worker${i}`, ['bin/kommo-sync.js', 'worker', '--config', configFile], repoRoot);
      workers.push(child);
    }
    workersStarted = performance.now();
    progress(`started ${workers.length} worker process(es) (pids ${workers.map((w) => w.pid).join(', ')}) with ${configFile}`);
  }

  // ---------- setup: N leads with a contact each, no webhooks yet ----------
  const industries = ['SaaS', 'E-commerce', 'Healthcare', 'Finance', 'Education', 'Other'];
  const leads: number[] = [];
  for (let i = 0; i < events; i++) {
    const c = kommo.createContact({ name: `Person ${i}`, email: `person${i}@example.com` });
    const l = kommo.createLead({
      name: `Deal ${i}`,
      price: 1000 + i,
      contactIds: [c.id],
      fields: { Industry: industries[i % industries.length]!, Source: i % 2 ? 'Website' : 'Referral' },
    });
    leads.push(l.id);
  }
  if (workers.length) {
    await sleep(Math.max(0, CHILD_START_MS - (performance.now() - workersStarted)));
    const dead = workers.filter((w) => w.proc.exitCode !== null || w.proc.signalCode !== null);
    if (dead.length) throw new Error(`worker process(es) ${dead.map((w) => w.name).join(', ')} exited during startup`);
    progress(`${workers.length} worker process(es) running after ${fmt((performance.now() - workersStarted) / 1000, 1)} s`);
  }
  world.subscribe(serviceUrl);
  await kommo.flushWebhooks();
  // Startup reads (stages, fields, users) are not part of the burst.
  await sleep(500);
  kommo.resetLog();
  const sims = dests.map((t) => ({ type: t, sim: world.vendors.get(t)!.sim }));
  for (const v of sims) v.sim.reset();
  const notesBefore = kommo.notes.size;
  const webhooksBefore = kommo.webhooksSent.length;
  progress(`created ${events} leads with contacts; subscribed; logs reset`);

  // ---------- the burst ----------
  const target = kommo.status('Proposal sent');
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = process.cpuUsage();
  const workerCpu0 = workers.map((w) => cpuSecondsOf(w.pid));
  const serveCpu0 = serveChild ? cpuSecondsOf(serveChild.pid) : 0;
  let t0 = performance.now();
  const tBurst = t0;
  for (const id of leads) kommo.moveLead(id, target.id);
  const movedMs = performance.now() - t0;
  let webhooksDoneMs = NaN;
  const flushed = kommo.flushWebhooks().then(() => {
    webhooksDoneMs = performance.now() - t0;
  });
  if (mode === 'backlog') {
    await flushed;
    await sleep(200); // the last group commit
    const pending = (await store.stats(Date.now())).inboxPending;
    progress(`backlog: ${kommo.webhooksSent.length - webhooksBefore} webhooks stored in ${fmt(webhooksDoneMs / 1000, 2)} s, ${pending} events in the inbox; starting router + workers`);
    const worker = await startService({ loaded: world.loaded, log, intake: false, work: true });
    onCleanup(() => worker.close());
    store = worker.store;
    // Its startup reads (stages, fields) are not part of the burst; the router loads lazily (5 ms).
    kommo.resetLog();
    for (const v of sims) v.sim.reset();
    t0 = performance.now();
  }

  const notesFor = (): number => {
    let n = 0;
    for (const note of kommo.notes.values()) if (String(note.params.text).includes(target.name)) n++;
    return n;
  };
  let drainMs = NaN;
  let lastLine = 0;
  let stats = await store.stats(Date.now());
  const deadline = t0 + timeoutS * 1000;
  for (;;) {
    stats = await store.stats(Date.now());
    const notes = kommo.notes.size - notesBefore;
    const sent = kommo.webhooksSent.length - webhooksBefore;
    const idle = Number.isFinite(webhooksDoneMs) && stats.inboxPending === 0 && stats.jobs.pending === 0 && stats.jobs.leased === 0;
    if (idle && notes >= events) {
      drainMs = performance.now() - t0;
      break;
    }
    const now = performance.now();
    if (now - lastLine >= 1000) {
      lastLine = now;
      progress(`  t=${((now - t0) / 1000).toFixed(1)}s webhooks sent ${sent}, inbox pending ${stats.inboxPending}, jobs pending ${stats.jobs.pending} leased ${stats.jobs.leased} done ${stats.jobs.done} dead ${stats.jobs.dead}, notes ${notes}, Kommo requests ${kommo.requests.length}${sims.map((v) => `, ${v.type} requests ${v.sim.requests.length}`).join('')}`);
    }
    if (now > deadline) {
      progress(`gave up after ${timeoutS} s`);
      break;
    }
    if (idle && stats.jobs.dead > 0) {
      progress('queue is idle but some jobs are dead: stopping');
      break;
    }
    const rejected = kommo.webhooksSent.slice(webhooksBefore).filter((h) => h.status !== 200).length;
    if (idle && rejected > 0) {
      progress(`queue is idle but ${rejected} webhooks were not accepted (the simulator does not retry): stopping`);
      break;
    }
    await sleep(20);
  }
  await flushed;
  const elu = performance.eventLoopUtilization(elu0);
  const cpu = process.cpuUsage(cpu0);
  const wallS = (performance.now() - tBurst) / 1000;
  const workerCores = workers.map((w, i) => {
    try {
      return (cpuSecondsOf(w.pid) - workerCpu0[i]!) / wallS;
    } catch {
      return NaN; // exited
    }
  });
  const serveCores = serveChild ? (cpuSecondsOf(serveChild.pid) - serveCpu0) / wallS : null;
  const workersAlive = workers.every((w) => w.proc.exitCode === null && w.proc.signalCode === null);
  // Stop the worker processes now (also done by the cleanup on error): SIGTERM, they finish what is in flight.
  const workerExits = await Promise.all(workers.map((w) => w.stop(10_000)));

  // ---------- figures ----------
  const reqs = [...kommo.requests];
  const byKind = new Map<string, number>();
  const others = new Map<string, number>();
  for (const r of reqs) {
    const k = classifyKommo(r.method, r.path);
    byKind.set(k, (byKind.get(k) ?? 0) + 1);
    if (k === 'other') others.set(`${r.method} ${r.path}`, (others.get(`${r.method} ${r.path}`) ?? 0) + 1);
  }
  const k429 = reqs.filter((r) => r.status === 429).length;
  const kommoWindow = kommo.maxRequestsInWindow(1000);
  const hooks = kommo.webhooksSent.slice(webhooksBefore);
  const hookStatus = new Map<number, number>();
  for (const h of hooks) hookStatus.set(h.status, (hookStatus.get(h.status) ?? 0) + 1);
  const notes = notesFor();
  const per = (n: number): number => n / events;
  // Per destination: requests, and whether every moved lead's person got an applied item (the
  // simulators' neutral view), so "nothing lost" is checked in every vendor alike.
  const vendors = sims.map(({ type, sim }) => {
    const byPath = new Map<string, number>();
    for (const r of sim.requests) byPath.set(`${r.method} ${r.path} ${r.status}`, (byPath.get(`${r.method} ${r.path} ${r.status}`) ?? 0) + 1);
    const reached = new Set(sim.items.filter((i) => i.ok).map((i) => i.person));
    let missing = 0;
    for (let i = 0; i < events; i++) if (!reached.has(`person${i}@example.com`)) missing++;
    return { type, requests: sim.requests.length, perEvent: per(sim.requests.length), byPath, items: sim.items.length, refused: sim.items.filter((i) => !i.ok).length, missing };
  });

  const drained = Number.isFinite(drainMs);
  const checks: Array<[string, boolean]> = [
    ['every webhook answered 200', hooks.length > 0 && hooks.every((h) => h.status === 200)],
    [`drained: inbox empty, no pending/leased job, ${events} notes`, drained],
    ['no dead job', stats.jobs.dead === 0],
    ['no 429 from Kommo', k429 === 0],
    ...vendors.map((v): [string, boolean] => [`${v.type}: every moved lead's person reached it, nothing refused`, v.missing === 0 && v.refused === 0]),
    ...(workers.length ? [[`${workers.length} worker process(es) alive until the end`, workersAlive] as [string, boolean]] : []),
  ];
  const targetChecks: Array<[string, boolean]> = [
    [`Kommo requests per event <= ${TARGETS.kommoPerEvent}`, per(reqs.length) <= TARGETS.kommoPerEvent],
    [`max Kommo requests in any 1 s <= ${TARGETS.kommoWindow}`, kommoWindow <= TARGETS.kommoWindow],
    [`burst processed in < ${TARGETS.drainSeconds} s`, drained && drainMs / 1000 < TARGETS.drainSeconds],
    ...vendors.filter((v) => VENDOR_TARGETS[v.type] !== undefined).map((v): [string, boolean] => [`${v.type} requests per event <= ${VENDOR_TARGETS[v.type]}`, v.perEvent <= VENDOR_TARGETS[v.type]!]),
  ];

  const summary = {
    bench: 'burst',
    machine: m,
    settings: { events, store: storeKind, destinations: dest, mode, processes, service: serviceKind },
    results: {
      eventLoopUtilization: Number(elu.utilization.toFixed(2)),
      processCores: Number(((cpu.user + cpu.system) / 1e6 / wallS).toFixed(2)),
      serviceProcessCores: serveCores === null ? null : Number(serveCores.toFixed(2)),
      workerProcessCores: workerCores.map((c) => Number(c.toFixed(2))),
      workerExits,
      drainSeconds: drained ? Number((drainMs / 1000).toFixed(2)) : null,
      tailAfterLastWebhookSeconds: drained && mode === 'live' ? Number(((drainMs - webhooksDoneMs) / 1000).toFixed(2)) : null,
      webhooksDeliveredSeconds: Number((webhooksDoneMs / 1000).toFixed(2)),
      movesSeconds: Number((movedMs / 1000).toFixed(3)),
      webhooksSent: hooks.length,
      webhookStatuses: Object.fromEntries(hookStatus),
      jobs: stats.jobs,
      notesWritten: notes,
      kommo: {
        total: reqs.length,
        perEvent: Number(per(reqs.length).toFixed(4)),
        getLeads: byKind.get('GET leads') ?? 0,
        getContacts: byKind.get('GET contacts') ?? 0,
        postNotes: byKind.get('POST notes') ?? 0,
        other: Object.fromEntries(others),
        maxIn1s: kommoWindow,
        status429: k429,
      },
      destinations: Object.fromEntries(vendors.map((v) => [v.type, { total: v.requests, perEvent: Number(v.perEvent.toFixed(4)), items: v.items, refused: v.refused, missingPeople: v.missing, byRequest: Object.fromEntries(v.byPath) }])),
    },
    checks: Object.fromEntries(checks),
    targets: Object.fromEntries(targetChecks),
  };

  const line = (label: string, value: string): void => {
    process.stdout.write(`${label.padEnd(36)} ${value}\n`);
  };
  process.stdout.write('\n=== burst results ===\n');
  line('events (stage changes)', `${events} (store ${storeKind}, destinations ${dest}, mode ${mode}, service ${serviceKind}, processes ${processes})`);
  line('machine', `calibration ${m.calibrationMs} ms at the start (lower = faster; see bench/lib.ts calibrate)`);
  line('webhooks delivered', `${hooks.length} (${[...hookStatus].map(([s, n]) => `${n} x ${s}`).join(', ')}) in ${fmt(webhooksDoneMs / 1000, 2)} s = ${fmt(hooks.length / (webhooksDoneMs / 1000))}/s`);
  line('time to drain', drained ? `${fmt(drainMs / 1000, 2)} s from ${mode === 'live' ? `the first move (${fmt((drainMs - webhooksDoneMs) / 1000, 2)} s after the last webhook)` : 'the router start (all events already stored)'}` : 'NOT DRAINED');
  line(serveChild ? 'this process (simulators)' : 'this process (simulators + service)', `event loop ${fmt(elu.utilization * 100)}% busy, ${fmt((cpu.user + cpu.system) / 1e6 / wallS, 2)} cores over ${fmt(wallS, 1)} s`);
  if (serveCores !== null) line('service process', `${fmt(serveCores, 2)} cores`);
  if (workers.length) line('worker processes', `${workerCores.map((c) => `${fmt(c, 2)} cores`).join(', ')}; exit ${workerExits.join(', ')}`);
  line('jobs', `done ${stats.jobs.done}, dead ${stats.jobs.dead}, pending ${stats.jobs.pending}, leased ${stats.jobs.leased}; notes written ${notes}`);
  line('Kommo requests', `${reqs.length} = ${fmt(per(reqs.length), 4)} per event`);
  line('  GET leads / GET contacts / POST notes', `${byKind.get('GET leads') ?? 0} / ${byKind.get('GET contacts') ?? 0} / ${byKind.get('POST notes') ?? 0}`);
  line('  other', others.size ? [...others].map(([k, n]) => `${n} x ${k}`).join(', ') : '0');
  line('  max in any 1 s window / 429s', `${kommoWindow} / ${k429}`);
  for (const v of vendors) {
    line(`${v.type} requests`, `${v.requests} = ${fmt(v.perEvent, 4)} per event; ${v.items} items, ${v.refused} refused, ${v.missing} people missing`);
    line('  by request', [...v.byPath].map(([k, n]) => `${n} x ${k}`).join(', '));
  }
  for (const [what, ok] of checks) line(ok ? 'check ok' : 'CHECK FAILED', what);
  for (const [what, ok] of targetChecks) line(ok ? 'target met' : 'TARGET MISSED', what);
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  if (flags.json) writeFileSync(flags.json, `${JSON.stringify(summary, null, 2)}\n`);
  return checks.every(([, ok]) => ok);
}

runBench(main, timeoutS * 1000 + 180_000);
