/**
 * Where the intake's CPU goes, stage by stage, on the same ~1.7 KB Kommo form the ingest bench sends:
 * form decoding, bracket parsing, webhook normalization, the URL-secret check, payload serialization
 * and the durable insert (group commit of `--batch` events per transaction, fsync included).
 * In-process, no HTTP: compare with the `us CPU per webhook` figure of bench/ingest.ts.
 *
 *   node --import tsx bench/intake-stages.ts [--iterations 20000] [--batch 25] [--store sqlite|postgres]
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseBracketForm } from '../src/kommo/form.js';
import { parseKommoWebhook } from '../src/kommo/webhook.js';
import { openStore } from '../src/store/open.js';
import type { NewInboxEvent } from '../src/store/store.js';
import { bodyTemplate, fillBody } from './kommo-body.js';
import { choiceFlag, fmt, intFlag, machine, onCleanup, parseFlags, progress, runBench, scratchPostgres } from './lib.js';

const flags = parseFlags(process.argv.slice(2), ['iterations', 'batch', 'store'] as const);
const iterations = intFlag(flags.iterations, 'iterations', 20_000);
const batch = intFlag(flags.batch, 'batch', 25);
const storeKind = choiceFlag(flags.store, 'store', ['sqlite', 'postgres'] as const, 'sqlite');

const parts = bodyTemplate({ statusId: 142, oldStatusId: 20067736, pipelineId: 9217056, subdomain: 'acme' });
let seq = 0;
const body = (): string => {
  const n = seq++;
  return fillBody(parts, 40_000_000 + n, String(1_700_000_000 + n));
};

/** Mean microseconds per call over `n` calls, after a warm-up of n/4 calls. */
function timeIt(n: number, fn: () => unknown): number {
  let sink = 0;
  for (let i = 0; i < n / 4; i++) sink += fn() === undefined ? 0 : 1;
  const t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) sink += fn() === undefined ? 0 : 1;
  const us = Number(process.hrtime.bigint() - t) / 1000 / n;
  if (sink < 0) process.stdout.write(''); // keep the results alive
  return us;
}

async function main(): Promise<boolean> {
  const m = machine();
  progress(`intake stages: ${iterations} iterations, store ${storeKind}, ${batch} events per commit; ${m.nproc} CPUs, node ${m.node}, load ${m.load}, calibration ${m.calibrationMs} ms`);
  const bodies = Array.from({ length: 1024 }, body);
  const b0 = bodies[0]!;
  progress(`body ${b0.length} bytes`);
  let i = 0;
  const nextBody = (): string => bodies[i++ & 1023]!;

  const rows: Array<[string, number]> = [];
  rows.push(['URLSearchParams decode alone (for comparison)', timeIt(iterations, () => {
    let n = 0;
    for (const _ of new URLSearchParams(nextBody())) n++;
    return n;
  })]);
  rows.push(['parseBracketForm', timeIt(iterations, () => parseBracketForm(nextBody()))]);
  const parsed = bodies.map((b) => parseBracketForm(b));
  rows.push(['parseKommoWebhook (on a parsed form)', timeIt(iterations, () => parseKommoWebhook(parsed[i++ & 1023]!))]);
  const secret = 'x'.repeat(24);
  rows.push(['checkSecret (2 x sha256)', timeIt(iterations, () => [createHash('sha256').update(secret).digest(), createHash('sha256').update(secret).digest()])]);
  const events = bodies.map((b) => parseKommoWebhook(parseBracketForm(b)).events[0]!);
  rows.push(['JSON.stringify(event payload)', timeIt(iterations, () => JSON.stringify(events[i++ & 1023]!.event))]);

  // The durable insert: `batch` callers in one event-loop turn share one commit (group commit).
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kommo-sync-stages-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  const url = storeKind === 'sqlite' ? `sqlite:${path.join(dir, 'stages.db')}` : scratchPostgres().url;
  const store = await openStore(url);
  onCleanup(() => store.close());
  const commits = Math.max(20, Math.floor(iterations / batch / 4));
  const now = Date.now();
  let k = 0;
  const oneCommit = async (): Promise<void> => {
    const calls: Array<Promise<unknown>> = [];
    for (let j = 0; j < batch; j++) {
      const e = events[k & 1023]!;
      const row: NewInboxEvent = { account: 'acme', source: 'kommo', kind: e.event.kind, dedupKey: `${e.dedupKey}:${k++}`, payload: e.event, receivedAt: now };
      calls.push(store.insertInbox([row]));
    }
    await Promise.all(calls);
  };
  for (let j = 0; j < 5; j++) await oneCommit();
  const cpu0 = process.cpuUsage();
  const t = process.hrtime.bigint();
  for (let j = 0; j < commits; j++) await oneCommit();
  const wallUs = Number(process.hrtime.bigint() - t) / 1000;
  const cpu = process.cpuUsage(cpu0);
  rows.push([`insertInbox, ${batch} per commit: wall per event (fsync included)`, wallUs / (commits * batch)]);
  rows.push([`insertInbox, ${batch} per commit: CPU per event`, (cpu.user + cpu.system) / (commits * batch)]);
  rows.push([`  = wall per commit`, wallUs / commits]);

  process.stdout.write('\n=== intake stages (microseconds) ===\n');
  for (const [what, us] of rows) process.stdout.write(`${fmt(us, 1).padStart(10)} us  ${what}\n`);
  process.stdout.write(`${JSON.stringify({ bench: 'intake-stages', machine: m, settings: { iterations, batch, store: storeKind, bodyBytes: b0.length }, micros: Object.fromEntries(rows.map(([k2, v]) => [k2, Number(v.toFixed(1))])) })}\n`);
  return true;
}

runBench(main, 600_000);
