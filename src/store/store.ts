/**
 * The durable store behind intake, router and worker. One interface, two implementations
 * (sqlite.ts, postgres.ts), one conformance suite (test/conformance/store.test.ts) for both.
 *
 * Times are unix milliseconds (numbers) everywhere in this interface.
 */

// ---------- inbox ----------

export interface NewInboxEvent {
  account: string;
  /** `kommo` or a destination name. */
  source: string;
  /** Normalized kind (`lead.stage_changed`, `email.opened`, ...). */
  kind: string;
  /** Unique per (account): a re-sent webhook with the same key is not stored again. */
  dedupKey: string;
  /** JSON-serializable normalized event. */
  payload: unknown;
  receivedAt: number;
}

export interface InboxEvent extends NewInboxEvent {
  id: number;
  state: 'pending' | 'routed' | 'failed';
  attempts: number;
}

/** What the router learned about an event while routing it (the dashboard searches by these). */
export interface InboxFacts {
  id: number;
  /** The Kommo lead the event is about (matched by email for engagement events). */
  leadId?: number | null;
  email?: string | null;
  /** Why the event produced nothing (no lead has this email, the lead is gone, ...). */
  note?: string | null;
}

/** An inbox event without its payload, for lists. */
export interface InboxSummary {
  id: number;
  account: string;
  source: string;
  kind: string;
  receivedAt: number;
  state: InboxEvent['state'];
  attempts: number;
  leadId: number | null;
  email: string | null;
  note: string | null;
  lastError: string | null;
}

export interface InboxDetail extends InboxSummary {
  dedupKey: string;
  payload: unknown;
}

/**
 * Filters of listInbox, newest first. Email, lead, failed/noted rows and job states are served by
 * indexes; account, source and kind filter the log as it is walked by id (no index on intake's
 * hot path), which bench/events-api.ts measures on 100,000 rows.
 */
export interface InboxFilter {
  account?: string;
  source?: string;
  kind?: string;
  state?: InboxEvent['state'];
  /** Events that could not be routed: failed ones, and routed ones that produced nothing with a reason. */
  unrouted?: boolean;
  email?: string;
  leadId?: number;
  /** Events that produced a job for this destination key (`acme/cio`). */
  destination?: string;
  /** Events that produced a job in this state (`dead`: something of it is in the dead letters). */
  jobState?: JobState;
  /** Only ids below this one: the cursor of the previous page. */
  before?: number;
  limit?: number;
}

/** Delivery log rows counted per destination, time bucket and status. */
export interface DeliveryBucket {
  destination: string;
  /** Start of the bucket (unix ms, a multiple of the bucket size). */
  at: number;
  status: DeliveryRecord['status'];
  n: number;
}

/** Inbox rows counted per account, source and time bucket. */
export interface InboxBucket {
  account: string;
  source: string;
  at: number;
  n: number;
}

export interface InsertResult {
  inserted: number;
  duplicates: number;
}

// ---------- jobs ----------

export type JobState = 'pending' | 'leased' | 'done' | 'dead';

export interface NewJob {
  account: string;
  /** Destination name (`kommo` for writes into Kommo). */
  destination: string;
  /** Versioned job type, e.g. `sync.ops@1`, so old rows stay readable after upgrades. */
  type: string;
  /** Jobs with the same (destination, orderingKey) run one at a time, in id order. */
  orderingKey: string;
  payload: unknown;
  /** Not before this time (default: now). */
  runAfter?: number;
  /** The inbox event this job came from, if any (for the dashboard / replay). */
  inboxId?: number;
}

export interface Job extends Required<Omit<NewJob, 'inboxId'>> {
  id: number;
  inboxId: number | null;
  state: JobState;
  attempts: number;
  createdAt: number;
  leaseUntil: number | null;
  leasedBy: string | null;
  lastError: string | null;
  /** Set on a dead letter an operator discarded (the job is then `done`, never delivered). */
  discardReason?: string;
}

export interface ClaimOptions {
  destination: string;
  limit: number;
  leaseMs: number;
  workerId: string;
  now: number;
}

export type JobOutcome =
  | { id: number; outcome: 'done' }
  | { id: number; outcome: 'retry'; runAfter: number; error: string }
  | { id: number; outcome: 'dead'; error: string };

// ---------- delivery log ----------

export interface DeliveryRecord {
  jobId: number | null;
  account: string;
  destination: string;
  /** Operation kind (`upsertPerson`, `addNote`, ...). */
  op: string;
  /** Who it was about (email or lead id), for the dashboard's search. */
  subject: string;
  status: 'ok' | 'retry' | 'failed';
  /** Vendor HTTP status when known. */
  httpStatus: number | null;
  latencyMs: number;
  error: string | null;
  at: number;
}

export interface DeliveryRow extends DeliveryRecord {
  id: number;
}

// ---------- stats ----------

export interface QueueStats {
  inboxPending: number;
  /** Inbox events the router gave up on (bad data, a broken mapping, Kommo away too long). */
  inboxFailed: number;
  jobs: Record<JobState, number>;
  /** Pending + leased jobs per destination. */
  depthByDestination: Record<string, number>;
  deadByDestination: Record<string, number>;
  /** createdAt of the oldest pending or leased job, or null. */
  oldestPendingAt: number | null;
}

export interface JobFilter {
  state?: JobState;
  destination?: string;
  account?: string;
  /** Jobs of one ordering key (`lead:<id>`: one lead's jobs). */
  orderingKey?: string;
  /** Only jobs no inbox event made (a backfill's, an erasure's): a lead's timeline finds them by key. */
  withoutInbox?: boolean;
  since?: number;
  limit?: number;
}

/** A key-value pair written in the same transaction as other changes (a cursor that says they exist). */
export interface KvWrite {
  key: string;
  value: string;
}

/** What scrubPerson removed. */
export interface ScrubCounts {
  events: number;
  jobs: number;
  deliveries: number;
}

/** The payload an erased inbox event keeps (the row stays: its dedup key still stops a resend). */
export const ERASED_PAYLOAD = '{"erased":true}';

/** One open transaction's view of the store, used by the router to route atomically. */
export interface Store {
  readonly kind: 'sqlite' | 'postgres';
  /** Creates/upgrades the schema. Safe to call from several processes at once. */
  migrate(): Promise<void>;
  close(): Promise<void>;
  /** Cheap liveness probe for /readyz. */
  ping(): Promise<void>;

  // inbox
  /** Durable when the promise resolves. Duplicates (same account + dedupKey) are skipped, not errors. */
  insertInbox(events: NewInboxEvent[]): Promise<InsertResult>;
  /**
   * Pending inbox events in id order, leased for `leaseMs` so another router skips them. Events of
   * `excludeAccounts` (paused: Kommo refused their credentials) are left for later, uncounted.
   * `perAccount`: at most this many per account (fair claiming: one account's backlog does not push
   * another's events out of the claim), looking at the oldest 50,000 pending events.
   */
  claimInbox(limit: number, leaseMs: number, now: number, excludeAccounts?: readonly string[], perAccount?: number): Promise<InboxEvent[]>;
  /** Gives claimed, still pending events back unrouted: the next claim takes them again (attempts not counted). */
  releaseInbox(ids: number[]): Promise<void>;
  /**
   * In one transaction: insert the jobs and mark the inbox events routed, recording what the
   * router learned about each (`facts`: lead, email, why nothing came of it) when given.
   */
  routeInbox(inboxIds: number[], jobs: NewJob[], facts?: InboxFacts[]): Promise<void>;
  /** Router could not route it (bad payload, or too many attempts): keep it, with the reason. */
  failInbox(id: number, reason: string): Promise<void>;
  /** Failed inbox events back to pending (after fixing the config or once Kommo is back). */
  requeueInbox(): Promise<number>;
  /**
   * Which of `keys` the inbox holds for `account` (any state): reconciliation asks whether a
   * webhook already brought a change before storing it from another source.
   */
  existingInboxKeys(account: string, keys: readonly string[]): Promise<Set<string>>;
  /**
   * These events routed again: failed ones, and routed ones that produced nothing (`note`), e.g.
   * an open from an email no lead had yet. Others are left alone. Returns how many.
   */
  requeueInboxIds(ids: number[]): Promise<number>;
  /** Newest first, without payloads (see InboxFilter). */
  listInbox(filter: InboxFilter): Promise<InboxSummary[]>;
  getInbox(id: number): Promise<InboxDetail | null>;

  // jobs
  /**
   * Inserts the jobs; with `opts.kv`, also sets that key in the same transaction, so a cursor saying
   * "these jobs exist" (the backfill's page) can never disagree with the jobs after a crash.
   */
  enqueueJobs(jobs: NewJob[], opts?: { kv?: KvWrite }): Promise<number[]>;
  /**
   * Claims due jobs of one destination: pending (or leased with an expired lease), runAfter <= now,
   * and only the head job of each ordering key (no earlier pending/leased job with the same key).
   * Claimed jobs become `leased` until now + leaseMs, attempts += 1.
   */
  claimJobs(opts: ClaimOptions): Promise<Job[]>;
  /** Applies outcomes; only for jobs still leased by `workerId` (a stale worker's result is dropped). */
  completeJobs(workerId: string, outcomes: JobOutcome[]): Promise<void>;
  /** Heartbeat: extends the leases `workerId` still holds on these jobs to `leaseUntil`. */
  renewLeases(workerId: string, ids: number[], leaseUntil: number): Promise<void>;
  /**
   * Gives every claim back at once: leased jobs and inbox events become claimable now. Only for a
   * process that is the store's single user (`serve` on SQLite) and just started: the claims it
   * finds were left by its own previous life (a crash, kill -9), not held by anyone alive.
   */
  releaseAllClaims(): Promise<{ jobs: number; inbox: number }>;
  /** A worker stopping before its deliveries finished: its claims become claimable now. */
  releaseClaimsOf(workerId: string): Promise<number>;
  /** Pending jobs of `destination` waiting on a retry backoff become due `now` (it recovered). */
  expediteRetries(destination: string, now: number): Promise<number>;
  /** The pending head job of `destination` that is due soonest becomes due `now` (a circuit-breaker probe). */
  expediteOne(destination: string, now: number): Promise<number>;
  getJob(id: number): Promise<Job | null>;
  listJobs(filter: JobFilter): Promise<Job[]>;
  /** Dead (or chosen) jobs back to pending, attempts reset. Returns how many. */
  requeueJobs(filter: JobFilter & { ids?: number[] }): Promise<number>;
  /** Destinations that have due jobs right now (the worker loop polls these). */
  dueDestinations(now: number): Promise<string[]>;
  /** The jobs made from these inbox events, in id order. */
  jobsByInbox(inboxIds: number[]): Promise<Job[]>;
  /**
   * Dead letters an operator gives up on: they become `done` with `discardReason` (kept until
   * retention prunes them, never delivered, not counted as dead). Only dead jobs. Returns how many.
   */
  discardJobs(ids: number[], reason: string): Promise<number>;
  /** createdAt of the oldest pending or leased job per destination. */
  oldestPendingByDestination(): Promise<Record<string, number>>;

  // delivery log
  logDeliveries(records: DeliveryRecord[]): Promise<void>;
  listDeliveries(filter: { destination?: string; subject?: string; limit?: number; since?: number }): Promise<DeliveryRow[]>;
  /** Every delivery attempt of these jobs, in id order. */
  deliveriesByJobs(jobIds: number[]): Promise<DeliveryRow[]>;
  /** Deliveries at or after `since`, counted per destination, `bucketMs` bucket and status. */
  deliveryBuckets(since: number, bucketMs: number): Promise<DeliveryBucket[]>;
  /** Latencies of the newest deliveries (at most `limit`) of `destination` since `since`. */
  recentLatencies(destination: string, since: number, limit: number): Promise<number[]>;
  /** Inbox events received at or after `since`, counted per account, source and bucket. */
  inboxBuckets(since: number, bucketMs: number): Promise<InboxBucket[]>;

  // counters and cooldown marks (rules: hot lead)
  /** Records one occurrence at `at` and returns how many occurrences of `key` fall in [at - windowMs, at]. */
  hitCounter(key: string, at: number, windowMs: number): Promise<number>;
  /** Sets the mark if absent or expired; true when this call set it (i.e. not in cooldown). */
  tryMark(key: string, now: number, ttlMs: number): Promise<boolean>;

  // key-value area (OAuth tokens, caches, echo marks)
  kvGet(key: string): Promise<string | null>;
  /** Several keys in one call (one query); only keys that are set and not expired are in the map. */
  kvGetMany(keys: string[]): Promise<Map<string, string>>;
  /** ttlMs: optional expiry; expired keys read as null. */
  kvSet(key: string, value: string, ttlMs?: number, now?: number): Promise<void>;
  kvDelete(key: string): Promise<void>;
  /**
   * Runs `fn` while holding an exclusive named lock across every process using this store
   * (SQLite: one process anyway; PostgreSQL: advisory lock). Used for single-flight OAuth refresh.
   */
  withLock<T>(name: string, fn: () => Promise<T>): Promise<T>;

  // shared rate limit (one budget across every process on this store)
  /**
   * Sliding-window limiter: when fewer than `limit` sends of `bucket` fall in (now - windowMs, now]
   * (or later: sends in flight are recorded in the future), records one at `recordAt` (default
   * `now`) and returns 0; otherwise records nothing and returns how many ms to wait.
   */
  reserveRate(bucket: string, limit: number, windowMs: number, now: number, recordAt?: number): Promise<number>;
  /**
   * A send recorded at `heldAt` (a placeholder in the future: the request is in flight) finished:
   * it is recorded at `at` instead, so the window runs from the answer, not from the grant.
   */
  releaseRate(bucket: string, heldAt: number, at: number): Promise<void>;

  // email -> lead index
  indexEmail(account: string, email: string, leadId: number, updatedAt: number): Promise<void>;
  /** Many index rows in one transaction (the router indexes a whole routed batch at once). */
  indexEmails(rows: ReadonlyArray<{ account: string; email: string; leadId: number; updatedAt: number }>): Promise<void>;
  /** Lead ids known for this email, most recently updated first. */
  leadsByEmail(account: string, email: string): Promise<number[]>;
  /** GDPR erase: drops index rows and counters mentioning this email. */
  forgetEmail(account: string, email: string): Promise<void>;
  /**
   * GDPR erase of our own history about a person in `account`: routed inbox events matched to the
   * email lose their payload (replaced by `{"erased":true}`) and their email; finished jobs (done,
   * dead, discarded) whose payload mentions the email are deleted, with their delivery-log lines;
   * delivery-log lines whose subject is the email go too. Jobs still queued are left alone (an
   * erasure's own jobs carry the email until they ran). An empty email touches nothing.
   */
  scrubPerson(account: string, email: string): Promise<ScrubCounts>;

  stats(now: number): Promise<QueueStats>;
  /** Deletes done jobs, routed inbox rows and delivery logs older than `before`. Returns rows removed. */
  prune(before: number): Promise<number>;
}
