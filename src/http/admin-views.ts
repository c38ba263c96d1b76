/**
 * What the dashboard's pages show, computed from the store (and, through callbacks, from the live
 * service): overview health, event rows and details, a lead's timeline, dead letters in groups.
 * Each function costs a bounded number of indexed queries, whatever the size of the log.
 */
import type { DeliveryRow, InboxSummary, Job, QueueStats, Store } from '../store/store.js';
import type {
  AccountHealth,
  AccountOperations,
  DashboardDestination,
  DeadJobView,
  DeliveryView,
  DestinationHealth,
  EventDetailResponse,
  EventRow,
  FailureGroup,
  FailuresResponse,
  Health,
  JobCounts,
  JobView,
  OperationsView,
  OverviewResponse,
  SeriesLine,
  TimelineEntry,
  TimelineResponse,
} from './admin-types.js';

/** What only the running service knows (passed in by runtime/, read at each overview). */
export interface LiveState {
  paused: Array<{ account: string; since: number; reason: string }>;
  breakers: Array<{ destination: string; since: number; reason: string }>;
  kommo: Array<{ account: string; budget: { inUse: number; limit: number; waiting: number } | null; breaker: string | null }>;
}

/** The long-running operations (backfill, reconciliation), read by runtime/ at each overview. */
export interface OperationsInput {
  read(): Promise<OperationsView>;
  /** `kommo.reconcile` per account (ms; 0: off). */
  reconcileEveryMs: Record<string, number>;
}

const MINUTE = 60_000;
const HOUR = 3_600_000;
/** The chart's span. */
export const SERIES_SPAN_MS = 3 * HOUR;
const LATENCY_WINDOW_MS = 15 * MINUTE;
const LATENCY_SAMPLE = 1_000;
const WAIT_WARN_S = 120;
const WAIT_ERROR_S = 900;

type Counts = { ok: number; retry: number; failed: number };

/**
 * Per-minute counts of the last hours, kept between refreshes: a finished minute does not change
 * (deliveries are logged as they end), so each refresh reads only the last two minutes again
 * instead of hours of the log.
 */
export class SeriesCache {
  private out = new Map<number, Map<string, Counts>>();
  private inbound = new Map<number, Map<string, number>>();
  private readFrom = 0;

  constructor(private readonly bucketMs = MINUTE) {}

  async refresh(store: Store, now: number): Promise<void> {
    const start = Math.floor((now - SERIES_SPAN_MS) / this.bucketMs) * this.bucketMs;
    const from = Math.max(start, this.readFrom);
    const [deliveries, inbox] = await Promise.all([store.deliveryBuckets(from, this.bucketMs), store.inboxBuckets(from, this.bucketMs)]);
    for (const m of [this.out, this.inbound]) for (const at of [...m.keys()]) if (at < start || at >= from) m.delete(at);
    for (const b of deliveries) {
      const row = this.out.get(b.at) ?? new Map<string, Counts>();
      this.out.set(b.at, row);
      const c = row.get(b.destination) ?? { ok: 0, retry: 0, failed: 0 };
      c[b.status] += b.n;
      row.set(b.destination, c);
    }
    for (const b of inbox) {
      const row = this.inbound.get(b.at) ?? new Map<string, number>();
      this.inbound.set(b.at, row);
      const key = `${b.account}/${b.source}`;
      row.set(key, (row.get(key) ?? 0) + b.n);
    }
    // The current and the previous minute may still grow (a delivery logged a moment late).
    this.readFrom = Math.floor(now / this.bucketMs) * this.bucketMs - this.bucketMs;
  }

  buckets(now: number): number[] {
    const last = Math.floor(now / this.bucketMs) * this.bucketMs;
    const out: number[] = [];
    for (let at = last - SERIES_SPAN_MS + this.bucketMs; at <= last; at += this.bucketMs) out.push(at);
    return out;
  }

  outCounts(key: string, at: number): Counts {
    return this.out.get(at)?.get(key) ?? { ok: 0, retry: 0, failed: 0 };
  }

  /** Inbound events of `account/source` (source `kommo` = Kommo's CRM events). */
  inCount(key: string, at: number): number {
    return this.inbound.get(at)?.get(key) ?? 0;
  }

  get bucketSize(): number {
    return this.bucketMs;
  }
}

export function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

function age(seconds: number): string {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function clock(at: number): string {
  return new Date(at).toISOString().slice(11, 16) + ' UTC';
}

export async function overview(store: Store, series: SeriesCache, destinations: DashboardDestination[], live: LiveState, now: number, ops?: OperationsInput): Promise<OverviewResponse> {
  const [stats, oldest, , opsView] = await Promise.all([store.stats(now), store.oldestPendingByDestination(), series.refresh(store, now), ops ? ops.read() : null]);
  const buckets = series.buckets(now);
  const lastHour = buckets.filter((b) => b > now - HOUR);
  const last5 = buckets.filter((b) => b > now - 5 * MINUTE);
  const latencies = await Promise.all(destinations.map((d) => store.recentLatencies(d.key, now - LATENCY_WINDOW_MS, LATENCY_SAMPLE)));
  const pausedBy = new Map(live.paused.map((p) => [p.account, p]));
  const breakerBy = new Map(live.breakers.map((b) => [b.destination, b]));

  const lines: SeriesLine[] = [];
  const health: DestinationHealth[] = destinations.map((d, i) => {
    const sum = (list: number[]) => list.reduce((acc, at) => {
      const c = series.outCounts(d.key, at);
      return { ok: acc.ok + c.ok, retry: acc.retry + c.retry, failed: acc.failed + c.failed };
    }, { ok: 0, retry: 0, failed: 0 });
    const hour = sum(lastHour);
    const recent = sum(last5);
    const total = hour.ok + hour.retry + hour.failed;
    const sorted = [...latencies[i]!].sort((a, b) => a - b);
    const oldestAt = oldest[d.key];
    const oldestAge = oldestAt === undefined ? null : Math.max(0, (now - oldestAt) / 1000);
    const inKey = d.type === 'kommo' ? `${d.account}/kommo` : d.key;
    const hasIn = d.type === 'kommo' || d.inbound;
    lines.push({
      key: d.key,
      direction: 'out',
      values: buckets.map((at) => {
        const c = series.outCounts(d.key, at);
        return c.ok + c.retry + c.failed;
      }),
      failures: buckets.map((at) => {
        const c = series.outCounts(d.key, at);
        return c.retry + c.failed;
      }),
    });
    if (hasIn) lines.push({ key: d.key, direction: 'in', values: buckets.map((at) => series.inCount(inKey, at)) });

    const reasons: Array<[Health, string]> = [];
    const breaker = breakerBy.get(d.key) ?? null;
    if (breaker) reasons.push(['error', `failing since ${clock(breaker.since)}: ${breaker.reason} (one probe at a time until it answers)`]);
    const paused = d.type === 'kommo' ? pausedBy.get(d.account) : undefined;
    if (paused) reasons.push(['error', `paused since ${clock(paused.since)}: ${paused.reason}`]);
    const dead = stats.deadByDestination[d.key] ?? 0;
    if (dead > 0) reasons.push(['error', `${dead} dead letter${dead === 1 ? '' : 's'} (see Failures)`]);
    if (oldestAge !== null && oldestAge >= WAIT_ERROR_S) reasons.push(['error', `the oldest queued job has waited ${age(oldestAge)}`]);
    else if (oldestAge !== null && oldestAge >= WAIT_WARN_S) reasons.push(['warn', `the oldest queued job has waited ${age(oldestAge)}`]);
    if (hour.failed > 0) reasons.push(['warn', `${hour.failed} operation${hour.failed === 1 ? '' : 's'} failed in the last hour`]);
    if (total >= 10 && hour.retry / total > 0.1) reasons.push(['warn', `${Math.round((hour.retry / total) * 100)}% of operations were retried in the last hour`]);
    const status: Health = reasons.some(([h]) => h === 'error') ? 'error' : reasons.length ? 'warn' : 'ok';
    return {
      ...d,
      status,
      reasons: reasons.map(([, r]) => r),
      out: {
        perMinute: Math.round(((recent.ok + recent.retry + recent.failed) / 5) * 10) / 10,
        ok: hour.ok,
        retried: hour.retry,
        failed: hour.failed,
        successRate: total ? hour.ok / total : null,
        p50: percentile(sorted, 50),
        p95: percentile(sorted, 95),
        depth: stats.depthByDestination[d.key] ?? 0,
        dead,
        oldestPendingAgeSeconds: oldestAge === null ? null : Math.round(oldestAge),
      },
      in: hasIn
        ? {
            perMinute: Math.round((last5.reduce((n, at) => n + series.inCount(inKey, at), 0) / 5) * 10) / 10,
            lastHour: lastHour.reduce((n, at) => n + series.inCount(inKey, at), 0),
          }
        : null,
      breaker: breaker ? { since: breaker.since, reason: breaker.reason } : null,
    };
  });

  const accounts: AccountHealth[] = [...new Set(destinations.map((d) => d.account))].map((account) => {
    const k = live.kommo.find((x) => x.account === account);
    const paused = pausedBy.get(account) ?? null;
    const reasons: Array<[Health, string]> = [];
    if (paused) reasons.push(['error', `Kommo work paused since ${clock(paused.since)}: ${paused.reason}`]);
    if (k?.breaker) reasons.push(['error', k.breaker]);
    const backfill = opsView?.backfill[account];
    // A failed backfill leaves leads unsynced until someone runs it again: worth the banner.
    if (backfill?.status === 'failed') reasons.push(['warn', `backfill failed${backfill.error ? `: ${backfill.error}` : ''} (run \`kommo-sync backfill\` again to resume)`]);
    if (k?.budget && k.budget.waiting > 0 && k.budget.inUse >= k.budget.limit) reasons.push(['warn', `Kommo rate budget used up (${k.budget.inUse}/${k.budget.limit} per second), ${k.budget.waiting} request${k.budget.waiting === 1 ? '' : 's'} waiting`]);
    return {
      account,
      status: reasons.some(([h]) => h === 'error') ? 'error' : reasons.length ? 'warn' : 'ok',
      reasons: reasons.map(([, r]) => r),
      paused: paused ? { since: paused.since, reason: paused.reason } : null,
      budget: k?.budget ?? null,
      kommoBreaker: k?.breaker ?? null,
    };
  });

  const problems = [
    ...accounts.flatMap((a) => a.reasons.map((r) => `${a.account}: ${r}`)),
    ...health.flatMap((d) => d.reasons.map((r) => `${d.key}: ${r}`)),
  ];
  if (stats.inboxFailed > 0) problems.push(`${stats.inboxFailed} inbound event${stats.inboxFailed === 1 ? '' : 's'} could not be routed (see Failures)`);
  const oldestAll = stats.oldestPendingAt === null ? null : Math.max(0, Math.round((now - stats.oldestPendingAt) / 1000));
  const status: Health = [...health, ...accounts].some((x) => x.status === 'error') || stats.inboxFailed > 0 ? 'error' : [...health, ...accounts].some((x) => x.status === 'warn') ? 'warn' : 'ok';
  return {
    now,
    status,
    problems,
    queue: {
      inboxPending: stats.inboxPending,
      inboxFailed: stats.inboxFailed,
      pending: stats.jobs.pending,
      inFlight: stats.jobs.leased,
      done: stats.jobs.done,
      dead: stats.jobs.dead,
      oldestPendingAgeSeconds: oldestAll,
    },
    destinations: health,
    accounts,
    series: { bucketMs: series.bucketSize, buckets, lines },
    operations: ops && opsView ? operationsOf(accounts.map((a) => a.account), opsView, ops.reconcileEveryMs) : null,
    version: versionOf(stats, lines),
  };
}

/** Per account, in the accounts' order: only plain fields (nothing else the store may hold). */
export function operationsOf(accounts: string[], v: OperationsView, reconcileEveryMs: Record<string, number>): AccountOperations[] {
  return accounts.map((account) => {
    const b = v.backfill[account];
    const r = v.reconcile[account];
    return {
      account,
      backfill: b
        ? {
            filter: b.filter, status: b.status, leads: b.leads, total: b.total, synced: b.synced, skipped: b.skipped, jobs: b.jobs,
            waiting: b.waiting, error: b.error, startedAt: b.startedAt, updatedAt: b.updatedAt, finishedAt: b.finishedAt,
          }
        : null,
      reconcile: {
        everyMs: reconcileEveryMs[account] ?? null,
        last: r ? { at: r.at, read: r.read, found: r.found, totalFound: r.totalFound } : null,
      },
    };
  });
}

/** Cheap fingerprint of "something happened": the page refreshes its lists when it changes. */
function versionOf(stats: QueueStats, lines: SeriesLine[]): string {
  const recent = lines.reduce((n, l) => n + (l.values.at(-1) ?? 0) + (l.values.at(-2) ?? 0) * 1_000, 0);
  return [stats.inboxPending, stats.inboxFailed, stats.jobs.pending, stats.jobs.leased, stats.jobs.done, stats.jobs.dead, recent].join('.');
}

// ---------- events ----------

function countJobs(jobs: Job[]): JobCounts {
  const c: JobCounts = { total: jobs.length, done: 0, pending: 0, dead: 0, discarded: 0 };
  for (const j of jobs) {
    if (j.discardReason) c.discarded++;
    else if (j.state === 'done') c.done++;
    else if (j.state === 'dead') c.dead++;
    else c.pending++;
  }
  return c;
}

export async function eventRows(store: Store, rows: InboxSummary[]): Promise<EventRow[]> {
  const jobs = await store.jobsByInbox(rows.map((r) => r.id));
  const byInbox = new Map<number, Job[]>();
  for (const j of jobs) {
    if (j.inboxId === null) continue;
    const list = byInbox.get(j.inboxId) ?? [];
    list.push(j);
    byInbox.set(j.inboxId, list);
  }
  return rows.map((r) => {
    const own = byInbox.get(r.id) ?? [];
    return { ...r, jobs: countJobs(own), destinations: [...new Set(own.map((j) => j.destination))] };
  });
}

/** The vendor's answer in short, from what the delivery log keeps. */
export function answerOf(d: Pick<DeliveryRow, 'status' | 'httpStatus' | 'error'>): string {
  const http = d.httpStatus === null ? '' : `HTTP ${d.httpStatus}`;
  if (d.status === 'ok') return http ? `${http} ok` : 'ok';
  const error = d.error ?? d.status;
  // Errors already start with "HTTP 400: ..." or "invalid: HTTP 400: ...": do not say it twice.
  return http && !error.includes(http) ? `${http}: ${error}` : error;
}

function jobState(j: Job): JobView['state'] {
  return j.discardReason ? 'discarded' : j.state;
}

function opsOf(j: Job): { subject: string; ops: unknown[] } {
  const p = j.payload;
  if (p && typeof p === 'object' && 'ops' in p && Array.isArray(p.ops)) {
    return { subject: 'subject' in p && typeof p.subject === 'string' ? p.subject : '', ops: p.ops };
  }
  return { subject: '', ops: [] };
}

export function jobViews(jobs: Job[], deliveries: DeliveryRow[]): JobView[] {
  const byJob = new Map<number, DeliveryRow[]>();
  for (const d of deliveries) {
    if (d.jobId === null) continue;
    const list = byJob.get(d.jobId) ?? [];
    list.push(d);
    byJob.set(d.jobId, list);
  }
  return jobs.map((j) => {
    const { subject, ops } = opsOf(j);
    return {
      id: j.id,
      destination: j.destination,
      state: jobState(j),
      attempts: j.attempts,
      createdAt: j.createdAt,
      runAfter: j.runAfter,
      subject,
      lastError: j.lastError,
      discardReason: j.discardReason ?? null,
      ops,
      deliveries: (byJob.get(j.id) ?? []).map((d): DeliveryView => ({ id: d.id, at: d.at, op: d.op, status: d.status, httpStatus: d.httpStatus, latencyMs: d.latencyMs, answer: answerOf(d) })),
    };
  });
}

export async function eventDetail(store: Store, id: number): Promise<EventDetailResponse | null> {
  const event = await store.getInbox(id);
  if (!event) return null;
  const jobs = await store.jobsByInbox([id]);
  const deliveries = await store.deliveriesByJobs(jobs.map((j) => j.id));
  const [row] = await eventRows(store, [event]);
  return { event: { ...row!, dedupKey: event.dedupKey, payload: event.payload }, jobs: jobViews(jobs, deliveries) };
}

// ---------- lead timeline ----------

/** How many of a lead's events one timeline reads (newest first). */
const TIMELINE_EVENTS = 300;

export type StageName = (account: string, pipelineId: number, statusId: number) => string | null;

function num(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}
function str(v: unknown): string | null {
  return typeof v === 'string' && v ? v : null;
}
function field(o: unknown, key: string): unknown {
  return o && typeof o === 'object' ? (o as Record<string, unknown>)[key] : undefined;
}

/** One line for an inbound event: what happened, in words. */
export function describeEvent(account: string, kind: string, payload: unknown, stageName: StageName): string {
  const stage = (p: unknown, s: unknown) => {
    const pi = num(p);
    const si = num(s);
    if (pi === null || si === null) return null;
    return stageName(account, pi, si) ?? `stage ${si}`;
  };
  const now = stage(field(payload, 'pipelineId'), field(payload, 'statusId'));
  const before = stage(field(payload, 'oldPipelineId') ?? field(payload, 'pipelineId'), field(payload, 'oldStatusId'));
  switch (kind) {
    case 'lead.created': return `lead created${now ? ` in "${now}"` : ''}`;
    case 'lead.stage_changed': return `stage changed${before ? ` from "${before}"` : ''}${now ? ` to "${now}"` : ''}`;
    case 'lead.won': return 'deal won';
    case 'lead.lost': return 'deal lost';
    case 'lead.responsible_changed': return 'responsible user changed';
    case 'lead.deleted': return 'lead deleted';
    case 'lead.updated': return 'lead edited';
    case 'contact.updated': return 'contact edited';
    default: {
      const subject = str(field(payload, 'subject'));
      const detail = str(field(payload, 'detail')) ?? str(field(payload, 'link'));
      return `${kind.replace('.', ' ')}${subject ? ` "${subject}"` : ''}${detail ? ` (${detail})` : ''}`;
    }
  }
}

/** One line for an operation: its kind and what it carries. */
export function describeOp(op: unknown): string {
  const kind = str(field(op, 'kind')) ?? 'operation';
  const quote = (v: unknown) => {
    const s = str(v);
    return s ? ` "${s.length > 80 ? `${s.slice(0, 77)}...` : s}"` : '';
  };
  switch (kind) {
    case 'trackEvent': return `event${quote(field(op, 'name'))}`;
    case 'upsertPerson': return 'identify (person and attributes)';
    case 'triggerWorkflow': return `start workflow${quote(field(op, 'workflowId'))}`;
    case 'addToList': return `add to list${quote(field(op, 'listId'))}`;
    case 'removeFromList': return `remove from list${quote(field(op, 'listId'))}`;
    case 'groupAccount': return `group in account${quote(field(op, 'groupId'))}`;
    case 'suppress': return 'suppress (opted out)';
    case 'erasePerson': return 'erase the person';
    case 'addNote': return `note${quote(field(op, 'text'))}`;
    case 'addTask': return `task${quote(field(op, 'text'))}`;
    case 'updateContact': return 'update the contact (fields, tags)';
    case 'moveLead': return 'move the lead';
    default: return kind;
  }
}

export async function leadTimeline(store: Store, account: string, leadId: number, stageName: StageName): Promise<TimelineResponse> {
  const events = await store.listInbox({ account, leadId, limit: TIMELINE_EVENTS + 1 });
  const truncated = events.length > TIMELINE_EVENTS;
  const rows = events.slice(0, TIMELINE_EVENTS);
  // Jobs of its events, and those no event made (a backfill's upsert, an erasure and its note).
  const [byEvent, keyed] = await Promise.all([
    store.jobsByInbox(rows.map((r) => r.id)),
    store.listJobs({ account, orderingKey: `lead:${leadId}`, withoutInbox: true, limit: TIMELINE_EVENTS }),
  ]);
  const jobs = [...byEvent, ...keyed];
  const deliveries = await store.deliveriesByJobs(jobs.map((j) => j.id));
  const details = await Promise.all(rows.map((r) => store.getInbox(r.id)));
  const entries: TimelineEntry[] = [];
  for (const d of details) {
    if (!d) continue;
    entries.push({ at: d.receivedAt, type: 'in', source: d.source, kind: d.kind, eventId: d.id, text: describeEvent(account, d.kind, d.payload, stageName), note: d.note ?? d.lastError });
  }
  for (const v of jobViews(jobs, deliveries)) {
    const job = jobs.find((j) => j.id === v.id)!;
    // Deliveries of one attempt are logged together, one per op in order: the k-th is ops[k].
    const attempts = new Map<number, DeliveryView[]>();
    for (const d of v.deliveries) attempts.set(d.at, [...(attempts.get(d.at) ?? []), d]);
    for (const list of attempts.values()) {
      list.forEach((d, k) => entries.push({ at: d.at, type: 'out', destination: v.destination, op: d.op, status: d.status, answer: d.answer, jobId: v.id, eventId: job.inboxId, text: describeOp(v.ops[k]) }));
    }
    if (v.state !== 'done') {
      for (const op of v.ops) entries.push({ at: v.createdAt, type: 'queued', destination: v.destination, op: str(field(op, 'kind')) ?? '', state: v.state, jobId: v.id, eventId: job.inboxId, text: describeOp(op) });
    }
  }
  entries.sort((a, b) => a.at - b.at || order(a) - order(b));
  const email = rows.find((r) => r.email)?.email ?? null;
  return { account, leadId, email, entries, truncated };
}

function order(e: TimelineEntry): number {
  return e.type === 'in' ? 0 : e.type === 'queued' ? 1 : 2;
}

// ---------- failures ----------

/** Dead letters read for grouping (the newest). */
const DEAD_SCAN = 5_000;
const GROUP_JOBS = 50;

/** A reason with its specifics blanked, so the same failure of many people forms one group. */
export function reasonClass(error: string | null): string {
  return (error ?? 'unknown')
    .replace(/[\w.+-]+@[\w-]+(\.[\w-]+)+/g, '<email>')
    .replace(/"[^"]*"/g, '"…"')
    .replace(/\b\d+(\.\d+)?\b/g, (m) => (/^[1-5]\d\d$/.test(m) ? m : '<n>')) // keep HTTP statuses
    .slice(0, 200);
}

export async function failures(store: Store, destinations: string[] | null): Promise<FailuresResponse> {
  const dead = await store.listJobs({ state: 'dead', limit: DEAD_SCAN });
  const stats = await store.stats(Date.now());
  const groups = new Map<string, FailureGroup>();
  for (const j of dead) {
    if (destinations && !destinations.includes(j.destination)) continue;
    const reason = reasonClass(j.lastError);
    const key = `${j.destination}\0${reason}`;
    const g = groups.get(key) ?? { destination: j.destination, reason, count: 0, jobs: [] };
    groups.set(key, g);
    g.count++;
    if (g.jobs.length < GROUP_JOBS) g.jobs.push(deadJob(j));
  }
  const unrouted = await eventRows(store, await store.listInbox({ unrouted: true, limit: 100 }));
  return {
    groups: [...groups.values()].sort((a, b) => b.count - a.count || a.destination.localeCompare(b.destination)),
    deadTotal: stats.jobs.dead,
    unrouted,
  };
}

function deadJob(j: Job): DeadJobView {
  return { id: j.id, subject: opsOf(j).subject, createdAt: j.createdAt, attempts: j.attempts, inboxId: j.inboxId, lastError: j.lastError ?? '' };
}

/** The ids of one group's dead letters (a group's replay or discard). */
export async function groupIds(store: Store, destination: string, reason: string): Promise<number[]> {
  const dead = await store.listJobs({ state: 'dead', destination, limit: 10_000 });
  return dead.filter((j) => reasonClass(j.lastError) === reason).map((j) => j.id);
}
