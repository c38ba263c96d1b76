/**
 * Shared plumbing for the benches: flags, child processes that die with the bench, free ports,
 * polling, PostgreSQL scratch schemas and log lines. Everything talks to 127.0.0.1 only.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';

export const HOST = '127.0.0.1';

// ---------- output ----------

const t0 = Date.now();
/** A progress line on stderr, stamped with seconds since the bench started. */
export function progress(msg: string): void {
  process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${msg}\n`);
}

export function machine(): { date: string; nproc: number; cpu: string; node: string; memGiB: number; load: string; calibrationMs: number } {
  return {
    date: new Date().toISOString(),
    nproc: os.availableParallelism(),
    cpu: os.cpus()[0]?.model ?? 'unknown',
    node: process.version,
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    load: os.loadavg().map((l) => l.toFixed(2)).join(' '),
    calibrationMs: calibrate(),
  };
}

/**
 * Milliseconds for a fixed single-threaded workload (JSON round trips of a webhook-sized object),
 * best of 5. This shared VM's speed drifts by up to 2x within an hour; the figure next to a result
 * says how fast the machine was at that moment (lower is faster; ~40 ms when it is quiet).
 */
export function calibrate(): number {
  const sample = { leads: { status: Array.from({ length: 4 }, (_, i) => ({ id: String(30_000_000 + i), status_id: '142', pipeline_id: '9217056', custom_fields: Array.from({ length: 6 }, (_, j) => ({ id: String(j), name: `Field ${j}`, values: [{ value: `value ${j}` }] })) })) } };
  let best = Infinity;
  for (let round = 0; round < 5; round++) {
    const t = performance.now();
    let n = 0;
    for (let i = 0; i < 2_000; i++) n += (JSON.parse(JSON.stringify(sample)) as typeof sample).leads.status.length;
    best = Math.min(best, performance.now() - t);
    if (n < 0) throw new Error('unreachable');
  }
  return Number(best.toFixed(1));
}

// ---------- flags ----------

/** `--name value` / `--name=value` flags; unknown flags are an error (typos should not pass silently). */
export function parseFlags<K extends string>(argv: string[], known: readonly K[]): Partial<Record<K, string>> {
  const out: Partial<Record<K, string>> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) throw new Error(`unexpected argument "${arg}"`);
    const eq = arg.indexOf('=');
    const name = (eq >= 0 ? arg.slice(2, eq) : arg.slice(2)) as K;
    if (!known.includes(name)) throw new Error(`unknown flag --${name} (known: ${known.map((k) => `--${k}`).join(', ')})`);
    let value: string | undefined;
    if (eq >= 0) value = arg.slice(eq + 1);
    else {
      value = argv[i + 1];
      i += 1;
    }
    if (value === undefined) throw new Error(`--${name} needs a value`);
    out[name] = value;
  }
  return out;
}

export function intFlag(v: string | undefined, name: string, dflt: number, min = 1): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} expects an integer >= ${min}, got "${v}"`);
  return n;
}

export function choiceFlag<C extends string>(v: string | undefined, name: string, choices: readonly C[], dflt: C): C {
  if (v === undefined) return dflt;
  if (!(choices as readonly string[]).includes(v)) throw new Error(`--${name} expects one of ${choices.join('|')}, got "${v}"`);
  return v as C;
}

// ---------- cleanup ----------

type Cleanup = () => Promise<void> | void;
const cleanups: Cleanup[] = [];
const children = new Set<ChildProcess>();
let cleaning: Promise<void> | null = null;

/** Registers a cleanup step; they run in reverse order on normal end, error and signals. */
export function onCleanup(fn: Cleanup): void {
  cleanups.push(fn);
}

export function runCleanups(): Promise<void> {
  cleaning ??= (async () => {
    while (cleanups.length) {
      const fn = cleanups.pop()!;
      try {
        await fn();
      } catch (err) {
        progress(`cleanup step failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  })();
  return cleaning;
}

/** Last resort: synchronous kill of whatever child is still alive (process 'exit' cannot await). */
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

/**
 * Runs the bench body with cleanup on every path, and a hard deadline so the script always ends.
 * Exit code: 0 when `main` resolves true, 1 when it resolves false (a target or check failed) or throws.
 */
export function runBench(main: () => Promise<boolean>, deadlineMs: number): void {
  // A closed stdout (`| head`) must not kill the bench before it has cleaned up.
  process.stdout.on('error', () => undefined);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      progress(`${sig}: stopping`);
      void runCleanups().finally(() => process.exit(130));
    });
  }
  const deadline = setTimeout(() => {
    progress(`deadline of ${Math.round(deadlineMs / 1000)} s reached: aborting`);
    void runCleanups().finally(() => process.exit(3));
  }, deadlineMs);
  deadline.unref();
  main().then(
    async (ok) => {
      await runCleanups();
      process.exit(ok ? 0 : 1);
    },
    async (err: unknown) => {
      progress(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      await runCleanups();
      process.exit(1);
    },
  );
}

// ---------- child processes ----------

export interface Child {
  proc: ChildProcess;
  pid: number;
  name: string;
  /** Resolves with the exit code (or signal) when the process has ended. */
  exited: Promise<string>;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<string>;
}

/** Spawns `node <args>` from the repo root; its output lines are echoed with a prefix. */
/** `--profile DIR` of a bench: node flags that write a V8 CPU profile of a child process when it exits. */
export function profileArgs(dir: string | undefined): string[] {
  return dir ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(dir)}`] : [];
}

export function spawnNode(name: string, args: string[], cwd: string): Child {
  const proc = spawn(process.execPath, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env } });
  if (proc.pid === undefined) throw new Error(`could not start ${name}`);
  children.add(proc);
  const exited = new Promise<string>((resolve) => {
    proc.once('exit', (code, signal) => {
      children.delete(proc);
      resolve(signal ?? String(code));
    });
  });
  for (const stream of [proc.stdout, proc.stderr]) {
    let buf = '';
    stream?.setEncoding('utf8');
    stream?.on('data', (chunk: string) => {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim()) progress(`  ${name}| ${line.length > 400 ? `${line.slice(0, 400)}...` : line}`);
      }
    });
  }
  const child: Child = {
    proc,
    pid: proc.pid,
    name,
    exited,
    async stop(graceMs = 10_000) {
      if (proc.exitCode !== null || proc.signalCode !== null) return exited;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      const how = await exited;
      clearTimeout(timer);
      return how;
    },
  };
  onCleanup(() => child.stop(5_000).then(() => undefined));
  return child;
}

/** Peak resident set size (VmHWM), current RSS and its parts (anonymous, file-backed, shared memory) of a live process, in MiB. */
export function memoryOf(pid: number): { hwmMiB: number; rssMiB: number; anonMiB: number; fileMiB: number; shmemMiB: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const mib = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) / 1024;
  return { hwmMiB: mib('VmHWM'), rssMiB: mib('VmRSS'), anonMiB: mib('RssAnon'), fileMiB: mib('RssFile'), shmemMiB: mib('RssShmem') };
}

let clkTck: number | undefined;
/** CPU seconds (user + system) a live process has used so far, from /proc/<pid>/stat. */
export function cpuSecondsOf(pid: number): number {
  clkTck ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / clkTck;
}

/** User and system CPU seconds of one process (system: syscalls, socket writes, wakeups). */
export function cpuSplitOf(pid: number): { user: number; system: number } {
  clkTck ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = fields.slice(fields.lastIndexOf(')') + 2).split(' ');
  return { user: Number(f[11]) / clkTck, system: Number(f[12]) / clkTck };
}

/**
 * CPU seconds of every PostgreSQL process on this machine (server and backends, by command name),
 * for "CPU per webhook, the service's and PostgreSQL's together". Processes that ended in between
 * are not counted; backends of the pool live as long as the service.
 */
export function postgresCpuSeconds(): number {
  let total = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      if (name !== 'postgres' && !name.startsWith('postgres:')) continue;
      total += cpuSecondsOf(Number(entry));
    } catch {
      // The process ended while we looked.
    }
  }
  return total;
}

/**
 * Machine-wide CPU ticks from /proc/stat (all cores), to tell how busy the shared machine was. `steal` is time the hypervisor gave our virtual CPUs to
 * other guests: the likeliest cause when the same build runs slower than usual.
 */
export function machineCpu(): { busy: number; total: number; steal: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const idle = (line[3] ?? 0) + (line[4] ?? 0);
  const total = line.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - idle, total, steal: line[7] ?? 0 };
}

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, HOST, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

// ---------- waiting ----------

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function waitUntil(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number, everyMs = 50): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}`);
    await sleep(everyMs);
  }
}

export async function waitReady(url: string, child: Child, timeoutMs = 60_000): Promise<void> {
  let died: string | null = null;
  void child.exited.then((how) => {
    died = how;
  });
  await waitUntil(`${url}/readyz`, async () => {
    if (died !== null) throw new Error(`${child.name} exited (${died}) before it was ready`);
    try {
      const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      return res.status === 200;
    } catch {
      return false;
    }
  }, timeoutMs, 100);
}

// ---------- PostgreSQL scratch schema ----------

/** Base URL of the test database, checked to point at this machine. */
export function postgresBaseUrl(): string {
  const url = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
  const host = new URL(url).hostname;
  if (host !== '127.0.0.1' && host !== 'localhost' && host !== '::1' && host !== '[::1]') {
    throw new Error(`the benches only talk to this machine: TEST_DATABASE_URL points at "${host}"`);
  }
  return url;
}

/** A fresh `bench_<random>` schema (created by the store's migrate), dropped on cleanup. */
export function scratchPostgres(): { url: string; schema: string; base: string } {
  const base = postgresBaseUrl();
  const schema = `bench_${randomBytes(5).toString('hex')}`;
  const u = new URL(base);
  u.searchParams.set('schema', schema);
  onCleanup(async () => {
    // Retried: the server may be restarting (it is shared), and a leaked schema is litter.
    for (let attempt = 1; ; attempt++) {
      const c = new pg.Client({ connectionString: base });
      try {
        await c.connect();
        await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
        progress(`dropped PostgreSQL schema ${schema}`);
        return;
      } catch (err) {
        if (attempt >= 10) throw err;
        await sleep(1_000);
      } finally {
        await c.end().catch(() => undefined);
      }
    }
  });
  return { url: u.toString(), schema, base };
}

/** Runs `fn` with a plain pg client on the schema (search_path set). */
export async function withPg<T>(base: string, schema: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: base, options: `-c search_path=${schema}` });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

// ---------- numbers ----------

/** Exact percentile of an ascending array (nearest rank). */
export function percentile(sorted: Float64Array | number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

export const fmt = (n: number, digits = 0): string =>
  Number.isFinite(n) ? n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : String(n);
