/**
 * What both stores share: row shapes and their conversion to the Store types, list limits, the
 * in-process named mutex, the requeue rule. Driver-free, so neither store loads the other's driver.
 */
import type { DeliveryRecord, DeliveryRow, InboxEvent, InboxSummary, InsertResult, Job, JobFilter, JobState } from './store.js';

const DEFAULT_LIST_LIMIT = 100;
const MAX_LIST_LIMIT = 10_000;

export interface InboxRow {
  id: number;
  account: string;
  source: string;
  kind: string;
  dedup_key: string;
  payload: string;
  received_at: number;
  state: InboxEvent['state'];
  attempts: number;
}

export interface JobRow {
  id: number;
  account: string;
  destination: string;
  type: string;
  ordering_key: string;
  payload: string;
  run_after: number;
  inbox_id: number | null;
  state: JobState;
  attempts: number;
  created_at: number;
  lease_until: number | null;
  leased_by: string | null;
  last_error: string | null;
  discard_reason?: string | null;
}

export interface InboxSummaryRow {
  id: number;
  account: string;
  source: string;
  kind: string;
  received_at: number;
  state: InboxEvent['state'];
  attempts: number;
  lead_id: number | null;
  email: string | null;
  note: string | null;
  last_error: string | null;
}

export interface DeliveryDbRow {
  id: number;
  job_id: number | null;
  account: string;
  destination: string;
  op: string;
  subject: string;
  status: DeliveryRecord['status'];
  http_status: number | null;
  latency_ms: number;
  error: string | null;
  at: number;
}

export function toInboxEvent(r: InboxRow): InboxEvent {
  return {
    id: r.id,
    account: r.account,
    source: r.source,
    kind: r.kind,
    dedupKey: r.dedup_key,
    payload: JSON.parse(r.payload) as unknown,
    receivedAt: r.received_at,
    state: r.state,
    attempts: r.attempts,
  };
}

export function toJob(r: JobRow): Job {
  return {
    id: r.id,
    account: r.account,
    destination: r.destination,
    type: r.type,
    orderingKey: r.ordering_key,
    payload: JSON.parse(r.payload) as unknown,
    runAfter: r.run_after,
    inboxId: r.inbox_id,
    state: r.state,
    attempts: r.attempts,
    createdAt: r.created_at,
    leaseUntil: r.lease_until,
    leasedBy: r.leased_by,
    lastError: r.last_error,
    ...(r.discard_reason ? { discardReason: r.discard_reason } : {}),
  };
}

export function toInboxSummary(r: InboxSummaryRow): InboxSummary {
  return {
    id: r.id,
    account: r.account,
    source: r.source,
    kind: r.kind,
    receivedAt: r.received_at,
    state: r.state,
    attempts: r.attempts,
    leadId: r.lead_id,
    email: r.email,
    note: r.note,
    lastError: r.last_error,
  };
}

/** Inbox columns of an InboxSummaryRow (without the payload). */
export const INBOX_SUMMARY_COLUMNS = 'id, account, source, kind, received_at, state, attempts, lead_id, email, note, last_error';

/** Up to this many ids per `IN` list of the by-id lookups (the dashboard asks for one page). */
export const MAX_IDS = 1_000;

/** Rows of a bucketed count with a known bucket size: the bucket's start. */
export function bucketStart(at: number, bucketMs: number): number {
  return Math.floor(at / bucketMs) * bucketMs;
}

export function toDelivery(r: DeliveryDbRow): DeliveryRow {
  return {
    id: r.id,
    jobId: r.job_id,
    account: r.account,
    destination: r.destination,
    op: r.op,
    subject: r.subject,
    status: r.status,
    httpStatus: r.http_status,
    latencyMs: r.latency_ms,
    error: r.error,
    at: r.at,
  };
}

/** JSON text for a payload column; `undefined` (not JSON) is stored as null. */
export function toJson(payload: unknown): string {
  return JSON.stringify(payload) ?? 'null';
}

export function clampLimit(limit: number | undefined): number {
  if (limit === undefined || !Number.isFinite(limit)) return DEFAULT_LIST_LIMIT;
  return Math.max(0, Math.min(MAX_LIST_LIMIT, Math.floor(limit)));
}

/** Lock contention past busy_timeout, I/O failure, full disk: the database cannot take writes right now. */

/**
 * Per-name FIFO mutex. For SQLite it is the whole of withLock: a SQLite file is used by one
 * process (deployments with several processes use PostgreSQL), and within the process the
 * registry below is keyed by the database file, so two Store instances on one file exclude
 * each other too.
 */
export class NamedMutex {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(name) ?? Promise.resolve();
    let release = (): void => {};
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    const tail = previous.then(() => mine);
    this.tails.set(name, tail);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(name) === tail) this.tails.delete(name);
    }
  }
}


export interface InboxInsertRow {
  account: string;
  source: string;
  kind: string;
  dedupKey: string;
  payload: string;
  receivedAt: number;
}

export interface QueuedInsert {
  rows: InboxInsertRow[];
  resolve: (r: InsertResult) => void;
  reject: (err: unknown) => void;
}

// ---------- the store ----------


/**
 * Which jobs requeueJobs touches: dead ones by default; with `ids`, the chosen jobs in any state
 * (a done job can be replayed) unless `state` narrows it. Never leased jobs: they still belong
 * to a worker, and requeueing one would run it twice. Null: nothing to do.
 */
export function requeueTarget(filter: JobFilter & { ids?: number[] }): JobFilter | null {
  if (filter.ids !== undefined && filter.ids.length === 0) return null;
  const state = filter.state ?? (filter.ids ? undefined : 'dead');
  if (state === 'leased') return null;
  const target: JobFilter = { ...filter, state };
  if (state === undefined) delete target.state;
  return target;
}

