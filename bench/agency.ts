/**
 * Agency scale: one deployment with many Kommo accounts (200 by default), each with its own 7
 * requests/s. Measures `kommo-sync serve` start-up (to /readyz, and until every account has read its
 * stages and fields), its memory, and how long a quiet account's stage change takes while another
 * account works through a backlog of 2,000 events — next to the same change with no backlog.
 *
 *   node --import tsx bench/agency.ts [--accounts 200] [--backlog 1000] [--json FILE]
 *
 * The simulators (one Kommo per account under path prefixes, one shared Customer.io) run in this
 * process; the service runs as `node bin/kommo-sync.js serve` on a SQLite file.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';
import { startAgencyWorld, type AgencyWorld } from '../src/demo/agency.js';
import { openStore } from '../src/store/open.js';
import { fmt, freePort, HOST, intFlag, machine, memoryOf, onCleanup, parseFlags, progress, runBench, sleep, spawnNode, waitReady, waitUntil } from './lib.js';

const flags = parseFlags(process.argv.slice(2), ['accounts', 'backlog', 'json'] as const);
const accountCount = intFlag(flags.accounts, 'accounts', 200, 2);
const backlog = intFlag(flags.backlog, 'backlog', 1000);
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

async function quietChange(world: AgencyWorld, account: AgencyWorld['accounts'][number], leadId: number, stage: string): Promise<number> {
  const t0 = Date.now();
  account.kommo.moveLead(leadId, account.kommo.status(stage).id);
  await account.kommo.flushWebhooks();
  await waitUntil(`${account.name}'s note`, () => [...account.kommo.notes.values()].some((n) => n.entity_id === leadId && String(n.params.text).includes(stage)), 120_000, 10);
  return Date.now() - t0;
}

async function main(): Promise<boolean> {
  const m = machine();
  progress(`agency bench: ${accountCount} accounts, backlog of ${backlog * 2} events in one; ${m.nproc} CPUs, load ${m.load}, calibration ${m.calibrationMs} ms`);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kommo-sync-agency-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  const store = `sqlite:${path.join(dir, 'ks.db')}`;
  const world = await startAgencyWorld({ accounts: accountCount, store });
  onCleanup(() => world.close());
  const cfg = parse(world.yaml) as Record<string, unknown>;
  const config = path.join(dir, 'kommo-sync.yaml');
  writeFileSync(config, stringify(cfg));
  const port = await freePort();
  const url = `http://${HOST}:${port}`;

  const started = Date.now();
  const serve = spawnNode('serve', ['bin/kommo-sync.js', 'serve', '--config', config, '--port', String(port)], repoRoot);
  await waitReady(url, serve);
  const readyMs = Date.now() - started;
  // Every account reads its vocabulary (pipelines, fields, account) at start: wait until all did.
  await waitUntil('every account read its stages and fields', () => world.accounts.every((a) => a.kommo.requests.some((r) => r.path === '/api/v4/leads/pipelines')), 300_000, 50);
  const initMs = Date.now() - started;
  await sleep(1000);
  const memAfterStart = memoryOf(serve.pid);
  progress(`ready in ${readyMs} ms, every account initialised in ${initMs} ms, RSS ${fmt(memAfterStart.rssMiB)} MiB`);

  world.subscribe(url);
  const [busy, quiet] = [world.accounts[0]!, world.accounts[1]!];
  const quietLead = quiet.kommo.createLead({ name: 'Quiet', contactIds: [quiet.kommo.createContact({ name: 'Q', email: 'quiet@example.com' }).id] }).id;
  const busyLeads = Array.from({ length: backlog }, (_, i) => busy.kommo.createLead({ name: `Busy ${i}`, contactIds: [busy.kommo.createContact({ name: `B${i}`, email: `b${i}@example.com` }).id] }).id);
  await Promise.all(world.accounts.map((a) => a.kommo.flushWebhooks()));
  const reader = await openStore(store);
  onCleanup(() => reader.close());
  const idle = async () => {
    const s = await reader.stats(Date.now());
    return s.inboxPending === 0 && s.jobs.pending === 0 && s.jobs.leased === 0;
  };
  await waitUntil('creations synced', idle, 300_000);

  // Baseline: the quiet account's change with nothing else going on.
  const alone = await quietChange(world, quiet, quietLead, 'Demo scheduled');
  // The busy account's burst, then the quiet account's change while the backlog is worked through.
  for (const id of busyLeads) busy.kommo.moveLead(id, busy.kommo.status('Proposal sent').id);
  const burst = busy.kommo.flushWebhooks();
  await sleep(1000);
  const busyNotes = () => [...busy.kommo.notes.values()].filter((n) => String(n.params.text).includes('Proposal sent')).length;
  const duringBacklog = await quietChange(world, quiet, quietLead, 'Proposal sent');
  const busyDoneAtQuiet = busyNotes();
  await burst;
  await waitUntil('backlog done', async () => busyNotes() >= backlog && (await idle()), 600_000);
  const memPeak = memoryOf(serve.pid);
  const maxPerAccount = Math.max(...world.accounts.map((a) => a.kommo.maxRequestsInWindow(1000)));
  await serve.stop();

  const results = {
    accounts: accountCount,
    readyMs,
    allAccountsInitialisedMs: initMs,
    rssAfterStartMiB: Number(memAfterStart.rssMiB.toFixed(0)),
    peakRssMiB: Number(memPeak.hwmMiB.toFixed(0)),
    quietChangeAloneMs: alone,
    quietChangeDuringBacklogMs: duringBacklog,
    busyNotesWhenQuietWasDone: `${busyDoneAtQuiet}/${backlog}`,
    maxKommoRequestsIn1sAnyAccount: maxPerAccount,
  };
  process.stdout.write('\n=== agency results ===\n');
  for (const [k, v] of Object.entries(results)) process.stdout.write(`${k.padEnd(36)} ${v}\n`);
  const summary = { bench: 'agency', machine: m, results };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  if (flags.json) writeFileSync(flags.json, `${JSON.stringify(summary, null, 2)}\n`);
  return maxPerAccount <= 7;
}

runBench(main, 30 * 60_000);
