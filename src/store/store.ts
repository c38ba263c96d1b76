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
  since?: number;
  limit?: number;
}

/** A key-value pair written in the same transaction as other changes (a cursor that says they exist). */
export interface KvWrite {
  key: string;
  value: string;
}

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
   */
  claimInbox(limit: number, leaseMs: number, now: number, excludeAccounts?: readonly string[]): Promise<InboxEvent[]>;
  /** Gives claimed, still pending events back unrouted: the next claim takes them again (attempts not counted). */
  releaseInbox(ids: number[]): Promise<void>;
  /** In one transaction: insert the jobs and mark the inbox events routed. */
  routeInbox(inboxIds: number[], jobs: NewJob[]): Promise<void>;
  /** Router could not route it (bad payload, or too many attempts): keep it, with the reason. */
  failInbox(id: number, reason: string): Promise<void>;
  /** Failed inbox events back to pending (after fixing the config or once Kommo is back). */
  requeueInbox(): Promise<number>;
  /**
   * Which of `keys` the inbox holds for `account` (any state): reconciliation asks whether a
   * webhook already brought a change before storing it from another source.
   */
  existingInboxKeys(account: string, keys: readonly string[]): Promise<Set<string>>;

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

  // delivery log
  logDeliveries(records: DeliveryRecord[]): Promise<void>;
  listDeliveries(filter: { destination?: string; subject?: string; limit?: number; since?: number }): Promise<DeliveryRow[]>;

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
   * Sliding-window limiter: when fewer than `limit` sends of `bucket` fall in (now - windowMs, now],
   * records one at `now` and returns 0; otherwise records nothing and returns how many ms to wait.
   */
  reserveRate(bucket: string, limit: number, windowMs: number, now: number): Promise<number>;

  // email -> lead index
  indexEmail(account: string, email: string, leadId: number, updatedAt: number): Promise<void>;
  /** Many index rows in one transaction (the router indexes a whole routed batch at once). */
  indexEmails(rows: ReadonlyArray<{ account: string; email: string; leadId: number; updatedAt: number }>): Promise<void>;
  /** Lead ids known for this email, most recently updated first. */
  leadsByEmail(account: string, email: string): Promise<number[]>;
  /** GDPR erase: drops index rows and counters mentioning this email. */
  forgetEmail(account: string, email: string): Promise<void>;

  stats(now: number): Promise<QueueStats>;
  /** Deletes done jobs, routed inbox rows and delivery logs older than `before`. Returns rows removed. */
  prune(before: number): Promise<number>;
}
