/**
 * The dashboard's events API over a big log: 100,000 inbox events (with ~150,000 jobs and their
 * delivery log rows), then filtered queries through the real HTTP API (`GET /api/events?...`),
 * timed one after the other on a kept-alive connection: p50 / p95 / max per query, target p95 < 50 ms.
 *
 * It also measures what migration 4's indexes cost the hot paths (intake inserts, routing, job
 * claims and completions): the same work on a store with and without those indexes.
 *
 *   node --import tsx bench/events-api.ts [--store sqlite|postgres|both] [--events N] [--runs N] [--json FILE]
 *
 * Data: 70% Kommo CRM events, 30% engagement from `cio`; 5,000 leads with one email each; every
 * event is routed through the store (facts: lead, email; 1.5 jobs on average to acme/cio and
 * acme/kommo); then, by plain SQL for speed, 97% of jobs are marked done, 0.3% dead, the rest
 * left pending, and one delivery row is logged per finished job (plus a retry row for 5%).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import pino from 'pino';
import { buildApp } from '../src/http/app.js';
import { adminRoutes, type DashboardDestination } from '../src/http/admin.js';
import { Metrics } from '../src/observability/metrics.js';
import { openStore } from '../src/store/open.js';
import type { DeliveryRecord, InboxFacts, NewInboxEvent, NewJob, Store } from '../src/store/store.js';
import { choiceFlag, fmt, intFlag, machine, onCleanup, parseFlags, percentile, progress, runBench, scratchPostgres, withPg } from './lib.js';

const flags = parseFlags(process.argv.slice(2), ['store', 'events', 'runs', 'json', 'hot-events', 'rounds']);
const STORES = choiceFlag(flags.store, 'store', ['sqlite', 'postgres', 'both'], 'both');
const EVENTS = intFlag(flags.events, 'events', 100_000);
const RUNS = intFlag(flags.runs, 'runs', 200);
const HOT_EVENTS = intFlag(flags['hot-events'], 'hot-events', 20_000);
const ROUNDS = intFlag(flags.rounds, 'rounds', 3);
const LEADS = 5_000;
const TOKEN = 'bench-admin-token-0123456789';
const M4_INDEXES = ['ks_inbox_lead', 'ks_inbox_email', 'ks_inbox_noted', 'ks_jobs_inbox', 'ks_deliveries_job'];

const CRM_KINDS = ['lead.created', 'lead.updated', 'lead.stage_changed', 'lead.stage_changed', 'lead.stage_changed', 'lead.won', 'lead.lost', 'contact.updated'];
const ENGAGEMENT_KINDS = ['email.opened', 'email.opened', 'email.opened', 'email.clicked', 'email.delivered', 'email.unsubscribed', 'email.bounced'];

/** Deterministic PRNG: the same data every run. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const leadId = (i: number) => 30_000_000 + i;
const emailOf = (i: number) => `person-${i}@example.com`;

interface Timings {
  insertMs: number;
  routeMs: number;
  claimCompleteMs: number;
}

/** Fills the store through its API (inbox, routing with facts); returns the hot-path timings. */
async function fill(store: Store, events: number, seed: number): Promise<Timings> {
  const random = rng(seed);
  const now = Date.now();
  const t0 = performance.now();
  const BATCH = 1_000;
  for (let start = 0; start < events; start += BATCH) {
    const rows: NewInboxEvent[] = [];
    for (let i = start; i < Math.min(events, start + BATCH); i++) {
      const lead = Math.floor(random() * LEADS);
      const crm = random() < 0.7;
      const kind = crm ? CRM_KINDS[Math.floor(random() * CRM_KINDS.length)]! : ENGAGEMENT_KINDS[Math.floor(random() * ENGAGEMENT_KINDS.length)]!;
      rows.push({
        account: 'acme',
        source: crm ? 'kommo' : 'cio',
        kind,
        dedupKey: `k${seed}-${i}`,
        payload: crm ? { type: 'crm', kind, entityId: leadId(lead), entityType: 'lead', statusId: 1000 + (i % 7), pipelineId: 7, entity: { id: String(leadId(lead)), name: `Deal ${lead}` } } : { type: 'engagement', kind, email: emailOf(lead), occurredAt: now, vendorEventId: `v${i}`, source: 'cio', subject: 'Hello' },
        receivedAt: now - (events - i) * 10,
      });
    }
    await store.insertInbox(rows);
  }
  const insertMs = performance.now() - t0;

  const t1 = performance.now();
  for (;;) {
    const claimed = await store.claimInbox(500, 60_000, Date.now());
    if (claimed.length === 0) break;
    const jobs: NewJob[] = [];
    const facts: InboxFacts[] = [];
    for (const r of claimed) {
      const p = r.payload as { type: string; entityId?: number; email?: string };
      const lead = p.type === 'crm' ? p.entityId! - 30_000_000 : Number(/person-(\d+)@/.exec(p.email!)![1]);
      // 1% of opens match no lead: listed as "could not be routed".
      if (p.type !== 'crm' && r.id % 100 === 0) {
        facts.push({ id: r.id, email: emailOf(lead), note: 'no Kommo lead has this email; not recorded in Kommo' });
        continue;
      }
      facts.push({ id: r.id, leadId: leadId(lead), email: emailOf(lead) });
      const key = `lead:${leadId(lead)}`;
      const op = { subject: emailOf(lead), ops: [{ kind: p.type === 'crm' ? 'trackEvent' : 'addNote' }] };
      if (p.type === 'crm') jobs.push({ account: 'acme', destination: 'acme/cio', type: 'sync.ops@1', orderingKey: key, payload: op, inboxId: r.id });
      if (p.type !== 'crm' || r.id % 2 === 0) jobs.push({ account: 'acme', destination: 'acme/kommo', type: 'kommo.ops@1', orderingKey: key, payload: op, inboxId: r.id });
    }
    await store.routeInbox(claimed.map((r) => r.id), jobs, facts);
  }
  const routeMs = performance.now() - t1;

  // Claims and completions through the store: 20,000 jobs of a separate destination.
  const claimJobs = Math.min(20_000, events / 5);
  const extra: NewJob[] = [];
  for (let i = 0; i < claimJobs; i++) extra.push({ account: 'acme', destination: 'acme/hot', type: 'sync.ops@1', orderingKey: `lead:${i % 2_000}`, payload: { subject: 'x', ops: [] } });
  for (let i = 0; i < extra.length; i += 1_000) await store.enqueueJobs(extra.slice(i, i + 1_000));
  const t2 = performance.now();
  for (let done = 0; done < claimJobs;) {
    const got = await store.claimJobs({ destination: 'acme/hot', limit: 250, leaseMs: 60_000, workerId: 'bench', now: Date.now() });
    if (got.length === 0) break;
    await store.completeJobs('bench', got.map((j) => ({ id: j.id, outcome: 'done' as const })));
    done += got.length;
  }
  return { insertMs, routeMs, claimCompleteMs: performance.now() - t2 };
}

async function deliveriesFor(store: Store, ids: Array<{ id: number; destination: string; state: string }>): Promise<void> {
  const at = Date.now() - 60_000;
  const records: DeliveryRecord[] = [];
  for (const j of ids) {
    if (j.id % 20 === 0) records.push({ jobId: j.id, account: 'acme', destination: j.destination, op: 'trackEvent', subject: 'x', status: 'retry', httpStatus: 503, latencyMs: 40, error: 'HTTP 503: busy', at });
    records.push({ jobId: j.id, account: 'acme', destination: j.destination, op: 'trackEvent', subject: 'x', status: j.state === 'dead' ? 'failed' : 'ok', httpStatus: j.state === 'dead' ? 400 : 200, latencyMs: 20 + (j.id % 50), error: j.state === 'dead' ? 'invalid: HTTP 400: email is not valid' : null, at: at + (j.id % 60_000) });
    if (records.length >= 2_000) await store.logDeliveries(records.splice(0));
  }
  await store.logDeliveries(records);
}

interface QueryResult {
  query: string;
  rows: number;
  p50: number;
  p95: number;
  max: number;
}

async function timeQueries(store: Store, label: string): Promise<QueryResult[]> {
  const destinations: DashboardDestination[] = [
    { key: 'acme/cio', account: 'acme', name: 'cio', type: 'customerio', title: 'Customer.io', inbound: true },
    { key: 'acme/kommo', account: 'acme', name: 'kommo', type: 'kommo', title: 'Kommo', inbound: true },
  ];
  const log = pino({ level: 'silent' });
  const app = await buildApp({ log, store, metrics: new Metrics(store), bodyLimit: 1 << 20, admin: adminRoutes({ store, token: TOKEN, destinations }) });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  onCleanup(() => app.close());
  const mid = (await store.listInbox({ limit: 1 }))[0]!.id - Math.floor(EVENTS / 2);
  const queries = [
    '/api/events',
    '/api/events?kind=email.clicked',
    '/api/events?kind=lead.won&account=acme',
    `/api/events?email=${emailOf(1234)}`,
    `/api/events?lead=${leadId(4321)}`,
    '/api/events?destination=acme/cio',
    '/api/events?destination=acme/kommo&kind=email.opened',
    '/api/events?status=dead',
    '/api/events?status=unrouted',
    '/api/events?status=pending',
    `/api/events?account=acme&source=cio&kind=email.opened&before=${mid}`,
    `/api/events?lead=${leadId(4321)}&kind=lead.stage_changed`,
    // no such event: the walk by id reads the whole log (the worst case without a kind index)
    '/api/events?kind=lead.deleted',
    // The lead timeline: the lead's events, their jobs and those no event made, and every attempt.
    `/api/leads/acme/${leadId(4321)}`,
  ];
  const out: QueryResult[] = [];
  const headers = { authorization: `Bearer ${TOKEN}` };
  for (const q of queries) {
    let rows = 0;
    for (let i = 0; i < 20; i++) await (await fetch(`${url}${q}`, { headers })).arrayBuffer(); // warm-up
    const times: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t = performance.now();
      const res = await fetch(`${url}${q}`, { headers });
      const body = (await res.json()) as { events?: unknown[]; entries?: unknown[] };
      times.push(performance.now() - t);
      if (res.status !== 200) throw new Error(`${q}: HTTP ${res.status}`);
      rows = (body.events ?? body.entries ?? []).length;
    }
    times.sort((a, b) => a - b);
    const r = { query: q.startsWith('/api/leads/') ? `timeline ${q}` : q.replace(/^\/api\/events\??/, '') || '(no filter)', rows, p50: percentile(times, 50), p95: percentile(times, 95), max: times[times.length - 1]! };
    out.push(r);
    progress(`${label}: ${r.query}: ${r.rows} rows, p50 ${fmt(r.p50, 1)} ms, p95 ${fmt(r.p95, 1)} ms`);
  }
  await app.close();
  return out;
}

async function runStore(kind: 'sqlite' | 'postgres'): Promise<{ kind: string; queries: QueryResult[]; withIndexes: Timings; withoutIndexes: Timings; rows: { inbox: number; jobs: number; deliveries: number }; runs: { with: Timings[]; without: Timings[] } }> {
  const open = async (): Promise<{ store: Store; sql: (text: string) => Promise<unknown[]> }> => {
    if (kind === 'sqlite') {
      const dir = mkdtempSync(path.join(tmpdir(), 'ks-bench-events-'));
      onCleanup(() => rmSync(dir, { recursive: true, force: true }));
      const file = path.join(dir, 'ks.db');
      const store = await openStore(`sqlite:${file}`);
      await store.migrate();
      onCleanup(() => store.close());
      const db = new Database(file);
      onCleanup(() => {
        db.close();
      });
      return { store, sql: async (text) => (/^\s*select/i.test(text) ? db.prepare(text).all() : (db.exec(text), [])) };
    }
    const pgScratch = scratchPostgres();
    const store = await openStore(pgScratch.url);
    await store.migrate();
    onCleanup(() => store.close());
    return { store, sql: (text) => withPg(pgScratch.base, pgScratch.schema, async (c) => (await c.query(text)).rows as unknown[]) };
  };

  // Hot paths with and without the new indexes (the rest of the schema as it is), alternated
  // over several rounds on fresh stores: this shared machine's speed drifts, the minimum is kept.
  const runs: { with: Timings[]; without: Timings[] } = { with: [], without: [] };
  for (let round = 1; round <= ROUNDS; round++) {
    for (const indexes of [false, true]) {
      const s = await open();
      if (!indexes) for (const name of M4_INDEXES) await s.sql(`DROP INDEX ${name}`);
      const t = await fill(s.store, HOT_EVENTS, round);
      (indexes ? runs.with : runs.without).push(t);
      progress(`${kind}: round ${round} ${indexes ? 'with   ' : 'without'}: insert ${fmt(t.insertMs)} ms, route ${fmt(t.routeMs)} ms, claim+complete ${fmt(t.claimCompleteMs)} ms`);
      await s.store.close();
    }
  }
  const best = (list: Timings[]): Timings => ({
    insertMs: Math.min(...list.map((t) => t.insertMs)),
    routeMs: Math.min(...list.map((t) => t.routeMs)),
    claimCompleteMs: Math.min(...list.map((t) => t.claimCompleteMs)),
  });
  const withIndexes = best(runs.with);
  const withoutIndexes = best(runs.without);

  progress(`${kind}: filling ${fmt(EVENTS)} events with the indexes`);
  const { store, sql } = await open();
  await fill(store, EVENTS, 100);
  const now = Date.now();
  const no = kind === 'postgres' ? 'false' : '0';
  await sql(`UPDATE ks_jobs SET state = 'dead', is_head = ${no}, finished_at = ${now}, last_error = 'invalid: HTTP 400: email is not valid' WHERE destination <> 'acme/hot' AND id % 300 = 0`);
  await sql(`UPDATE ks_jobs SET state = 'done', is_head = ${no}, finished_at = ${now} WHERE destination <> 'acme/hot' AND state = 'pending' AND id % 40 <> 0`);
  const finished = (await sql(`SELECT id, destination, state FROM ks_jobs WHERE destination <> 'acme/hot' AND state IN ('done', 'dead') ORDER BY id`)) as Array<{ id: number; destination: string; state: string }>;
  await deliveriesFor(store, finished.map((r) => ({ ...r, id: Number(r.id) })));
  await sql('ANALYZE');
  const count = async (table: string) => Number(((await sql(`SELECT COUNT(*) AS n FROM ${table}`)) as Array<{ n: number | string }>)[0]!.n);
  const rows = { inbox: await count('ks_inbox'), jobs: await count('ks_jobs'), deliveries: await count('ks_deliveries') };
  progress(`${kind}: ${fmt(rows.inbox)} inbox rows, ${fmt(rows.jobs)} jobs, ${fmt(rows.deliveries)} deliveries`);
  const queries = await timeQueries(store, kind);
  return { kind, queries, withIndexes, withoutIndexes, rows, runs };
}

runBench(async () => {
  const m = machine();
  progress(`machine: ${m.nproc} cpus, ${m.cpu}, node ${m.node}, load ${m.load}, calibration ${m.calibrationMs} ms`);
  const kinds = STORES === 'both' ? (['sqlite', 'postgres'] as const) : [STORES];
  const results = [];
  for (const k of kinds) results.push(await runStore(k));
  let ok = true;
  const lines: string[] = [];
  for (const r of results) {
    lines.push(`\n${r.kind}: ${fmt(r.rows.inbox)} events, ${fmt(r.rows.jobs)} jobs, ${fmt(r.rows.deliveries)} delivery rows; ${RUNS} sequential requests per query`);
    lines.push('| query | rows | p50 ms | p95 ms | max ms |', '| --- | ---: | ---: | ---: | ---: |');
    for (const q of r.queries) {
      lines.push(`| \`${q.query}\` | ${q.rows} | ${fmt(q.p50, 1)} | ${fmt(q.p95, 1)} | ${fmt(q.max, 1)} |`);
      if (q.p95 >= 50) ok = false;
    }
    const pctOf = (a: number, b: number) => `${a >= b ? '+' : ''}${fmt(((a - b) / b) * 100, 0)}%`;
    lines.push(`\nhot paths, ${fmt(HOT_EVENTS)} events, best of ${ROUNDS} alternated rounds (with migration 4's indexes / without):`);
    lines.push(`- insertInbox: ${fmt(r.withIndexes.insertMs)} / ${fmt(r.withoutIndexes.insertMs)} ms (${pctOf(r.withIndexes.insertMs, r.withoutIndexes.insertMs)})`);
    lines.push(`- claimInbox + routeInbox with facts: ${fmt(r.withIndexes.routeMs)} / ${fmt(r.withoutIndexes.routeMs)} ms (${pctOf(r.withIndexes.routeMs, r.withoutIndexes.routeMs)})`);
    lines.push(`- claimJobs + completeJobs, 20,000 jobs: ${fmt(r.withIndexes.claimCompleteMs)} / ${fmt(r.withoutIndexes.claimCompleteMs)} ms (${pctOf(r.withIndexes.claimCompleteMs, r.withoutIndexes.claimCompleteMs)})`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
  if (flags.json) writeFileSync(flags.json, JSON.stringify({ machine: m, events: EVENTS, runs: RUNS, results }, null, 2));
  process.stdout.write(ok ? '\nall filtered queries under 50 ms at p95\n' : '\nsome query is at or over 50 ms at p95\n');
  return ok;
}, 40 * 60_000);
