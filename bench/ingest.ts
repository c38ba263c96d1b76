/**
 * Webhook intake benchmark: how many realistic Kommo webhooks per second the service durably
 * accepts, at what latency and memory.
 *
 *   node --import tsx bench/ingest.ts [--store sqlite|postgres] [--processes N] [--duration S]
 *                                      [--connections C] [--role serve|intake] [--warmup S] [--json FILE]
 *                                      [--profile DIR] [--rate N] [--node-flags "F ..."]
 *
 * --rate N offers N webhooks/s in total (autocannon overallRate) instead of as many as the service
 * can answer: the latency figures are then latency at that load, not at saturation. (autocannon
 * releases each second's quota in bursts, so these latencies include the bursts' own queueing.)
 * --node-flags "F ..." passes V8/Node flags to the service processes (for GC A/B runs).
 *
 * Setup: the simulated world (Kommo simulator, no marketing destination) runs in this process only so
 * the generated config is valid and, with `--role serve`, the router has a Kommo to talk to. N service
 * processes are started as separate OS processes:
 *   --role serve  (default) `node bin/kommo-sync.js serve --config F --port P`: the real CLI, i.e.
 *                 intake + router + workers, as deployed. The webhooks name leads the simulator does
 *                 not have, so the router's work per event is claim + one batched Kommo read (at the
 *                 7 rps budget) + mark routed; no jobs are created.
 *   --role intake `node --import tsx bench/ingest-child.ts`: the same startService() with work:false,
 *                 i.e. intake alone (HTTP + parse + durable insert), nothing competing for the CPU.
 * autocannon can only target one URL, so there is one autocannon instance per service process, all
 * running concurrently in this process, `--connections` split evenly between them; their counts are
 * summed and the latency percentiles are computed over every 2xx response of all instances.
 *
 * Each request is a ~1.5 KB Kommo status-change form (leads[status][0][...] with tags and custom
 * fields, as Kommo sends it) with its own lead id and last_modified, so every webhook is new to the
 * dedup index. The run fails on any non-2xx answer, socket error or timeout, and when an answered
 * webhook is missing from the store afterwards.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import Database from 'better-sqlite3';
import { startWorld } from '../src/demo/world.js';
import { openStore } from '../src/store/open.js';
import { bodyTemplate, fillBody } from './kommo-body.js';
import {
  choiceFlag, cpuSecondsOf, cpuSplitOf, fmt, freePort, HOST, intFlag, machine, machineCpu, memoryOf, onCleanup, parseFlags, percentile, postgresBaseUrl, postgresCpuSeconds,
  profileArgs, progress, runBench, scratchPostgres, spawnNode, waitReady, withPg, type Child,
} from './lib.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const flags = parseFlags(process.argv.slice(2), ['store', 'processes', 'duration', 'connections', 'role', 'warmup', 'json', 'profile', 'rate', 'node-flags'] as const);
const storeKind = choiceFlag(flags.store, 'store', ['sqlite', 'postgres'] as const, 'sqlite');
const processes = intFlag(flags.processes, 'processes', 1);
const duration = intFlag(flags.duration, 'duration', 15);
/**
 * Requests in flight at once. Both ends of the range measure the client more than the service: at
 * 10 (autocannon's default) throughput is capped near 10 / commit latency (~1.5 ms: the answer
 * waits for the fsync), at 50 the mean latency is at least 50 / throughput (Little's law: >= 7 ms
 * at 7,000/s whatever the service does). 20 keeps the service busy without a deep queue; the
 * bench prints the queueing floor, and RESULTS.md has runs at 10, 20 and 50.
 */
const connections = intFlag(flags.connections, 'connections', 20);
const role = choiceFlag(flags.role, 'role', ['serve', 'intake'] as const, 'serve');
const warmup = intFlag(flags.warmup, 'warmup', 3, 0);
/** --rate N: offer N webhooks/s in total (0: as fast as the service answers, the default). */
const rate = intFlag(flags.rate, 'rate', 0, 0);
/** --node-flags "F ...": extra node flags for the service processes (A/B of V8 or GC settings). */
const nodeFlags = (flags['node-flags'] ?? '').split(/\s+/).filter(Boolean);
if (storeKind === 'sqlite' && processes > 1) {
  throw new Error('--processes > 1 needs --store postgres (a SQLite file belongs to one process)');
}
if (connections < processes) throw new Error('--connections must be at least --processes');

const TARGETS = { rps: 5_000, p99Ms: 25, rssMiB: 200 };

// ---------- one autocannon instance per service process ----------

interface Tally {
  /** Lead ids whose webhook got a 2xx answering `accepted: 1`. */
  acked: number[];
  duplicates: number;
  non2xx: Map<number, { count: number; sample: string }>;
  /** Every 2xx latency (ms) of the measured phase. */
  latencies: number[];
  measuring: boolean;
  answered: number;
}

function runCannon(url: string, conns: number, seconds: number, nextBody: () => { id: number; body: string }, tally: Tally, perInstanceRate = 0): Promise<autocannon.Result> {
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url,
        connections: conns,
        ...(perInstanceRate > 0 ? { overallRate: perInstanceRate } : {}),
        duration: seconds,
        pipelining: 1,
        timeout: 10,
        requests: [
          {
            method: 'POST',
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
            setupRequest: (req, context) => {
              const { id, body } = nextBody();
              context.lead = id;
              return { ...req, body };
            },
            onResponse: (status, body, context) => {
              if (status >= 200 && status < 300) {
                if (body.includes('"accepted":1')) tally.acked.push(context.lead as number);
                else tally.duplicates += 1;
                return;
              }
              const e = tally.non2xx.get(status) ?? { count: 0, sample: body.slice(0, 300) };
              e.count += 1;
              tally.non2xx.set(status, e);
            },
          },
        ],
      },
      (err, result) => (err ? reject(err) : resolve(result)),
    );
    instance.on('response', (_client, status, _bytes, responseTime) => {
      tally.answered += 1;
      if (tally.measuring && status >= 200 && status < 300) tally.latencies.push(responseTime);
    });
  });
}

async function main(): Promise<boolean> {
  const m = machine();
  progress(`ingest bench: store=${storeKind} role=${role} processes=${processes} connections=${connections} duration=${duration}s warmup=${warmup}s`);
  progress(`machine: ${m.nproc} CPUs (${m.cpu}), node ${m.node}, load ${m.load}, calibration ${m.calibrationMs} ms`);

  const dir = mkdtempSync(path.join(os.tmpdir(), 'kommo-sync-bench-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));

  let storeUrl: string;
  let pgInfo: { base: string; schema: string } | null = null;
  if (storeKind === 'sqlite') {
    storeUrl = `sqlite:${path.join(dir, 'bench.db')}`;
  } else {
    postgresBaseUrl();
    const s = scratchPostgres();
    storeUrl = s.url;
    pgInfo = { base: s.base, schema: s.schema };
  }

  const world = await startWorld({
    store: storeUrl,
    destinations: [],
    overrides: { server: { port: 0, host: HOST }, log: { level: 'warn' } },
  });
  onCleanup(() => world.close());
  const configFile = path.join(dir, 'kommo-sync.yaml');
  writeFileSync(configFile, world.yaml);
  progress(`config ${configFile} (Kommo simulator at ${world.kommoUrl}), store ${storeKind === 'sqlite' ? storeUrl : `postgres schema ${pgInfo?.schema}`}`);

  // Migrate once up front, so the service processes do not race on a fresh schema.
  await (await openStore(storeUrl)).close();

  const children: Array<{ child: Child; url: string }> = [];
  for (let i = 0; i < processes; i++) {
    const port = await freePort();
    // --profile DIR: a V8 CPU profile of each service process (written when it exits).
    const prof = [...profileArgs(flags.profile), ...nodeFlags];
    const args = role === 'serve'
      ? [...prof, 'bin/kommo-sync.js', 'serve', '--config', configFile, '--port', String(port)]
      : [...prof, '--import', 'tsx', 'bench/ingest-child.ts', '--config', configFile, '--port', String(port)];
    const child = spawnNode(`svc${i}`, args, repoRoot);
    children.push({ child, url: `http://${HOST}:${port}` });
  }
  for (const { child, url } of children) {
    await waitReady(url, child);
    progress(`${child.name} (pid ${child.pid}) ready at ${url}`);
  }

  const kommo = world.kommo;
  const parts = bodyTemplate({ statusId: kommo.status('Proposal sent').id, oldStatusId: kommo.status('Demo scheduled').id, pipelineId: kommo.mainPipeline.id, subdomain: world.account });
  let next = 0;
  const FIRST_ID = 30_000_000;
  const FIRST_STAMP = 1_700_000_000;
  const nextBody = (): { id: number; body: string } => {
    const n = next++;
    const id = FIRST_ID + n;
    const stamp = String(FIRST_STAMP + n);
    return { id, body: fillBody(parts, id, stamp) };
  };
  const sampleBody = nextBody().body;
  next = 0;
  progress(`webhook body: ${sampleBody.length} bytes, e.g. ${sampleBody.slice(0, 120)}...`);

  const tally: Tally = { acked: [], duplicates: 0, non2xx: new Map(), latencies: [], measuring: false, answered: 0 };
  const split = (i: number): number => Math.floor(connections / processes) + (i < connections % processes ? 1 : 0);
  const targets = children.map((c) => `${c.url}${new URL(world.kommoWebhookUrl(c.url)).pathname}`);

  let last = 0;
  const ticker = setInterval(() => {
    const n = tally.answered;
    progress(`  ${fmt(n - last)} answers/s (${tally.measuring ? 'measuring' : 'warm-up'}), ${fmt(tally.acked.length)} accepted so far${tally.non2xx.size ? `, NON-2XX: ${[...tally.non2xx.keys()].join(',')}` : ''}`);
    last = n;
  }, 1000);
  onCleanup(() => clearInterval(ticker));

  if (warmup > 0) {
    progress(`warm-up ${warmup} s`);
    await Promise.all(targets.map((t, i) => runCannon(t, split(i), warmup, nextBody, tally, rate / processes)));
  }
  const ackedBefore = tally.acked.length;
  tally.measuring = true;
  progress(`measuring ${duration} s with ${connections} connections over ${processes} process(es)`);
  // CPU accounting: the machine is shared, so record what the service, this process (autocannon)
  // and the whole machine used during the measured phase.
  const pgCpu = () => (storeKind === 'postgres' ? postgresCpuSeconds() : 0);
  const split0 = children.map(({ child }) => cpuSplitOf(child.pid));
  const cpu0 = { svc: children.map(({ child }) => cpuSecondsOf(child.pid)), self: process.cpuUsage(), machine: machineCpu(), pg: pgCpu(), at: performance.now() };
  const results = await Promise.all(targets.map((t, i) => runCannon(t, split(i), duration, nextBody, tally, rate / processes)));
  const cpu1 = { svc: children.map(({ child }) => cpuSecondsOf(child.pid)), self: process.cpuUsage(cpu0.self), machine: machineCpu(), pg: pgCpu(), at: performance.now() };
  const split1 = children.map(({ child }) => cpuSplitOf(child.pid));
  tally.measuring = false;
  clearInterval(ticker);
  const wall = (cpu1.at - cpu0.at) / 1000;
  const svcCpu = cpu1.svc.map((c, i) => c - cpu0.svc[i]!);
  const benchCpu = (cpu1.self.user + cpu1.self.system) / 1e6;
  const machineBusy = (cpu1.machine.busy - cpu0.machine.busy) / (cpu1.machine.total - cpu0.machine.total);
  const machineSteal = (cpu1.machine.steal - cpu0.machine.steal) / (cpu1.machine.total - cpu0.machine.total);

  // Peak memory before the processes go away.
  const mem = children.map(({ child }) => ({ name: child.name, pid: child.pid, ...memoryOf(child.pid) }));
  const sent = next;

  progress('stopping the service processes (SIGTERM)');
  for (const { child } of children) {
    const how = await child.stop(15_000);
    progress(`${child.name} exited: ${how}`);
  }

  // ---------- durability: every answered webhook is in the store ----------
  const stored = new Set<number>();
  const keyRe = /:lead:(\d+):/;
  const collect = (keys: Iterable<{ dedup_key: string }>): void => {
    for (const r of keys) {
      const id = keyRe.exec(r.dedup_key)?.[1];
      if (id) stored.add(Number(id));
    }
  };
  let rows: number;
  if (storeKind === 'sqlite') {
    const db = new Database(storeUrl.slice('sqlite:'.length));
    try {
      rows = db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM ks_inbox').get()?.n ?? 0;
      collect(db.prepare<[], { dedup_key: string }>('SELECT dedup_key FROM ks_inbox').iterate());
    } finally {
      db.close();
    }
  } else {
    const info = pgInfo!;
    rows = await withPg(info.base, info.schema, async (c) => {
      const n = Number((await c.query<{ n: string }>('SELECT COUNT(*) AS n FROM ks_inbox')).rows[0]?.n ?? 0);
      collect((await c.query<{ dedup_key: string }>('SELECT dedup_key FROM ks_inbox')).rows);
      return n;
    });
  }
  const acked = tally.acked.length;
  const missing = tally.acked.filter((id) => !stored.has(id)).length;
  const extra = rows - (acked - missing);

  // ---------- figures ----------
  const sum = (f: (r: autocannon.Result) => number): number => results.reduce((a, r) => a + f(r), 0);
  const measuredSeconds = Math.max(...results.map((r) => r.duration));
  const ok2xx = sum((r) => r['2xx']);
  const rps = ok2xx / measuredSeconds;
  const lat = Float64Array.from(tally.latencies).sort();
  const p50 = percentile(lat, 50);
  const p99 = percentile(lat, 99);
  const peakRss = Math.max(...mem.map((x) => x.hwmMiB));
  const errors = sum((r) => r.errors);
  const timeouts = sum((r) => r.timeouts);
  const non2xx = sum((r) => r.non2xx);
  const svcCpuTotal = svcCpu.reduce((a, b) => a + b, 0);
  const cpu = {
    serviceCores: svcCpuTotal / wall,
    perProcessCores: svcCpu.map((c) => c / wall),
    serviceMicrosPerWebhook: (svcCpuTotal * 1e6) / Math.max(1, ok2xx),
    benchCores: benchCpu / wall,
    machineBusyPct: machineBusy * 100,
    stealPct: machineSteal * 100,
    otherCores: Math.max(0, machineBusy * m.nproc - svcCpuTotal / wall - benchCpu / wall),
    serviceUserMicrosPerWebhook: (split1.reduce((a, x, i) => a + x.user - split0[i]!.user, 0) * 1e6) / Math.max(1, ok2xx),
    serviceSystemMicrosPerWebhook: (split1.reduce((a, x, i) => a + x.system - split0[i]!.system, 0) * 1e6) / Math.max(1, ok2xx),
    postgresMicrosPerWebhook: ((cpu1.pg - cpu0.pg) * 1e6) / Math.max(1, ok2xx),
  };

  const checks: Array<[string, boolean]> = [
    ['no non-2xx answer', non2xx === 0 && tally.non2xx.size === 0],
    ['no socket error or timeout', errors === 0 && timeouts === 0],
    ['every webhook was new (accepted: 1)', tally.duplicates === 0],
    ['every answered webhook is in the store', missing === 0],
    // autocannon drops the requests in flight when a phase ends; the service may still store them.
    [`stored but unanswered <= connections per phase (cut off when a phase ended): ${extra}`, extra >= 0 && extra <= connections * (warmup > 0 ? 2 : 1)],
  ];
  const targetChecks: Array<[string, boolean]> = [
    // A run at a fixed offered rate measures latency at that load; capacity is what an unlimited run measures.
    ...(rate > 0 ? [] : [[`>= ${fmt(TARGETS.rps)} webhooks/s`, rps >= TARGETS.rps] as [string, boolean]]),
    [`p99 < ${TARGETS.p99Ms} ms`, p99 < TARGETS.p99Ms],
    [`peak RSS < ${TARGETS.rssMiB} MB per process`, peakRss < TARGETS.rssMiB],
  ];

  const summary = {
    bench: 'ingest',
    machine: m,
    settings: { store: storeKind, role, processes, connections, duration, warmup, offeredRate: rate || null, bodyBytes: sampleBody.length },
    results: {
      requestsPerSecond2xx: Math.round(rps),
      measuredSeconds: Number(measuredSeconds.toFixed(2)),
      answered2xx: ok2xx,
      perProcessRps: results.map((r) => Math.round(r['2xx'] / r.duration)),
      latencyMs: { p50, p90: percentile(lat, 90), p99, max: lat.length ? lat[lat.length - 1]! : NaN },
      non2xx,
      errors,
      timeouts,
      cpu: {
        serviceCores: Number(cpu.serviceCores.toFixed(2)),
        perProcessCores: cpu.perProcessCores.map((c) => Number(c.toFixed(2))),
        serviceMicrosPerWebhook: Math.round(cpu.serviceMicrosPerWebhook),
        benchCores: Number(cpu.benchCores.toFixed(2)),
        machineBusyPct: Math.round(cpu.machineBusyPct),
        stealPct: Number(cpu.stealPct.toFixed(1)),
        otherProcessesCores: Number(cpu.otherCores.toFixed(2)),
        serviceUserMicrosPerWebhook: Math.round(cpu.serviceUserMicrosPerWebhook),
        serviceSystemMicrosPerWebhook: Math.round(cpu.serviceSystemMicrosPerWebhook),
        postgresMicrosPerWebhook: Math.round(cpu.postgresMicrosPerWebhook),
        serviceAndPostgresMicrosPerWebhook: Math.round(cpu.serviceMicrosPerWebhook + cpu.postgresMicrosPerWebhook),
      },
      rssMiB: mem.map((x) => ({ name: x.name, peak: Number(x.hwmMiB.toFixed(1)), end: Number(x.rssMiB.toFixed(1)), anon: Math.round(x.anonMiB), file: Math.round(x.fileMiB), shmem: Math.round(x.shmemMiB) })),
      durability: { webhooksSent: sent, acceptedIncludingWarmup: acked, acceptedWarmup: ackedBefore, inboxRows: rows, answeredButMissing: missing, storedButUnanswered: extra },
    },
    checks: Object.fromEntries(checks),
    targets: Object.fromEntries(targetChecks),
  };

  const line = (label: string, value: string): void => {
    process.stdout.write(`${label.padEnd(34)} ${value}\n`);
  };
  process.stdout.write('\n=== ingest results ===\n');
  line('store / role / processes', `${storeKind} / ${role} / ${processes}`);
  line('connections / duration', `${connections} / ${fmt(measuredSeconds, 1)} s (after ${warmup} s warm-up)`);
  line('queueing floor (Little\'s law)', `mean latency >= connections / throughput = ${fmt((connections / Math.max(1, rps)) * 1000, 2)} ms`);
  line('offered rate', rate > 0 ? `${fmt(rate)} webhooks/s (latency at that load)` : 'unlimited (capacity: as fast as the service answers)');
  line('webhook body', `${sampleBody.length} bytes (form, leads[status])`);
  line('requests/s (2xx)', `${fmt(rps)}  [per process: ${summary.results.perProcessRps.map((x) => fmt(x)).join(', ')}]`);
  line('latency p50 / p90 / p99 / max', `${fmt(p50, 2)} / ${fmt(summary.results.latencyMs.p90, 2)} / ${fmt(p99, 2)} / ${fmt(summary.results.latencyMs.max, 1)} ms`);
  line('peak RSS (VmHWM) per process', mem.map((x) => `${x.name} ${fmt(x.hwmMiB, 1)} MB (at the end: ${fmt(x.rssMiB)} MB = anon ${fmt(x.anonMiB)} + file ${fmt(x.fileMiB)} + shmem ${fmt(x.shmemMiB)})`).join(', '));
  line('service CPU', `${fmt(cpu.serviceCores, 2)} cores [${cpu.perProcessCores.map((c) => fmt(c, 2)).join(', ')}], ${fmt(cpu.serviceMicrosPerWebhook)} us CPU per webhook (user ${fmt(cpu.serviceUserMicrosPerWebhook)} + system ${fmt(cpu.serviceSystemMicrosPerWebhook)})`);
  if (storeKind === 'postgres') line('PostgreSQL CPU', `${fmt(cpu.postgresMicrosPerWebhook)} us per webhook; service + PostgreSQL ${fmt(cpu.serviceMicrosPerWebhook + cpu.postgresMicrosPerWebhook)} us per webhook`);
  line('bench (autocannon) CPU', `${fmt(cpu.benchCores, 2)} cores`);
  line('machine', `${fmt(cpu.machineBusyPct)}% busy of ${m.nproc} cores (${fmt(cpu.stealPct, 1)}% stolen by the hypervisor); other processes used ~${fmt(cpu.otherCores, 2)} cores; calibration ${m.calibrationMs} ms (lower = faster)`);
  line('non-2xx / errors / timeouts', `${non2xx} / ${errors} / ${timeouts}`);
  line('inbox rows vs accepted answers', `${fmt(rows)} rows, ${fmt(acked)} answered 200 (incl. ${fmt(ackedBefore)} in warm-up), ${missing} missing, ${extra} stored but cut off before the answer`);
  for (const [what, ok] of checks) line(ok ? 'check ok' : 'CHECK FAILED', what);
  for (const [what, ok] of targetChecks) line(ok ? 'target met' : 'TARGET MISSED', what);
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  if (flags.json) writeFileSync(flags.json, `${JSON.stringify(summary, null, 2)}\n`);

  return checks.every(([, ok]) => ok);
}

runBench(main, (duration + warmup) * 1000 + 180_000);
