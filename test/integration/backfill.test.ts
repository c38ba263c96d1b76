/**
 * `kommo-sync backfill` as a user runs it: the real CLI in its own process asks the running service
 * to sync the leads Kommo already has; the service reads them page by page (live events first),
 * queues what a stage entry would send, and the CLI shows the progress. Against the Kommo,
 * Customer.io and Iterable simulators over real HTTP, with Kommo's 7 requests/s enforced.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { promisify } from 'node:util';
import pino from 'pino';
import { parse, stringify } from 'yaml';
import { startWorld, type World } from '../../src/demo/world.js';
import type { SimulatedItem } from '../../src/destinations/types.js';
import { activeBackfill, lastBackfill, requestBackfill, type BackfillState } from '../../src/runtime/backfill.js';
import { startService, type Service } from '../../src/runtime/service.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';
import { freshSchema, pgTest } from '../pg.js';
import { BIN, freePort } from './cli.js';
import { waitFor } from './wait.js';

const LEADS = 10_000;

let world: World;
let service: Service | null = null;
let dir: string;
let config: string;
let storeUrl: string;
const children: ChildProcess[] = [];

async function cli(...args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [BIN, ...args, '--config', config], { timeout: 120_000 });
    return { code: 0, out: `${stdout}${stderr}` };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, out: `${e.stdout}${e.stderr}` };
  }
}

function spawnCli(...args: string[]): { child: ChildProcess; output(): string; exit: Promise<number | null> } {
  const child = spawn(process.execPath, [BIN, ...args, '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exit = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { child, output: () => out, exit };
}

const items = (type: string): SimulatedItem[] => world.vendors.get(type)!.sim.items;
function countBy(list: SimulatedItem[], kind: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const i of list) if (i.kind === kind && i.ok) m.set(i.person, (m.get(i.person) ?? 0) + 1);
  return m;
}
const state = async (store: Store): Promise<BackfillState | null> => (await activeBackfill(store, world.account)) ?? lastBackfill(store, world.account);

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'kommo-sync-backfill-'));
  storeUrl = `sqlite:${join(dir, 'ks.db')}`;
  // Iterable's world config has lists for two stages and a workflow for won deals.
  world = await startWorld({ destinations: ['customerio', 'iterable'], store: storeUrl });
  const cfg = parse(world.yaml) as Record<string, unknown>;
  config = join(dir, 'kommo-sync.yaml');
  writeFileSync(config, stringify(cfg));
  // Existing leads: created before Kommo sends kommo-sync any webhook.
  const k = world.kommo;
  const stages = [...['New lead', 'Qualified', 'Demo scheduled', 'Negotiation'].map((n) => k.status(n).id), 142];
  for (let i = 0; i < LEADS; i++) {
    const c = k.createContact({ name: `Person ${i}`, email: `p${i}@backfill.example` });
    k.createLead({ name: `Deal ${i}`, price: i, contactIds: [c.id], statusId: stages[i % stages.length]! });
  }
  // A lead without a contact: nothing to send anywhere.
  k.createLead({ name: 'Orphan deal' });
  service = await startService({ loaded: world.loaded, log: pino({ level: 'silent' }), intake: true, work: true, port: 0, host: '127.0.0.1' });
  world.subscribe(service.url!);
});
after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await service?.close();
  await world?.close();
  rmSync(dir, { recursive: true, force: true });
});

it('--dry-run prints what each lead would send and queues nothing; a misspelt --stage is refused with a suggestion', { timeout: 60_000 }, async () => {
  const dry = await cli('backfill', '--dry-run', '--limit', '3');
  assert.equal(dry.code, 0, dry.out);
  assert.match(dry.out, /dry run of the backfill of all leads \(nothing is queued\)/);
  assert.match(dry.out, /lead \d+ "Deal 0" <p0@backfill\.example>, Sales \/ New lead\n {4}customerio: upsertPerson; iterable: upsertPerson\n/);
  assert.match(dry.out, /lead \d+ "Deal 2" <p2@backfill\.example>, Sales \/ Demo scheduled\n {4}customerio: upsertPerson; iterable: upsertPerson, addToList\n/);
  assert.match(dry.out, /3 leads shown \(more match: --limit N shows more\); would send:\n {4}customerio: 3 upsertPerson\n {4}iterable: 3 upsertPerson, 1 addToList\n/);
  assert.equal((await service!.store.stats(Date.now())).jobs.pending, 0, 'nothing queued');
  assert.equal(await lastBackfill(service!.store, world.account), null);

  const typo = await cli('backfill', '--stage', 'Qualifed', '--dry-run');
  assert.equal(typo.code, 2, typo.out);
  assert.match(typo.out, /--stage: stage "Qualifed" not found in Kommo; did you mean "Qualified"\?/);
});

it(`backfills ${LEADS.toLocaleString('en-US')} leads once each within Kommo's rate limit, pauses on Ctrl-C and resumes; a live webhook meanwhile is delivered at once`, { timeout: 240_000 }, async () => {
  const store = service!.store;
  const k = world.kommo;
  k.resetLog();
  const first = spawnCli('backfill');
  await waitFor(async () => ((await state(store))?.leads ?? 0) >= 2_000, 'the backfill under way', 60_000);

  // A live change during the backfill: routed before the next page, delivered in seconds.
  const liveAt = Date.now();
  const live = k.createContact({ name: 'Live Person', email: 'live@backfill.example' });
  k.createLead({ name: 'Live deal', contactIds: [live.id] });
  await k.flushWebhooks();
  await waitFor(() => countBy(items('customerio'), 'upsertPerson').has('live@backfill.example'), 'the live lead delivered', 15_000);
  const during = await state(store);
  assert.equal(during?.status, 'running', 'delivered while the backfill was still running');
  assert.ok(during!.leads < LEADS, `${during!.leads} leads done when the live lead arrived`);
  const liveLatency = Date.now() - liveAt;

  await waitFor(async () => ((await state(store))?.leads ?? 0) >= 4_000, 'more progress', 60_000);
  first.child.kill('SIGINT');
  assert.equal(await first.exit, 130, first.output());
  assert.match(first.output(), /backfill paused after page \d+ \([\d,]+ of 10,001 leads\)\. Run the same command to resume\./);
  const paused = await state(store);
  assert.equal(paused?.status, 'paused');
  await new Promise((r) => setTimeout(r, 1_500));
  assert.equal((await state(store))?.page, paused?.page, 'nothing read while paused');

  const second = await cli('backfill');
  assert.equal(second.code, 0, second.out);
  assert.match(second.out, new RegExp(`resuming the backfill of all leads at page ${paused!.page + 1}`));
  assert.match(second.out, /backfill done: 10,001 leads read, 10,000 synced \(\d[\d,]* jobs queued\), 1 with nothing to send/);

  // Everything delivered: each existing person upserted exactly once in each tool.
  await waitFor(async () => (await store.stats(Date.now())).jobs.pending + (await store.stats(Date.now())).jobs.leased === 0, 'the queue drained', 120_000);
  for (const type of ['customerio', 'iterable']) {
    const upserts = countBy(items(type), 'upsertPerson');
    const backfilled = [...upserts].filter(([p]) => p.endsWith('@backfill.example') && p !== 'live@backfill.example');
    assert.equal(backfilled.length, LEADS, `${type}: every existing person`);
    const twice = backfilled.filter(([, n]) => n !== 1);
    assert.deepEqual(twice.slice(0, 5), [], `${type}: nobody twice`);
  }
  // A stage entry's list, but no marketing event, no workflow (won deals have one) and no Kommo note.
  const lists = countBy(items('iterable'), 'addToList');
  assert.equal([...lists].filter(([p]) => p !== 'live@backfill.example').length, LEADS * 2 / 5, 'leads in a listed stage joined its list');
  assert.ok([...lists.values()].every((n) => n === 1));
  for (const type of ['customerio', 'iterable']) {
    assert.deepEqual(items(type).filter((i) => (i.kind === 'trackEvent' || i.kind === 'triggerWorkflow') && i.person !== 'live@backfill.example').slice(0, 3), [], `${type}: no event or workflow for existing leads`);
  }
  assert.equal(k.notes.size, 0, 'no note in Kommo');

  // Kommo: never more than 7 requests in any second, never a 429, and about 2 requests per page.
  assert.ok(k.maxRequestsInWindow(1000) <= 7, `at most 7 requests in a second, saw ${k.maxRequestsInWindow(1000)}`);
  assert.deepEqual(k.requests.filter((r) => r.status === 429), []);
  const listed = k.requests.filter((r) => r.path === '/api/v4/leads' && r.query.includes('order%5Bid%5D')).length;
  assert.ok(listed <= 41 + 20, `${listed} lead list requests (41 pages + counting)`);
  const done = await lastBackfill(store, world.account);
  assert.equal(done?.status, 'done');
  assert.ok(liveLatency < 10_000, `the live lead took ${liveLatency} ms`);

  // The same options again: nothing to do.
  const again = await cli('backfill');
  assert.equal(again.code, 0, again.out);
  assert.match(again.out, /finished .* ago \(10,001 leads\); nothing to do\. --restart sends every lead again\./);
});

it('a service killed with -9 mid-backfill resumes at the next page after a restart: no lead queued twice', { timeout: 180_000 }, async () => {
  // The in-process service goes; a real `serve` process takes over the same SQLite file.
  await service?.close();
  service = null;
  const k = world.kommo;
  const imports = k.addPipeline('Imports', ['Imported']);
  const n = 2_500;
  for (let i = 0; i < n; i++) {
    const c = k.createContact({ name: `Imported ${i}`, email: `i${i}@import.example` });
    k.createLead({ name: `Import ${i}`, contactIds: [c.id], pipelineId: imports.id, statusId: imports.statuses[1]!.id });
  }
  const port = await freePort();
  const serve = () => {
    const child = spawn(process.execPath, [BIN, 'serve', '--config', config, '--port', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    return child;
  };
  let server = serve();
  const store = await openStore(storeUrl);
  try {
    const started = Date.now();
    const queued = await cli('backfill', '--pipeline', 'imports', '--detach');
    assert.equal(queued.code, 0, queued.out);
    assert.match(queued.out, /backfill of leads in pipeline "Imports" requested/);
    await waitFor(async () => ((await state(store))?.page ?? 0) >= 3, 'three pages done', 60_000);
    server.kill('SIGKILL');
    await new Promise((r) => server.once('close', r));
    const at = (await state(store))!;
    assert.equal(at.status, 'running');
    server = serve();
    await waitFor(async () => (await state(store))?.status === 'done', 'the backfill finished after the restart', 90_000);
    const done = (await state(store))!;
    assert.equal(done.leads, n);
    // Each lead has exactly one job per destination in this run.
    for (const destination of ['acme/customerio', 'acme/iterable']) {
      const jobs = (await store.listJobs({ destination, since: started, limit: 10_000 })).filter((j) => j.type === 'sync.ops@1');
      const keys = new Map<string, number>();
      for (const j of jobs) keys.set(j.orderingKey, (keys.get(j.orderingKey) ?? 0) + 1);
      assert.equal(keys.size, n, destination);
      assert.deepEqual([...keys].filter(([, c]) => c > 1), [], `${destination}: no lead queued twice`);
    }
    server.kill('SIGTERM');
    await new Promise((r) => server.once('close', r));
  } finally {
    await store.close();
  }
});

await pgTest('PostgreSQL, two service processes\' worth (two services on one schema): each page is read once, each lead queued once, within one shared budget', async () => {
  const db = await freshSchema('ks_backfill');
  const pgWorld = await startWorld({ destinations: ['customerio'], store: db.url, account: 'pgacme' });
  const services: Service[] = [];
  try {
    const k = pgWorld.kommo;
    const n = 3_000;
    for (let i = 0; i < n; i++) {
      const c = k.createContact({ name: `P ${i}`, email: `p${i}@pg.example` });
      k.createLead({ name: `D ${i}`, contactIds: [c.id] });
    }
    for (let i = 0; i < 2; i++) services.push(await startService({ loaded: pgWorld.loaded, log: pino({ level: 'silent' }), intake: i === 0, work: true, port: 0, host: '127.0.0.1', workerId: `w${i}` }));
    k.resetLog();
    const store = services[0]!.store;
    await requestBackfill(store, pgWorld.account, {});
    await waitFor(async () => (await lastBackfill(store, pgWorld.account))?.status === 'done', 'the backfill done', 120_000);
    await waitFor(async () => {
      const s = await store.stats(Date.now());
      return s.jobs.pending + s.jobs.leased === 0;
    }, 'delivered', 60_000);
    const pages = k.requests.filter((r) => r.path === '/api/v4/leads' && /with=contacts/.test(decodeURIComponent(r.query))).map((r) => new URLSearchParams(r.query).get('page'));
    assert.deepEqual(pages, [...new Set(pages)], 'no page read twice');
    assert.equal(pages.length, Math.ceil(n / 250) + (n % 250 === 0 ? 1 : 0));
    const jobs = await store.listJobs({ destination: `${pgWorld.account}/customerio`, limit: 10_000 });
    assert.equal(new Set(jobs.map((j) => j.orderingKey)).size, n);
    assert.equal(jobs.length, n, 'one job per lead');
    assert.ok(k.maxRequestsInWindow(1000) <= 7, `at most 7 requests in a second, saw ${k.maxRequestsInWindow(1000)}`);
  } finally {
    for (const s of services) await s.close();
    await pgWorld.close();
    await db.dispose();
  }
});
