/**
 * The CLI as operators run it, as real child processes: how `serve` stops on SIGTERM and SIGINT
 * (directly, and under `npx` and `npm start`, where npm forwards the signal only to the shell it
 * runs us in), the shutdown deadline, `worker` refusing SQLite, a command that can never end
 * silently, `--version`, the `PORT` variable, and `status`/`replay` without the vendors' secrets.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { parse, stringify } from 'yaml';
import { startWorld, type World } from '../../src/demo/world.js';
import { openStore } from '../../src/store/open.js';
import { BIN, freePort } from './cli.js';
import { waitFor } from './wait.js';

const ROOT = new URL('../../', import.meta.url).pathname;

let world: World;
let dir: string;
const children: ChildProcess[] = [];
const groups = new Set<ChildProcess>();

before(async () => {
  world = await startWorld({ destinations: ['customerio'] });
  dir = mkdtempSync(join(tmpdir(), 'kommo-sync-cli-'));
});
after(async () => {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    // npx and npm start run in a process group of their own: whatever they left behind (an
    // orphaned kommo-sync, if stopping under npm ever breaks) goes with it.
    if (groups.has(c) && c.pid !== undefined) {
      try {
        process.kill(-c.pid, 'SIGKILL');
      } catch {
        // the group is already gone
      }
    }
  }
  world?.vendors.get('customerio')?.sim.faults.outage(null);
  await world?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The world's config as a file: a SQLite store of its own, no `server.port` (so PORT applies). */
function writeConfig(name: string, edit: (cfg: Record<string, unknown>) => void = () => {}): { file: string; db: string } {
  const cfg = parse(world.yaml) as Record<string, unknown>;
  const db = join(dir, `${name}.db`);
  cfg.store = `sqlite:${db}`;
  cfg.server = { host: '127.0.0.1' };
  cfg.log = { level: 'info' };
  edit(cfg);
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, stringify(cfg));
  return { file, db };
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

async function run(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Run> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [BIN, ...args], { env, timeout: 30_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number | null; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

interface Started {
  child: ChildProcess;
  output(): string;
  /** Resolves when the process has exited and every holder of its stdout/stderr has closed them. */
  closed: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function start(command: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; group?: boolean } = {}): Started {
  const child = spawn(command, args, { env: opts.env ?? process.env, cwd: opts.cwd ?? process.cwd(), stdio: ['ignore', 'pipe', 'pipe'], detached: opts.group === true });
  children.push(child);
  if (opts.group) groups.add(child);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  return { child, output: () => out, closed };
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms))]);
}

const answers = async (url: string): Promise<boolean> => (await fetch(url).catch(() => null))?.ok === true;
const refused = async (url: string): Promise<boolean> => (await fetch(url).then(() => 'answered', (err: unknown) => String((err as { cause?: { code?: string } }).cause?.code))) === 'ECONNREFUSED';

describe('serve stops cleanly', () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`${signal}: exit 0 within a few seconds, port closed; it listened on $PORT (the config sets no server.port)`, { timeout: 60_000 }, async () => {
      const { file } = writeConfig(`serve-${signal}`);
      const port = await freePort();
      const s = start(process.execPath, [BIN, 'serve', '--config', file], { env: { ...process.env, PORT: String(port) } });
      await waitFor(() => answers(`http://127.0.0.1:${port}/healthz`), `serve listening on PORT ${port}`, 30_000);
      const sent = Date.now();
      s.child.kill(signal);
      const { code } = await within(s.closed, 8_000, `exit after ${signal}`);
      assert.equal(code, 0, s.output());
      assert.ok(Date.now() - sent < 5_000, `stopped in ${Date.now() - sent} ms`);
      assert.ok(await refused(`http://127.0.0.1:${port}/healthz`), 'the port is closed');
      assert.match(s.output(), /kommo-sync stopped/);
    });
  }

  it('waits for a delivery in flight, then releases its claim and exits 0', { timeout: 90_000 }, async () => {
    const { file, db } = writeConfig('inflight');
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const s = start(process.execPath, [BIN, 'serve', '--config', file, '--port', String(port)]);
    await waitFor(() => answers(`${url}/healthz`), 'serve listening', 30_000);
    world.subscribe(url);
    const vendor = world.vendors.get('customerio')!.sim;
    vendor.faults.outage('timeout'); // Customer.io takes the requests and does not answer yet
    const k = world.kommo;
    k.createLead({ name: 'In flight', contactIds: [k.createContact({ name: 'Ann', email: 'inflight@example.com' }).id] });
    await k.flushWebhooks();
    const store = await openStore(`sqlite:${db}`);
    try {
      await waitFor(async () => (await store.stats(Date.now())).jobs.leased > 0, 'a Customer.io job in flight', 30_000);
      s.child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(s.child.exitCode, null, 'still finishing the delivery in flight');
      vendor.faults.outage(null); // the vendor answers (503: a retry)
      const { code } = await within(s.closed, 8_000, 'exit once the delivery ended');
      assert.equal(code, 0, s.output());
      const stats = await store.stats(Date.now());
      assert.equal(stats.jobs.leased, 0, 'no job left claimed');
      assert.ok(stats.jobs.pending > 0, 'the job waits for its retry');
    } finally {
      vendor.faults.outage(null);
      await store.close();
    }
  });

  it('gives back the claim of a delivery that does not end within worker.shutdownTimeout, and exits 0', { timeout: 90_000 }, async () => {
    const { file, db } = writeConfig('deadline', (cfg) => {
      cfg.worker = { shutdownTimeout: '1s' };
    });
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const s = start(process.execPath, [BIN, 'serve', '--config', file, '--port', String(port)]);
    await waitFor(() => answers(`${url}/healthz`), 'serve listening', 30_000);
    world.subscribe(url);
    const vendor = world.vendors.get('customerio')!.sim;
    vendor.faults.outage('timeout');
    const store = await openStore(`sqlite:${db}`);
    try {
      const k = world.kommo;
      k.createLead({ name: 'Stuck', contactIds: [k.createContact({ name: 'Bo', email: 'stuck@example.com' }).id] });
      await k.flushWebhooks();
      await waitFor(async () => (await store.stats(Date.now())).jobs.leased > 0, 'a Customer.io job in flight', 30_000);
      const sent = Date.now();
      s.child.kill('SIGTERM');
      const { code } = await within(s.closed, 8_000, 'exit at the deadline');
      assert.equal(code, 0, s.output());
      assert.ok(Date.now() - sent < 4_000, `gave up after ${Date.now() - sent} ms`);
      assert.match(s.output(), /their claims are given back/);
      const stats = await store.stats(Date.now());
      assert.equal(stats.jobs.leased, 0, 'nothing left claimed: the next process delivers it at once');
      assert.equal(stats.jobs.pending, 1);
    } finally {
      vendor.faults.outage(null);
      await store.close();
    }
  });
});

describe('serve under npm', () => {
  it('npx kommo-sync serve: SIGTERM to the npx process (not to us) stops the service, and nothing is left behind', { timeout: 90_000 }, async () => {
    // As a project that depends on kommo-sync has it: node_modules/.bin/kommo-sync.
    const project = join(dir, 'project');
    mkdirSync(join(project, 'node_modules', '.bin'), { recursive: true });
    writeFileSync(join(project, 'package.json'), '{"name":"uses-kommo-sync","private":true}\n');
    symlinkSync(BIN, join(project, 'node_modules', '.bin', 'kommo-sync'));
    const { file } = writeConfig('npx');
    const port = await freePort();
    const s = start('npx', ['--no-install', 'kommo-sync', 'serve', '--config', file], { cwd: project, env: { ...process.env, PORT: String(port) }, group: true });
    await waitFor(() => answers(`http://127.0.0.1:${port}/healthz`), 'serve listening under npx', 60_000);
    s.child.kill('SIGTERM'); // what a process manager does: the pid it started is npx's
    // `closed` waits for every holder of the pipes, the orphaned grandchild included.
    await within(s.closed, 10_000, 'npx and kommo-sync gone');
    assert.ok(await refused(`http://127.0.0.1:${port}/healthz`), 'the port is closed');
    assert.match(s.output(), /kommo-sync stopped/);
  });

  it('npm start (the demo): SIGTERM to npm stops it; its dashboard opens without a token even with KOMMO_SYNC_ADMIN_TOKEN set', { timeout: 120_000 }, async () => {
    const s = start('npm', ['start'], { cwd: ROOT, env: { ...process.env, KOMMO_SYNC_ADMIN_TOKEN: 'a-token-from-a-real-setup-0123456789' }, group: true });
    await waitFor(() => /service \+ dashboard\s+http:\/\/127\.0\.0\.1:\d+\//.test(s.output()), 'the demo printing its URL', 60_000);
    const url = /service \+ dashboard\s+(http:\/\/127\.0\.0\.1:\d+\/)/.exec(s.output())![1]!;
    const page = await fetch(url);
    assert.equal(page.status, 200, 'the printed URL opens the dashboard');
    assert.equal((await fetch(`${url}api/status`)).status, 200, 'and its API');
    s.child.kill('SIGTERM');
    await within(s.closed, 30_000, 'npm and the demo gone');
    assert.ok(await refused(url), 'the demo port is closed');
    assert.match(s.output(), /Summary after/);
  });
});

describe('commands that must not start (or end) silently', () => {
  it('worker refuses a SQLite store, saying why', { timeout: 30_000 }, async () => {
    const { file } = writeConfig('worker');
    const r = await run(['worker', '--config', file]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /worker: refusing to run on SQLite/);
    assert.match(r.stderr, /PostgreSQL/);
  });

  it('a command that could only wait forever says so and fails, instead of exiting 13 without a word', { timeout: 30_000 }, async () => {
    // A destination plugin whose top-level await never settles leaves nothing for Node to run.
    const plugin = join(dir, 'hangs.mjs');
    writeFileSync(plugin, 'await new Promise(() => {});\n');
    const r = await run(['--version'], { ...process.env, KOMMO_SYNC_DESTINATIONS: plugin });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /internal error: the command stopped before it finished/);
  });

  it('--version prints the package version', async () => {
    const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const r = await run(['--version']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout.trim(), version);
  });
});

describe('status and replay read only the store', () => {
  /** Every secret as an unset ${VAR}, as on an operator's machine without the vendors' keys. */
  const withoutSecrets = () => writeConfig('secrets', (cfg) => {
    const acme = (cfg.accounts as Record<string, Record<string, Record<string, unknown>>>).acme!;
    acme.kommo!.accessToken = '${UNSET_KOMMO_TOKEN}';
    acme.kommo!.webhookSecret = '${UNSET_KOMMO_WEBHOOK_SECRET}';
    const cio = (acme.destinations as Record<string, Record<string, unknown>>).customerio!;
    cio.apiKey = '${UNSET_CIO_API_KEY}';
    cio.siteId = '${UNSET_CIO_SITE_ID}';
  });

  it('status works without the vendors\' secrets in the environment', { timeout: 30_000 }, async () => {
    const { file } = withoutSecrets();
    const r = await run(['status', '--config', file, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { jobs: { dead: number } }).jobs.dead, 0);
  });

  it('replay --destination with an unknown name fails, naming the known ones (kommo included)', { timeout: 30_000 }, async () => {
    const { file } = withoutSecrets();
    const r = await run(['replay', '--destination', 'nope', '--config', file]);
    assert.equal(r.code, 2, r.stdout);
    assert.match(r.stderr, /no destination "nope"/);
    assert.match(r.stderr, /acme\/customerio/);
    assert.match(r.stderr, /acme\/kommo/);
    const ok = await run(['replay', '--destination', 'customerio', '--config', file]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /0 dead-lettered jobs re-queued for acme\/customerio/);
  });
});
