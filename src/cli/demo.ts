/**
 * `kommo-sync demo` (= `npm start`): the whole product on a fresh clone, with no accounts. Starts
 * the Kommo and marketing-tool simulators, a generated config pointing at them, the real service,
 * and a scenario; shows what happens as it happens, and ends with a summary.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { Scenario } from '../demo/scenario.js';
import { startWorld } from '../demo/world.js';
import { startService } from '../runtime/service.js';
import type { DeliveryRow } from '../store/store.js';
import { untilStopped } from './signals.js';

interface DemoOptions {
  port?: number;
  duration?: number;
  json?: boolean;
}

export interface DemoSummary {
  durationSeconds: number;
  scenario: Scenario['counts'];
  /** Per destination (`acme/cio`, `acme/kommo`): operations by outcome. */
  deliveries: Record<string, { ok: number; retried: number; failed: number }>;
  /** Kommo -> marketing tools, and marketing tools (and sync notes) -> Kommo. */
  directions: { kommoToTools: number; toolsToKommo: number };
  failed: number;
  kommo: { notes: number; tasks: number; unsubscribedContacts: number; requests: number; maxRequestsPerSecond: number };
  queue: { inboxPending: number; pending: number; dead: number };
}

const STEP_MS = 700;

export async function demo(o: DemoOptions): Promise<void> {
  const out = (line: string) => {
    if (!o.json) process.stdout.write(`${line}\n`);
  };
  const dir = mkdtempSync(join(tmpdir(), 'kommo-sync-demo-'));
  const world = await startWorld({ store: `sqlite:${join(dir, 'demo.db')}` });
  const log = pino({ level: 'error' });
  // The demo's dashboard is on loopback and opens without a token, as its printed URL promises. An
  // admin token left in the environment (from a real setup) would make that URL answer 401, and the
  // service reads the variable itself, so the demo process drops it.
  delete process.env.KOMMO_SYNC_ADMIN_TOKEN;
  const service = await startService({ loaded: world.loaded, log, intake: true, work: true, port: o.port ?? 0, host: '127.0.0.1', openDashboard: true });
  world.subscribe(service.url!);

  out('kommo-sync demo: everything below runs on this machine, against simulators of Kommo and each marketing tool.');
  // With KOMMO_SYNC_ADMIN_TOKEN set the dashboard needs a login: a one-time link, never the token.
  const link = service.loginLink();
  out(`  service + dashboard  ${link ? `${link}  (one-time login link)` : `${service.url}/`}`);
  out(`  Kommo simulator      ${world.kommoUrl}`);
  for (const [name, v] of world.vendors) out(`  ${name.padEnd(20)} ${v.baseUrl}`);
  out(`  ${o.duration ? `running for ${o.duration} s` : 'press Ctrl-C to stop'}; lines: Kommo/vendor actions, then "->" what kommo-sync delivered\n`);

  const scenario = new Scenario(world, service.url!, (line) => out(`  ${line}`));
  const started = Date.now();
  let stop = false;
  let lastDelivery = 0;
  const showDeliveries = async () => {
    const rows = (await service.store.listDeliveries({ limit: 500, since: started })).filter((d) => d.id > lastDelivery).sort((a, b) => a.id - b.id);
    for (const d of rows) {
      lastDelivery = Math.max(lastDelivery, d.id);
      out(`    -> ${d.destination.padEnd(16)} ${d.op.padEnd(14)} ${d.subject.padEnd(28)} ${d.status}${d.error ? ` (${d.error})` : ''} ${d.latencyMs} ms`);
    }
  };

  const run = (async () => {
    let lastCounters = Date.now();
    while (!stop) {
      await scenario.step();
      await showDeliveries();
      if (Date.now() - lastCounters > 5000) {
        lastCounters = Date.now();
        const s = await service.store.stats(Date.now());
        out(`  [${Math.round((Date.now() - started) / 1000)} s] leads ${scenario.counts.leadsCreated}, stage changes ${scenario.counts.stageChanges}, jobs done ${s.jobs.done}, pending ${s.jobs.pending + s.jobs.leased}, dead ${s.jobs.dead}`);
      }
      await new Promise((r) => setTimeout(r, STEP_MS));
    }
  })();

  if (o.duration) await new Promise((r) => setTimeout(r, o.duration! * 1000));
  else await untilStopped();
  stop = true;
  await run;
  out('\n  stopping the scenario; letting the queue drain...');
  await drain(service.store, 15_000);
  await showDeliveries();

  const summary = await summarize(service, world, scenario, (Date.now() - started) / 1000);
  await service.close();
  await world.close();
  rmSync(dir, { recursive: true, force: true });

  if (o.json) process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
  else printSummary(summary);
  if (summary.failed > 0) process.exitCode = 1;
}

async function drain(store: { stats(now: number): Promise<{ inboxPending: number; jobs: { pending: number; leased: number } }> }, maxMs: number): Promise<void> {
  const deadline = Date.now() + maxMs;
  while (Date.now() < deadline) {
    const s = await store.stats(Date.now());
    if (s.inboxPending === 0 && s.jobs.pending === 0 && s.jobs.leased === 0) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function summarize(service: Awaited<ReturnType<typeof startService>>, world: Awaited<ReturnType<typeof startWorld>>, scenario: Scenario, seconds: number): Promise<DemoSummary> {
  const rows: DeliveryRow[] = await service.store.listDeliveries({ limit: 100_000 });
  const deliveries: DemoSummary['deliveries'] = {};
  const directions = { kommoToTools: 0, toolsToKommo: 0 };
  for (const d of rows) {
    const slot = (deliveries[d.destination] ??= { ok: 0, retried: 0, failed: 0 });
    if (d.status === 'ok') slot.ok++;
    else if (d.status === 'retry') slot.retried++;
    else slot.failed++;
    if (d.status === 'ok') directions[d.destination.endsWith('/kommo') ? 'toolsToKommo' : 'kommoToTools']++;
  }
  // Every configured destination is listed, so a silent one shows as zero rather than missing.
  for (const name of world.vendors.keys()) deliveries[`${world.account}/${name}`] ??= { ok: 0, retried: 0, failed: 0 };
  const stats = await service.store.stats(Date.now());
  const k = world.kommo;
  const unsubscribed = [...k.contacts.values()].filter((c) => c.tags.some((t) => t.name === 'Email Unsubscribed')).length;
  return {
    durationSeconds: Math.round(seconds * 10) / 10,
    scenario: scenario.counts,
    deliveries,
    directions,
    failed: stats.jobs.dead + stats.inboxFailed,
    kommo: { notes: k.notes.size, tasks: k.tasks.size, unsubscribedContacts: unsubscribed, requests: k.requests.length, maxRequestsPerSecond: k.maxRequestsInWindow(1000) },
    queue: { inboxPending: stats.inboxPending, pending: stats.jobs.pending + stats.jobs.leased, dead: stats.jobs.dead },
  };
}

function printSummary(s: DemoSummary): void {
  const lines = [
    '',
    `Summary after ${s.durationSeconds} s`,
    `  Kommo: ${s.scenario.leadsCreated} leads created, ${s.scenario.stageChanges} stage changes (${s.scenario.won} won, ${s.scenario.lost} lost)`,
    `  marketing tools sent back: ${Object.entries(s.scenario.engagement).map(([k, v]) => `${v} ${k}`).join(', ')}`,
    `  delivered Kommo -> tools: ${s.directions.kommoToTools} operations; tools -> Kommo: ${s.directions.toolsToKommo} operations`,
    ...Object.entries(s.deliveries).map(([d, c]) => `    ${d.padEnd(22)} ${c.ok} ok, ${c.retried} retried, ${c.failed} failed`),
    `  in Kommo now: ${s.kommo.notes} notes, ${s.kommo.tasks} call tasks (hot leads), ${s.kommo.unsubscribedContacts} contacts tagged 'Email Unsubscribed'`,
    `  Kommo API: ${s.kommo.requests} requests, at most ${s.kommo.maxRequestsPerSecond} in any second (limit 7)`,
    `  queue: ${s.queue.pending} pending, ${s.queue.dead} dead letters`,
    '',
    'Next: copy kommo-sync.example.yaml to kommo-sync.yaml, fill in your accounts, run `npx kommo-sync doctor`, then `npx kommo-sync serve`.',
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}
