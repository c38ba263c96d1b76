/**
 * SQLite implementation of Store (better-sqlite3, WAL).
 *
 * better-sqlite3 is synchronous: every statement runs to completion on the event loop, so a
 * transaction can never interleave with another call of this process. That makes most methods a
 * single short synchronous transaction; the async signatures only exist for the interface.
 *
 * Throughput comes from group commit in insertInbox: webhooks arriving in the same event-loop turn
 * share one transaction, whose fsync runs off the event loop (wal-sync.ts) before they are answered.
 * Routing and job completions are made durable the same way, leases skip the fsync (soft state),
 * and every other write commits with synchronous=FULL. Checkpoints run on a thread (checkpointer.ts).
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import { StoreUnavailableError, errorCode, errorMessage, isStoreUnavailable } from './errors.js';
import { sqliteMigrations } from './migrations/sqlite.js';
import { GROUP_COMMIT_MAX_EVENTS, GroupCommit } from './group-commit.js';
import { WalSync, type WalFiles } from './wal-sync.js';
import { Checkpointer } from './checkpointer.js';
import { bucketStart, clampLimit, INBOX_SUMMARY_COLUMNS, MAX_IDS, NamedMutex, requeueTarget, toDelivery, toInboxEvent, toInboxSummary, toJob, toJson, type DeliveryDbRow, type InboxRow, type InboxSummaryRow, type JobRow, type QueuedInsert } from './rows.js';
import { normalizeEmail } from '../model/index.js';
import type {
  ClaimOptions,
  DeliveryBucket,
  DeliveryRecord,
  DeliveryRow,
  InboxBucket,
  InboxDetail,
  InboxEvent,
  InboxFacts,
  InboxFilter,
  InboxSummary,
  InsertResult,
  Job,
  JobFilter,
  JobOutcome,
  JobState,
  KvWrite,
  NewInboxEvent,
  NewJob,
  QueueStats,
  ScrubCounts,
  Store,
} from './store.js';
import { ERASED_PAYLOAD } from './store.js';

export interface SqliteStoreOptions {
  /** FULL (default): a resolved insert survives power loss. NORMAL: survives a process crash only. */
  synchronous?: 'full' | 'normal';
  /** How long a write waits for another connection's lock before failing with STORE_UNAVAILABLE. */
  busyTimeoutMs?: number;
  /** Told when the checkpoint thread fails (SQLite's own checkpoints then take over). */
  onWarning?(message: string): void;
  /** Tests: the file operations behind the WAL fsync (see wal-sync.ts). */
  walFiles?: WalFiles;
}

/** prune deletes in chunks so one call never holds the write lock (and the event loop) for long. */
const PRUNE_CHUNK = 5_000;

export async function openSqliteStore(file: string, opts: SqliteStoreOptions = {}): Promise<Store> {
  try {
    return new SqliteStore(file, opts);
  } catch (err) {
    throw mapSqliteError(err);
  }
}

// ---------- rows ----------

const UNAVAILABLE_CODES = ['SQLITE_BUSY', 'SQLITE_LOCKED', 'SQLITE_IOERR', 'SQLITE_FULL', 'SQLITE_CANTOPEN', 'SQLITE_PROTOCOL', 'SQLITE_READONLY'];

function mapSqliteError(err: unknown): unknown {
  const code = errorCode(err);
  if (code !== undefined && UNAVAILABLE_CODES.some((c) => code === c || code.startsWith(`${c}_`))) {
    return new StoreUnavailableError(`SQLite store unavailable (${code}): ${errorMessage(err)}`, { cause: err });
  }
  return err;
}

function walSyncFailed(err: unknown): StoreUnavailableError {
  return new StoreUnavailableError(`SQLite store unavailable: the write-ahead log could not be synced to disk: ${errorMessage(err)}`, { cause: err });
}

// ---------- named mutex ----------

const mutexByDatabase = new Map<string, NamedMutex>();

function sharedMutex(file: string): NamedMutex {
  let mutex = mutexByDatabase.get(file);
  if (!mutex) {
    mutex = new NamedMutex();
    mutexByDatabase.set(file, mutex);
  }
  return mutex;
}

// ---------- group commit ----------

class SqliteStore implements Store {
  readonly kind = 'sqlite' as const;
  private readonly db: Database.Database;
  private readonly mutex: NamedMutex;
  private prepared: Prepared | undefined;
  private closed = false;

  private readonly group = new GroupCommit((batch) => this.writeGroup(batch));
  /** Batches waiting for the running WAL fsync to end (see writeGroup). */
  private held: QueuedInsert[] = [];
  private heldEvents = 0;
  /** Set when inbox commits are made durable by an fsync off the event loop (file databases in WAL mode). */
  private readonly wal: WalSync | undefined;
  /** WAL checkpoints on a worker thread; started by the first intake write (file databases in WAL mode). */
  private checkpointer: Checkpointer | undefined;
  private readonly walMode: boolean;
  private readonly busyTimeoutMs: number;
  private readonly onWarning: ((message: string) => void) | undefined;

  constructor(file: string, opts: SqliteStoreOptions) {
    this.busyTimeoutMs = opts.busyTimeoutMs ?? 5_000;
    this.onWarning = opts.onWarning;
    this.db = new Database(file, { timeout: this.busyTimeoutMs });
    try {
      // WAL: readers never block the writer; intake keeps writing while the dashboard reads.
      // (`:memory:` silently stays in its own journal mode.)
      const mode = String(this.db.pragma('journal_mode = WAL', { simple: true }));
      // FULL: the WAL is fsynced at every commit, so a resolved write survives power loss.
      this.db.pragma(`synchronous = ${opts.synchronous === 'normal' ? 'NORMAL' : 'FULL'}`);
      this.walMode = mode.toLowerCase() === 'wal' && !this.db.memory;
      if (this.walMode && opts.synchronous !== 'normal') this.wal = new WalSync(`${path.resolve(file)}-wal`, opts.walFiles);
      this.db.pragma('foreign_keys = ON');
      this.db.pragma('temp_store = MEMORY');
    } catch (err) {
      this.db.close();
      throw err;
    }

    this.mutex = this.db.memory ? new NamedMutex() : sharedMutex(path.resolve(file));
  }

  /** Statements are prepared on first use: they need the tables, which exist only after migrate(). */
  private get q(): Prepared {
    if (this.closed) throw new Error('store is closed');
    this.prepared ??= new Prepared(this.db);
    return this.prepared;
  }

  /** Runs one synchronous unit of work, mapping lock/I-O failures to StoreUnavailableError. */
  private async sync<T>(fn: (q: Prepared) => T): Promise<T> {
    try {
      return fn(this.q);
    } catch (err) {
      throw mapSqliteError(err);
    }
  }

  async migrate(): Promise<void> {
    if (this.closed) throw new Error('store is closed');
    // BEGIN IMMEDIATE takes the write lock before reading ks_schema_migrations, so two processes
    // opening a fresh file cannot both decide to apply step 1.
    const apply = this.db.transaction(() => {
      this.db.exec(`CREATE TABLE IF NOT EXISTS ks_schema_migrations (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`);
      const applied = new Set(
        this.db
          .prepare<[], { id: number }>('SELECT id FROM ks_schema_migrations')
          .all()
          .map((r) => r.id),
      );
      const record = this.db.prepare<[number, string, number]>(
        'INSERT INTO ks_schema_migrations (id, name, applied_at) VALUES (?, ?, ?)',
      );
      for (const m of sqliteMigrations) {
        if (applied.has(m.id)) continue;
        this.db.exec(m.sql);
        record.run(m.id, m.name, Date.now());
      }
    });
    try {
      apply.immediate();
    } catch (err) {
      throw mapSqliteError(err);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.group.flush(); // callers already waiting get their commit before the handle goes away
    this.commitHeld();
    this.closed = true;
    await this.wal?.close();
    await this.checkpointer?.close();
    this.db.close();
  }

  async ping(): Promise<void> {
    await this.sync((q) => q.ping.get());
  }

  // ---------- inbox ----------

  insertInbox(events: NewInboxEvent[]): Promise<InsertResult> {
    if (this.closed) return Promise.reject(new Error('store is closed'));
    if (this.walMode && !this.checkpointer) this.startCheckpointer();
    return this.group.add(events);
  }

  /** Only stores that take webhooks get the thread; `status` or `doctor` never start one. */
  private startCheckpointer(): void {
    this.checkpointer = new Checkpointer({
      file: path.resolve(this.db.name),
      busyTimeoutMs: this.busyTimeoutMs,
      setAutocheckpoint: (pages) => {
        if (!this.closed) this.db.pragma(`wal_autocheckpoint = ${pages}`);
      },
      onError: (message) => this.onWarning?.(`SQLite checkpoint thread failed (${message}); checkpoints run in the main thread from now on`),
    });
  }

  /**
   * Takes a group-commit batch. While the WAL fsync of an earlier commit runs, the batch is held and
   * committed when that fsync ends, together with everything else that arrived meanwhile: it could
   * not become durable before the next fsync anyway, and one transaction per fsync instead of one
   * per event-loop turn rewrites the shared table and index pages (WAL frames, two writes each)
   * once for the lot. The group-commit bound still applies to what is held.
   */
  private writeGroup(batch: QueuedInsert[]): void {
    const wal = this.wal;
    if (!wal?.syncing) {
      this.commitGroup(batch);
      return;
    }
    const first = this.held.length === 0;
    for (const item of batch) {
      this.held.push(item);
      this.heldEvents += item.rows.length;
    }
    if (this.heldEvents >= GROUP_COMMIT_MAX_EVENTS) this.commitHeld();
    else if (first) wal.afterSync(() => this.commitHeld());
  }

  private commitHeld(): void {
    const batch = this.held;
    if (batch.length === 0) return;
    this.held = [];
    this.heldEvents = 0;
    this.commitGroup(batch);
  }

  /**
   * Commits every queued insertInbox call in one transaction, then settles each caller's promise:
   * after the WAL fsync when `wal` is set (the commit itself skips it), at once otherwise.
   */
  private commitGroup(batch: QueuedInsert[]): void {
    const done: Array<{ item: QueuedInsert; result: InsertResult }> = [];
    try {
      this.withDeferredSync(() => {
        try {
          const results = this.q.insertInboxBatch.immediate(batch);
          batch.forEach((item, i) => done.push({ item, result: results[i] ?? { inserted: 0, duplicates: 0 } }));
        } catch (err) {
          const mapped = mapSqliteError(err);
          if (batch.length === 1 || isStoreUnavailable(mapped)) {
            for (const item of batch) item.reject(mapped);
            return;
          }
          // One caller's rows broke the batch (e.g. a NOT NULL violation): retry callers one by one
          // so only the culprit fails.
          for (const item of batch) {
            try {
              const [result] = this.q.insertInboxBatch.immediate([item]);
              done.push({ item, result: result ?? { inserted: 0, duplicates: 0 } });
            } catch (single) {
              item.reject(mapSqliteError(single));
            }
          }
        }
      });
    } catch (err) {
      // Switching `synchronous` failed: nothing was written.
      for (const item of batch) item.reject(mapSqliteError(err));
      return;
    }
    if (done.length === 0) return;
    if (!this.wal) {
      for (const { item, result } of done) item.resolve(result);
      return;
    }
    this.wal.flushed().then(
      () => {
        for (const { item, result } of done) item.resolve(result);
      },
      (err: unknown) => {
        const failure = walSyncFailed(err);
        for (const { item } of done) item.reject(failure);
      },
    );
  }

  /** Runs `fn` with synchronous=NORMAL when the WAL is synced separately (see wal-sync.ts). */
  private withDeferredSync<T>(fn: () => T): T {
    if (!this.wal) return fn();
    this.q.syncNormal.run();
    try {
      return fn();
    } finally {
      this.q.syncFull.run();
    }
  }

  /**
   * A write of soft state (a lease): committed without waiting for the disk. A power cut can only
   * undo it, and an undone lease just lets the work be claimed again.
   */
  private soft<T>(fn: (q: Prepared) => T): Promise<T> {
    return this.sync((q) => this.withDeferredSync(() => fn(q)));
  }

  /** A write that must survive power loss before its promise resolves; the fsync runs off the event loop. */
  private async durable<T>(fn: (q: Prepared) => T): Promise<T> {
    const result = await this.soft(fn);
    if (this.wal) {
      try {
        await this.wal.flushed();
      } catch (err) {
        throw walSyncFailed(err);
      }
    }
    return result;
  }

  claimInbox(limit: number, leaseMs: number, now: number, excludeAccounts: readonly string[] = [], perAccount?: number): Promise<InboxEvent[]> {
    return this.soft((q) =>
      (perAccount !== undefined
        ? q.claimInboxFair.all({ limit, now, leaseUntil: now + leaseMs, exclude: JSON.stringify(excludeAccounts), perAccount, scan: FAIR_SCAN })
        : excludeAccounts.length
        ? q.claimInboxExcept.all({ limit, now, leaseUntil: now + leaseMs, exclude: JSON.stringify(excludeAccounts) })
        : q.claimInbox.all({ limit, now, leaseUntil: now + leaseMs }))
        .sort((a, b) => a.id - b.id)
        .map((r) => toInboxEvent({ ...r, payload: q.inboxPayload.get(r.id)?.payload ?? 'null' })),
    );
  }

  releaseInbox(ids: number[]): Promise<void> {
    if (ids.length === 0) return Promise.resolve();
    return this.soft((q) => {
      q.releaseInbox.run(JSON.stringify(ids));
    });
  }

  routeInbox(inboxIds: number[], jobs: NewJob[], facts: InboxFacts[] = []): Promise<void> {
    return this.durable((q) => q.routeInbox.immediate(inboxIds, jobs, Date.now(), facts));
  }

  failInbox(id: number, reason: string): Promise<void> {
    return this.sync((q) => {
      q.failInbox.run(reason, id);
    });
  }

  requeueInbox(): Promise<number> {
    return this.sync((q) => q.requeueInbox.run().changes);
  }

  existingInboxKeys(account: string, keys: readonly string[]): Promise<Set<string>> {
    if (keys.length === 0) return Promise.resolve(new Set());
    return this.sync((q) => new Set(q.existingInboxKeys.all(account, JSON.stringify([...new Set(keys)])).map((r) => r.dedup_key)));
  }

  requeueInboxIds(ids: number[]): Promise<number> {
    if (ids.length === 0) return Promise.resolve(0);
    return this.sync((q) => q.requeueInboxIds.run(JSON.stringify(ids.slice(0, MAX_IDS))).changes);
  }

  listInbox(filter: InboxFilter): Promise<InboxSummary[]> {
    return this.sync((q) => {
      const conds: string[] = [];
      const params: (string | number)[] = [];
      // `+col`: no index for these. Without ANALYZE statistics (SQLite never gathers them by
      // itself) the planner would take the dedup index for `account = ?` and sort the whole
      // account; walking the primary key backwards stops after one page instead.
      const eq = (col: string, v: string | number | undefined, indexed = false) => {
        if (v === undefined) return;
        conds.push(`${indexed ? '' : '+'}i.${col} = ?`);
        params.push(v);
      };
      eq('account', filter.account);
      eq('source', filter.source);
      eq('kind', filter.kind);
      // pending and failed rows have their own (id) indexes: small, and in id order
      eq('state', filter.state, filter.state === 'pending' || filter.state === 'failed');
      eq('email', filter.email, true);
      eq('lead_id', filter.leadId, true);
      if (filter.unrouted) {
        // The two partial indexes each hold only such rows: their union is small.
        conds.push(`i.id IN (SELECT id FROM ks_inbox WHERE state = 'failed' UNION ALL SELECT id FROM ks_inbox WHERE note IS NOT NULL)`);
      }
      if (filter.jobState !== undefined) {
        // Few jobs per state but `done`: the (state, destination) index lists them directly.
        conds.push(`i.id IN (SELECT inbox_id FROM ks_jobs WHERE state = ?${filter.destination !== undefined ? ' AND destination = ?' : ''} AND inbox_id IS NOT NULL)`);
        params.push(filter.jobState);
        if (filter.destination !== undefined) params.push(filter.destination);
      } else if (filter.destination !== undefined) {
        // Walks the newest events and probes their jobs (jobs by inbox id), stopping at a page.
        conds.push('EXISTS (SELECT 1 FROM ks_jobs j WHERE j.inbox_id = i.id AND j.destination = ?)');
        params.push(filter.destination);
      }
      if (filter.before !== undefined) {
        conds.push('i.id < ?');
        params.push(filter.before);
      }
      const where = conds.length ? `WHERE ${conds.join(' AND ')}` : '';
      const cols = INBOX_SUMMARY_COLUMNS.split(', ').map((c) => `i.${c}`).join(', ');
      const sql = `SELECT ${cols} FROM ks_inbox i ${where} ORDER BY i.id DESC LIMIT ?`;
      return q.cached<InboxSummaryRow>(sql).all(...params, clampLimit(filter.limit)).map(toInboxSummary);
    });
  }

  getInbox(id: number): Promise<InboxDetail | null> {
    return this.sync((q) => {
      const row = q.getInbox.get(id);
      if (!row) return null;
      return { ...toInboxSummary(row), dedupKey: row.dedup_key, payload: JSON.parse(row.payload) as unknown };
    });
  }

  // ---------- jobs ----------

  enqueueJobs(jobs: NewJob[], opts: { kv?: KvWrite } = {}): Promise<number[]> {
    if (jobs.length === 0 && !opts.kv) return Promise.resolve([]);
    return this.sync((q) => q.enqueueJobs.immediate(jobs, Date.now(), opts.kv ?? null));
  }

  claimJobs(opts: ClaimOptions): Promise<Job[]> {
    if (opts.limit <= 0) return Promise.resolve([]);
    return this.soft((q) =>
      q.claimJobs
        .all({
          destination: opts.destination,
          now: opts.now,
          limit: opts.limit,
          leaseUntil: opts.now + opts.leaseMs,
          workerId: opts.workerId,
        })
        .sort((a, b) => a.id - b.id)
        .map(toJob),
    );
  }

  completeJobs(workerId: string, outcomes: JobOutcome[]): Promise<void> {
    if (outcomes.length === 0) return Promise.resolve();
    return this.durable((q) => q.completeJobs.immediate(workerId, outcomes, Date.now()));
  }

  renewLeases(workerId: string, ids: number[], leaseUntil: number): Promise<void> {
    if (ids.length === 0) return Promise.resolve();
    return this.soft((q) => {
      q.renewLeases.run(leaseUntil, workerId, JSON.stringify(ids));
    });
  }

  releaseAllClaims(): Promise<{ jobs: number; inbox: number }> {
    return this.sync((q) => ({ jobs: q.releaseJobClaims.run().changes, inbox: q.releaseInboxClaims.run().changes }));
  }

  releaseClaimsOf(workerId: string): Promise<number> {
    return this.sync((q) => q.releaseClaimsOf.run(workerId).changes);
  }

  expediteRetries(destination: string, now: number): Promise<number> {
    return this.sync((q) => q.expediteRetries.run(now, destination, now).changes);
  }

  expediteOne(destination: string, now: number): Promise<number> {
    return this.sync((q) => q.expediteOne.run(now, destination, now).changes);
  }

  getJob(id: number): Promise<Job | null> {
    return this.sync((q) => {
      const row = q.getJob.get(id);
      return row ? toJob(row) : null;
    });
  }

  listJobs(filter: JobFilter): Promise<Job[]> {
    return this.sync((q) => {
      const { conds, params } = jobConditions(filter);
      const where = conds.length ? `WHERE ${conds.join(' AND ')}` : '';
      const sql = `SELECT * FROM ks_jobs ${where} ORDER BY id DESC LIMIT ?`;
      return q.cached<JobRow>(sql).all(...params, clampLimit(filter.limit)).map(toJob);
    });
  }

  requeueJobs(filter: JobFilter & { ids?: number[] }): Promise<number> {
    const target = requeueTarget(filter);
    if (target === null) return Promise.resolve(0);
    return this.sync((q) => {
      const { conds, params } = jobConditions(target);
      conds.push(`state <> 'leased'`);
      if (filter.ids) {
        conds.push('id IN (SELECT value FROM json_each(?))');
        params.push(JSON.stringify(filter.ids));
      }
      const limit = filter.limit !== undefined ? ` ORDER BY id LIMIT ${clampLimit(filter.limit)}` : '';
      // created_at restarts too: a replayed job gets a full max age of retries, not one try.
      const sql = `UPDATE ks_jobs SET state = 'pending', attempts = 0, run_after = ?, created_at = ?, lease_until = NULL, finished_at = NULL
        WHERE id IN (SELECT id FROM ks_jobs WHERE ${conds.join(' AND ')}${limit})
        RETURNING destination, ordering_key`;
      const now = Date.now();
      return q.requeue.immediate(sql, [now, now, ...params]);
    });
  }

  dueDestinations(now: number): Promise<string[]> {
    return this.sync((q) => q.dueDestinations.all(now, now).map((r) => r.dest));
  }

  jobsByInbox(inboxIds: number[]): Promise<Job[]> {
    if (inboxIds.length === 0) return Promise.resolve([]);
    return this.sync((q) => q.jobsByInbox.all(JSON.stringify(inboxIds.slice(0, MAX_IDS))).map(toJob));
  }

  discardJobs(ids: number[], reason: string): Promise<number> {
    if (ids.length === 0) return Promise.resolve(0);
    return this.sync((q) => q.discardJobs.run(reason, Date.now(), JSON.stringify(ids)).changes);
  }

  oldestPendingByDestination(): Promise<Record<string, number>> {
    return this.sync((q) => Object.fromEntries(q.oldestByDestination.all().map((r) => [r.destination, r.at])));
  }

  // ---------- delivery log ----------

  logDeliveries(records: DeliveryRecord[]): Promise<void> {
    if (records.length === 0) return Promise.resolve();
    return this.sync((q) => q.logDeliveries.immediate(records));
  }

  listDeliveries(filter: { destination?: string; subject?: string; limit?: number; since?: number }): Promise<DeliveryRow[]> {
    return this.sync((q) => {
      const conds: string[] = [];
      const params: (string | number)[] = [];
      if (filter.destination !== undefined) {
        conds.push('destination = ?');
        params.push(filter.destination);
      }
      if (filter.subject !== undefined) {
        conds.push('subject = ?');
        params.push(filter.subject);
      }
      if (filter.since !== undefined) {
        conds.push('at >= ?');
        params.push(filter.since);
      }
      const where = conds.length ? `WHERE ${conds.join(' AND ')}` : '';
      const sql = `SELECT * FROM ks_deliveries ${where} ORDER BY id DESC LIMIT ?`;
      return q.cached<DeliveryDbRow>(sql).all(...params, clampLimit(filter.limit)).map(toDelivery);
    });
  }

  deliveriesByJobs(jobIds: number[]): Promise<DeliveryRow[]> {
    if (jobIds.length === 0) return Promise.resolve([]);
    return this.sync((q) => q.deliveriesByJobs.all(JSON.stringify(jobIds.slice(0, MAX_IDS))).map(toDelivery));
  }

  deliveryBuckets(since: number, bucketMs: number): Promise<DeliveryBucket[]> {
    return this.sync((q) =>
      q.deliveryBuckets.all({ since, bucket: Math.max(1, Math.floor(bucketMs)) }).map((r) => ({ destination: r.destination, at: r.b, status: r.status, n: r.n })),
    );
  }

  recentLatencies(destination: string, since: number, limit: number): Promise<number[]> {
    return this.sync((q) => {
      // The first id of the window bounds the (destination, id) range scan.
      const first = q.firstDeliveryAt.get(since)?.id;
      if (first === undefined) return [];
      return q.recentLatencies.all(destination, first, since, clampLimit(limit)).map((r) => r.latency_ms);
    });
  }

  inboxBuckets(since: number, bucketMs: number): Promise<InboxBucket[]> {
    const bucket = Math.max(1, Math.floor(bucketMs));
    return this.sync((q) => {
      const counts = new Map<string, InboxBucket>();
      for (const r of q.inboxBuckets.all({ since, bucket })) {
        const key = `${r.account}\u0000${r.source}\u0000${r.b}`;
        const prev = counts.get(key);
        if (prev) prev.n += r.n;
        else counts.set(key, { account: r.account, source: r.source, at: bucketStart(r.b, bucket), n: r.n });
      }
      return [...counts.values()];
    });
  }

  // ---------- counters, marks ----------

  hitCounter(key: string, at: number, windowMs: number): Promise<number> {
    return this.sync((q) => q.hitCounter.immediate(key, at, windowMs));
  }

  tryMark(key: string, now: number, ttlMs: number): Promise<boolean> {
    return this.sync((q) => q.tryMark.run(key, now + ttlMs, now).changes > 0);
  }

  // ---------- kv ----------

  kvGet(key: string): Promise<string | null> {
    return this.sync((q) => q.kvGet.get(key, Date.now())?.value ?? null);
  }

  kvGetMany(keys: string[]): Promise<Map<string, string>> {
    return this.sync((q) => {
      const now = Date.now();
      const found = new Map<string, string>();
      for (const key of keys) {
        const row = q.kvGet.get(key, now);
        if (row) found.set(key, row.value);
      }
      return found;
    });
  }

  kvSet(key: string, value: string, ttlMs?: number, now?: number): Promise<void> {
    const expiresAt = ttlMs === undefined ? null : (now ?? Date.now()) + ttlMs;
    return this.sync((q) => {
      q.kvSet.run(key, value, expiresAt);
    });
  }

  kvDelete(key: string): Promise<void> {
    return this.sync((q) => {
      q.kvDelete.run(key);
    });
  }

  withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return this.mutex.run(name, fn);
  }

  reserveRate(bucket: string, limit: number, windowMs: number, now: number, recordAt = now): Promise<number> {
    return this.sync((q) => q.reserveRate.immediate(bucket, limit, windowMs, now, recordAt));
  }

  releaseRate(bucket: string, heldAt: number, at: number): Promise<void> {
    return this.sync((q) => {
      q.releaseRate.run(at, bucket, heldAt);
    });
  }

  // ---------- email index ----------

  indexEmail(account: string, email: string, leadId: number, updatedAt: number): Promise<void> {
    return this.sync((q) => {
      q.indexEmail.run(account, normalizeEmail(email), leadId, updatedAt);
    });
  }

  indexEmails(rows: ReadonlyArray<{ account: string; email: string; leadId: number; updatedAt: number }>): Promise<void> {
    if (rows.length === 0) return Promise.resolve();
    return this.sync((q) => q.indexEmails.immediate(rows));
  }

  leadsByEmail(account: string, email: string): Promise<number[]> {
    return this.sync((q) => q.leadsByEmail.all(account, normalizeEmail(email)).map((r) => r.lead_id));
  }

  forgetEmail(account: string, email: string): Promise<void> {
    return this.sync((q) => q.forgetEmail.immediate(account, normalizeEmail(email)));
  }

  scrubPerson(account: string, email: string): Promise<ScrubCounts> {
    const needle = normalizeEmail(email);
    if (needle === '') return Promise.resolve({ events: 0, jobs: 0, deliveries: 0 });
    return this.sync((q) => q.scrubPerson.immediate(account, needle, q.personJobs.all(account, needle).map((r) => r.id)));
  }

  // ---------- housekeeping ----------

  stats(_now: number): Promise<QueueStats> {
    return this.sync((q) => q.stats.deferred());
  }

  async prune(before: number): Promise<number> {
    let removed = 0;
    for (const stmt of this.q.pruneSteps) {
      for (;;) {
        const n = await this.sync(() => stmt.run(before, PRUNE_CHUNK).changes);
        removed += n;
        if (n < PRUNE_CHUNK) break;
        // let intake's group commits in between chunks
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    }
    return removed;
  }
}

/** One chunked delete of prune: removes up to `limit` rows older than `before`. */
interface PruneStep {
  run(before: number, limit: number): { changes: number };
}

/** WHERE terms for JobFilter (limit is applied by the caller). `since` compares createdAt. */
function jobConditions(filter: JobFilter): { conds: string[]; params: (string | number)[] } {
  const conds: string[] = [];
  const params: (string | number)[] = [];
  if (filter.state !== undefined) {
    conds.push('state = ?');
    params.push(filter.state);
  }
  if (filter.destination !== undefined) {
    conds.push('destination = ?');
    params.push(filter.destination);
  }
  if (filter.account !== undefined) {
    conds.push('account = ?');
    params.push(filter.account);
  }
  if (filter.orderingKey !== undefined) {
    conds.push('ordering_key = ?');
    params.push(filter.orderingKey);
  }
  if (filter.withoutInbox) conds.push('inbox_id IS NULL');
  if (filter.since !== undefined) {
    conds.push('created_at >= ?');
    params.push(filter.since);
  }
  return { conds, params };
}

// ---------- prepared statements and transactions ----------

type Params = Record<string, string | number | null>;

/** Fair inbox claims look at this many of the oldest pending events (bounds the claim's cost). */
const FAIR_SCAN = 50_000;

class Prepared {
  private readonly cache = new Map<string, Database.Statement<unknown[], unknown>>();

  readonly ping;
  readonly claimInbox;
  readonly claimInboxExcept;
  readonly claimInboxFair;
  readonly failInbox;
  readonly claimJobs;
  readonly getJob;
  readonly dueDestinations;
  readonly tryMark;
  readonly kvGet;
  readonly kvSet;
  readonly kvDelete;
  readonly indexEmail;
  readonly indexEmails;
  readonly requeueInbox;
  readonly existingInboxKeys;
  readonly leadsByEmail;
  readonly pruneSteps: PruneStep[];
  readonly requeueInboxIds;
  readonly getInbox;
  readonly jobsByInbox;
  readonly discardJobs;
  readonly oldestByDestination;
  readonly deliveriesByJobs;
  readonly deliveryBuckets;
  readonly firstDeliveryAt;
  readonly recentLatencies;
  readonly inboxBuckets;

  readonly insertInboxBatch;
  readonly inboxPayload;
  readonly releaseInbox;
  readonly renewLeases;
  readonly releaseJobClaims;
  readonly releaseInboxClaims;
  readonly releaseClaimsOf;
  readonly expediteRetries;
  readonly expediteOne;
  readonly routeInbox;
  readonly enqueueJobs;
  readonly completeJobs;
  readonly requeue;
  readonly logDeliveries;
  readonly hitCounter;
  readonly reserveRate;
  readonly releaseRate;
  readonly forgetEmail;
  readonly personJobs;
  readonly scrubPerson;
  readonly stats;

  readonly syncNormal;
  readonly syncFull;

  constructor(private readonly db: Database.Database) {
    this.ping = db.prepare<[], { ok: number }>('SELECT 1 AS ok');
    this.syncNormal = db.prepare('PRAGMA synchronous = NORMAL');
    this.syncFull = db.prepare('PRAGMA synchronous = FULL');

    const insertInbox = db.prepare<[string, string, string, string, number]>(
      `INSERT INTO ks_inbox (account, source, kind, dedup_key, received_at)
       VALUES (?, ?, ?, ?, ?) ON CONFLICT (account, dedup_key) DO NOTHING`,
    );
    const insertPayload = db.prepare<[number | bigint, string]>('INSERT INTO ks_inbox_payloads (inbox_id, payload) VALUES (?, ?)');
    this.insertInboxBatch = db.transaction((batch: QueuedInsert[]): InsertResult[] =>
      batch.map(({ rows }) => {
        let inserted = 0;
        for (const r of rows) {
          const row = insertInbox.run(r.account, r.source, r.kind, r.dedupKey, r.receivedAt);
          if (row.changes === 0) continue;
          insertPayload.run(row.lastInsertRowid, r.payload);
          inserted += 1;
        }
        return { inserted, duplicates: rows.length - inserted };
      }),
    );
    this.inboxPayload = db.prepare<[number], { payload: string }>('SELECT payload FROM ks_inbox_payloads WHERE inbox_id = ?');

    // A pending row whose lease is absent or expired; the lease keeps a second router off it.
    this.claimInbox = db.prepare<Params, Omit<InboxRow, 'payload'>>(
      `UPDATE ks_inbox SET lease_until = @leaseUntil, attempts = attempts + 1
       WHERE id IN (
         SELECT id FROM ks_inbox INDEXED BY ks_inbox_pending
         WHERE state = 'pending' AND (lease_until IS NULL OR lease_until < @now)
         ORDER BY id LIMIT @limit)
       RETURNING id, account, source, kind, dedup_key, received_at, state, attempts`,
    );
    this.claimInboxExcept = db.prepare<Params & { exclude: string }, Omit<InboxRow, 'payload'>>(
      `UPDATE ks_inbox SET lease_until = @leaseUntil, attempts = attempts + 1
       WHERE id IN (
         SELECT id FROM ks_inbox INDEXED BY ks_inbox_pending
         WHERE state = 'pending' AND (lease_until IS NULL OR lease_until < @now)
           AND account NOT IN (SELECT value FROM json_each(@exclude))
         ORDER BY id LIMIT @limit)
       RETURNING id, account, source, kind, dedup_key, received_at, state, attempts`,
    );

    this.claimInboxFair = db.prepare<Params & { exclude: string; perAccount: number; scan: number }, Omit<InboxRow, 'payload'>>(
      `UPDATE ks_inbox SET lease_until = @leaseUntil, attempts = attempts + 1
       WHERE id IN (
         SELECT id FROM (
           SELECT id, ROW_NUMBER() OVER (PARTITION BY account ORDER BY id) AS rn FROM (
             SELECT id, account FROM ks_inbox INDEXED BY ks_inbox_pending
             WHERE state = 'pending' AND (lease_until IS NULL OR lease_until < @now)
               AND account NOT IN (SELECT value FROM json_each(@exclude))
             ORDER BY id LIMIT @scan))
         WHERE rn <= @perAccount ORDER BY id LIMIT @limit)
       RETURNING id, account, source, kind, dedup_key, received_at, state, attempts`,
    );
    this.renewLeases = db.prepare<[number, string, string]>(
      `UPDATE ks_jobs SET lease_until = ? WHERE state = 'leased' AND leased_by = ? AND id IN (SELECT value FROM json_each(?))`,
    );
    // An expired lease is claimable: the claim query treats it as such, so no state changes here.
    this.releaseJobClaims = db.prepare<[]>(`UPDATE ks_jobs SET lease_until = 0 WHERE state = 'leased'`);
    // Back to pending (not just an expired lease): a late result of the stopped worker is then ignored.
    this.releaseClaimsOf = db.prepare<[string]>(`UPDATE ks_jobs SET state = 'pending', lease_until = NULL, run_after = 0 WHERE state = 'leased' AND leased_by = ?`);
    this.releaseInboxClaims = db.prepare<[]>(`UPDATE ks_inbox SET lease_until = NULL WHERE state = 'pending' AND lease_until IS NOT NULL`);
    this.expediteRetries = db.prepare<[number, string, number]>(
      `UPDATE ks_jobs SET run_after = ? WHERE destination = ? AND state = 'pending' AND attempts > 0 AND run_after > ?`,
    );
    this.expediteOne = db.prepare<[number, string, number]>(
      `UPDATE ks_jobs SET run_after = ? WHERE id = (
         SELECT id FROM ks_jobs WHERE destination = ? AND state = 'pending' AND is_head = 1 AND run_after > ?
         ORDER BY run_after LIMIT 1)`,
    );
    this.releaseInbox = db.prepare<[string]>(
      `UPDATE ks_inbox SET lease_until = NULL, attempts = MAX(attempts - 1, 0)
       WHERE id IN (SELECT value FROM json_each(?)) AND state = 'pending'`,
    );

    // `failed` rows may be routed too (a replay); `routed` rows are not routed twice.
    const markRouted = db.prepare<[number]>(
      `UPDATE ks_inbox SET state = 'routed', lease_until = NULL WHERE id = ? AND state <> 'routed'`,
    );
    const markRoutedWith = db.prepare<[number | null, string | null, string | null, number]>(
      `UPDATE ks_inbox SET state = 'routed', lease_until = NULL, lead_id = ?, email = ?, note = ? WHERE id = ? AND state <> 'routed'`,
    );
    // A new job is its key's head when the key has no pending/leased job yet.
    const insertJob = db.prepare<Params>(
      `INSERT INTO ks_jobs (account, destination, type, ordering_key, payload, run_after, inbox_id, created_at, is_head)
       VALUES (@account, @destination, @type, @orderingKey, @payload, @runAfter, @inboxId, @now,
         NOT EXISTS (SELECT 1 FROM ks_jobs INDEXED BY ks_jobs_active_key
                     WHERE destination = @destination AND ordering_key = @orderingKey AND state IN ('pending', 'leased')))`,
    );
    const insertJobs = (jobs: NewJob[], now: number): number[] =>
      jobs.map((j) =>
        Number(
          insertJob.run({
            account: j.account,
            destination: j.destination,
            type: j.type,
            orderingKey: j.orderingKey,
            payload: toJson(j.payload),
            runAfter: j.runAfter ?? now,
            inboxId: j.inboxId ?? null,
            now,
          }).lastInsertRowid,
        ),
      );
    const kvUpsert = db.prepare<[string, string]>(
      `INSERT INTO ks_kv (key, value, expires_at) VALUES (?, ?, NULL)
       ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = NULL`,
    );
    this.enqueueJobs = db.transaction((jobs: NewJob[], now: number, kv: KvWrite | null): number[] => {
      const ids = insertJobs(jobs, now);
      if (kv) kvUpsert.run(kv.key, kv.value);
      return ids;
    });
    // Through the (account, dedup_key) unique index: one lookup per key.
    this.existingInboxKeys = db.prepare<[string, string], { dedup_key: string }>(
      'SELECT dedup_key FROM ks_inbox WHERE account = ? AND dedup_key IN (SELECT value FROM json_each(?))',
    );
    this.routeInbox = db.transaction((inboxIds: number[], jobs: NewJob[], now: number, facts: InboxFacts[]): void => {
      const known = new Map(facts.map((f) => [f.id, f]));
      const mark = (id: number): number => {
        const f = known.get(id);
        return f ? markRoutedWith.run(f.leadId ?? null, f.email ?? null, f.note ?? null, id).changes : markRouted.run(id).changes;
      };
      // Another router may have routed an event after our lease expired: its jobs exist already,
      // so the jobs we built from that event are dropped instead of duplicated.
      const lost = new Set(inboxIds.filter((id) => mark(id) === 0));
      insertJobs(
        jobs.filter((j) => j.inboxId === undefined || !lost.has(j.inboxId)),
        now,
      );
    });

    this.requeueInbox = db.prepare<[]>(`UPDATE ks_inbox SET state = 'pending', attempts = 0, lease_until = NULL WHERE state = 'failed'`);
    this.requeueInboxIds = db.prepare<[string]>(
      `UPDATE ks_inbox SET state = 'pending', attempts = 0, lease_until = NULL, note = NULL
       WHERE id IN (SELECT value FROM json_each(?)) AND (state = 'failed' OR (state = 'routed' AND note IS NOT NULL))`,
    );
    this.getInbox = db.prepare<[number], InboxSummaryRow & { dedup_key: string; payload: string }>(
      `SELECT ${INBOX_SUMMARY_COLUMNS.split(', ').map((c) => `i.${c}`).join(', ')}, i.dedup_key, COALESCE(p.payload, 'null') AS payload
       FROM ks_inbox i LEFT JOIN ks_inbox_payloads p ON p.inbox_id = i.id WHERE i.id = ?`,
    );
    this.jobsByInbox = db.prepare<[string], JobRow>(
      'SELECT * FROM ks_jobs WHERE inbox_id IN (SELECT value FROM json_each(?)) ORDER BY id',
    );
    // Dead jobs are no key's head and in no active set: nothing else to maintain.
    this.discardJobs = db.prepare<[string, number, string]>(
      `UPDATE ks_jobs SET state = 'done', discard_reason = ?, finished_at = ?
       WHERE state = 'dead' AND id IN (SELECT value FROM json_each(?))`,
    );
    this.oldestByDestination = db.prepare<[], { destination: string; at: number }>(
      `SELECT destination, MIN(created_at) AS at FROM ks_jobs WHERE state IN ('pending', 'leased') GROUP BY destination`,
    );
    this.deliveriesByJobs = db.prepare<[string], DeliveryDbRow>(
      'SELECT * FROM ks_deliveries WHERE job_id IN (SELECT value FROM json_each(?)) ORDER BY id',
    );
    this.deliveryBuckets = db.prepare<{ since: number; bucket: number }, { destination: string; b: number; status: DeliveryRecord['status']; n: number }>(
      `SELECT destination, (at / CAST(@bucket AS INTEGER)) * CAST(@bucket AS INTEGER) AS b, status, COUNT(*) AS n
       FROM ks_deliveries WHERE at >= @since GROUP BY destination, b, status`,
    );
    this.firstDeliveryAt = db.prepare<[number], { id: number }>('SELECT id FROM ks_deliveries WHERE at >= ? ORDER BY at LIMIT 1');
    this.recentLatencies = db.prepare<[string, number, number, number], { latency_ms: number }>(
      'SELECT latency_ms FROM ks_deliveries WHERE destination = ? AND id >= ? AND at >= ? ORDER BY id DESC LIMIT ?',
    );
    // Routed rows through their received_at index; the few pending and failed ones through theirs.
    this.inboxBuckets = db.prepare<{ since: number; bucket: number }, { account: string; source: string; b: number; n: number }>(
      `SELECT account, source, (received_at / CAST(@bucket AS INTEGER)) * CAST(@bucket AS INTEGER) AS b, COUNT(*) AS n FROM ks_inbox
       WHERE state = 'routed' AND received_at >= @since GROUP BY account, source, b
       UNION ALL
       SELECT account, source, (received_at / CAST(@bucket AS INTEGER)) * CAST(@bucket AS INTEGER) AS b, COUNT(*) AS n FROM ks_inbox
       WHERE state = 'pending' AND received_at >= @since GROUP BY account, source, b
       UNION ALL
       SELECT account, source, (received_at / CAST(@bucket AS INTEGER)) * CAST(@bucket AS INTEGER) AS b, COUNT(*) AS n FROM ks_inbox
       WHERE state = 'failed' AND received_at >= @since GROUP BY account, source, b`,
    );
    this.failInbox = db.prepare<[string, number]>(
      `UPDATE ks_inbox SET state = 'failed', last_error = ?, lease_until = NULL WHERE id = ?`,
    );

    // Head-of-key rule: only a key's head (its earliest pending/leased job) is claimable, and only
    // while no other job of the key is under a live lease (that happens when an earlier job was
    // requeued after a later one started). One statement = one write transaction, taken before
    // the SELECT runs, so two claimers never see the same head.
    this.claimJobs = db.prepare<Params, JobRow>(
      `UPDATE ks_jobs SET state = 'leased', lease_until = @leaseUntil, leased_by = @workerId, attempts = attempts + 1
       WHERE id IN (
         SELECT j.id FROM ks_jobs j INDEXED BY ks_jobs_heads
         WHERE j.destination = @destination
           AND j.is_head = 1 AND j.state IN ('pending', 'leased')
           AND ((j.state = 'pending' AND j.run_after <= @now) OR (j.state = 'leased' AND j.lease_until < @now))
           AND NOT EXISTS (
             SELECT 1 FROM ks_jobs l INDEXED BY ks_jobs_leased_key
             WHERE l.destination = j.destination AND l.ordering_key = j.ordering_key
               AND l.state = 'leased' AND l.lease_until >= @now AND l.id <> j.id)
         ORDER BY j.id
         LIMIT @limit)
       RETURNING *`,
    );

    // Only rows still leased by this worker: a stale worker (lease expired, job re-claimed) is ignored.
    // leased_by is kept after completion as "who ran it last". A retried job stays its key's head;
    // a finished one hands the head to the next job of its key.
    type KeyRow = { destination: string; ordering_key: string };
    const done = db.prepare<[number, number, string], KeyRow>(
      `UPDATE ks_jobs SET state = 'done', lease_until = NULL, finished_at = ?, is_head = 0
       WHERE id = ? AND state = 'leased' AND leased_by = ? RETURNING destination, ordering_key`,
    );
    const retry = db.prepare<[number, string, number, string]>(
      `UPDATE ks_jobs SET state = 'pending', run_after = ?, last_error = ?, lease_until = NULL
       WHERE id = ? AND state = 'leased' AND leased_by = ?`,
    );
    const dead = db.prepare<[string, number, number, string], KeyRow>(
      `UPDATE ks_jobs SET state = 'dead', last_error = ?, lease_until = NULL, finished_at = ?, is_head = 0
       WHERE id = ? AND state = 'leased' AND leased_by = ? RETURNING destination, ordering_key`,
    );
    const promote = db.prepare<[string, string]>(
      `UPDATE ks_jobs SET is_head = 1
       WHERE id = (SELECT MIN(id) FROM ks_jobs INDEXED BY ks_jobs_active_key
                   WHERE destination = ? AND ordering_key = ? AND state IN ('pending', 'leased'))
         AND is_head = 0`,
    );
    const demote = db.prepare<[string, string]>(
      `UPDATE ks_jobs SET is_head = 0
       WHERE destination = ? AND ordering_key = ? AND state IN ('pending', 'leased') AND is_head = 1`,
    );
    this.completeJobs = db.transaction((workerId: string, outcomes: JobOutcome[], now: number): void => {
      for (const o of outcomes) {
        let finished: KeyRow | undefined;
        if (o.outcome === 'done') finished = done.get(now, o.id, workerId);
        else if (o.outcome === 'retry') retry.run(o.runAfter, o.error, o.id, workerId);
        else finished = dead.get(o.error, now, o.id, workerId);
        if (finished) promote.run(finished.destination, finished.ordering_key);
      }
    });
    // A requeued job may be earlier than its key's current head: recompute the head of every key touched.
    this.requeue = db.transaction((sql: string, params: unknown[]): number => {
      const touched = this.cached<KeyRow>(sql).all(...params);
      const keys = new Map(touched.map((k) => [`${k.destination}\u0000${k.ordering_key}`, k]));
      for (const k of keys.values()) {
        demote.run(k.destination, k.ordering_key);
        promote.run(k.destination, k.ordering_key);
      }
      return touched.length;
    });

    this.getJob = db.prepare<[number], JobRow>('SELECT * FROM ks_jobs WHERE id = ?');

    // Walks the distinct destinations of active jobs through the index (a few lookups each)
    // instead of grouping every pending row. Only heads count: a backlog behind a busy or
    // backing-off head is not "due", so the worker does not spin on it.
    this.dueDestinations = db.prepare<[number, number], { dest: string }>(
      `WITH RECURSIVE d(dest) AS (
         SELECT (SELECT MIN(destination) FROM ks_jobs WHERE state IN ('pending', 'leased'))
         UNION ALL
         SELECT (SELECT MIN(destination) FROM ks_jobs WHERE state IN ('pending', 'leased') AND destination > d.dest)
         FROM d WHERE d.dest IS NOT NULL)
       SELECT dest FROM d
       WHERE dest IS NOT NULL
         AND (EXISTS (SELECT 1 FROM ks_jobs INDEXED BY ks_jobs_heads_due
                      WHERE destination = d.dest AND is_head = 1 AND state = 'pending' AND run_after <= ?)
           OR EXISTS (SELECT 1 FROM ks_jobs INDEXED BY ks_jobs_leased_key
                      WHERE destination = d.dest AND state = 'leased' AND is_head = 1 AND lease_until < ?))`,
    );

    const insertDelivery = db.prepare<[number | null, string, string, string, string, string, number | null, number, string | null, number]>(
      `INSERT INTO ks_deliveries (job_id, account, destination, op, subject, status, http_status, latency_ms, error, at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.logDeliveries = db.transaction((records: DeliveryRecord[]): void => {
      for (const r of records) {
        insertDelivery.run(r.jobId, r.account, r.destination, r.op, r.subject, r.status, r.httpStatus, r.latencyMs, r.error, r.at);
      }
    });

    const counterInsert = db.prepare<[string, number]>('INSERT INTO ks_counters (key, at) VALUES (?, ?)');
    const counterTrim = db.prepare<[string, number]>('DELETE FROM ks_counters WHERE key = ? AND at < ?');
    const counterCount = db.prepare<[string, number, number], { n: number }>(
      'SELECT COUNT(*) AS n FROM ks_counters WHERE key = ? AND at >= ? AND at <= ?',
    );
    this.hitCounter = db.transaction((key: string, at: number, windowMs: number): number => {
      counterInsert.run(key, at);
      counterTrim.run(key, at - windowMs);
      return counterCount.get(key, at - windowMs, at)?.n ?? 0;
    });

    // The WHERE on DO UPDATE makes an unexpired mark a no-op, so changes() says who set it.
    this.tryMark = db.prepare<[string, number, number]>(
      `INSERT INTO ks_marks (key, until) VALUES (?, ?)
       ON CONFLICT (key) DO UPDATE SET until = excluded.until WHERE ks_marks.until <= ?`,
    );

    this.kvGet = db.prepare<[string, number], { value: string }>(
      'SELECT value FROM ks_kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)',
    );
    this.kvSet = db.prepare<[string, string, number | null]>(
      `INSERT INTO ks_kv (key, value, expires_at) VALUES (?, ?, ?)
       ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at`,
    );
    this.kvDelete = db.prepare<[string]>('DELETE FROM ks_kv WHERE key = ?');

    const rateTrim = db.prepare<[string, number]>('DELETE FROM ks_rate WHERE bucket = ? AND at <= ?');
    const rateCount = db.prepare<[string, number], { n: number }>('SELECT COUNT(*) AS n FROM ks_rate WHERE bucket = ? AND at > ?');
    const rateNth = db.prepare<[string, number, number], { at: number }>(
      'SELECT at FROM ks_rate WHERE bucket = ? AND at > ? ORDER BY at LIMIT 1 OFFSET ?',
    );
    const rateInsert = db.prepare<[string, number]>('INSERT INTO ks_rate (bucket, at) VALUES (?, ?)');
    this.releaseRate = db.prepare<[number, string, number]>(
      'UPDATE ks_rate SET at = ? WHERE rowid = (SELECT rowid FROM ks_rate WHERE bucket = ? AND at = ? LIMIT 1)',
    );
    this.reserveRate = db.transaction((bucket: string, limit: number, windowMs: number, now: number, recordAt: number): number => {
      const from = now - windowMs;
      rateTrim.run(bucket, from);
      const count = rateCount.get(bucket, from)?.n ?? 0;
      if (count < limit) {
        rateInsert.run(bucket, recordAt);
        return 0;
      }
      // A slot frees when the (count - limit + 1)-th oldest send leaves the window.
      const nth = rateNth.get(bucket, from, count - limit);
      return nth ? Math.max(1, nth.at + windowMs - now) : windowMs;
    });

    this.indexEmail = db.prepare<[string, string, number, number]>(
      `INSERT INTO ks_email_leads (account, email, lead_id, updated_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (account, email, lead_id) DO UPDATE SET updated_at = max(updated_at, excluded.updated_at)`,
    );
    const indexOne = this.indexEmail;
    // One transaction, one fsync, for a routed batch (one commit per lead cost ~5% of a burst).
    this.indexEmails = db.transaction((rows: ReadonlyArray<{ account: string; email: string; leadId: number; updatedAt: number }>) => {
      for (const r of rows) indexOne.run(r.account, normalizeEmail(r.email), r.leadId, r.updatedAt);
    });
    this.leadsByEmail = db.prepare<[string, string], { lead_id: number }>(
      'SELECT lead_id FROM ks_email_leads WHERE account = ? AND email = ? ORDER BY updated_at DESC, lead_id DESC',
    );
    const forgetIndex = db.prepare<[string, string]>('DELETE FROM ks_email_leads WHERE account = ? AND email = ?');
    // Counter and mark keys are free-form strings built by the rules: any key containing the address goes.
    const forgetCounters = db.prepare<[string]>('DELETE FROM ks_counters WHERE instr(lower(key), ?) > 0');
    const forgetMarks = db.prepare<[string]>('DELETE FROM ks_marks WHERE instr(lower(key), ?) > 0');
    this.forgetEmail = db.transaction((account: string, email: string): void => {
      forgetIndex.run(account, email);
      if (email === '') return; // an empty needle would match every key
      forgetCounters.run(email);
      forgetMarks.run(email);
    });

    // GDPR: our own history about one person (Store.scrubPerson). Finished jobs are found by their
    // payload text, a scan: it runs before the write transaction (WAL readers do not block intake),
    // and the deletes re-check the state, so a job replayed in between is left alone.
    this.personJobs = db.prepare<[string, string], { id: number }>(`SELECT id FROM ks_jobs WHERE account = ? AND state IN ('done', 'dead') AND instr(lower(payload), ?) > 0`);
    const blankPayloads = db.prepare<[string, string, string]>(
      `UPDATE ks_inbox_payloads SET payload = ? WHERE inbox_id IN (SELECT id FROM ks_inbox WHERE email = ? AND account = ? AND state = 'routed')`,
    );
    const blankEvents = db.prepare<[string, string]>(`UPDATE ks_inbox SET email = NULL, note = NULL WHERE email = ? AND account = ? AND state = 'routed'`);
    const dropJob = db.prepare<[number]>(`DELETE FROM ks_jobs WHERE id = ? AND state IN ('done', 'dead')`);
    const dropJobDeliveries = db.prepare<[number]>('DELETE FROM ks_deliveries WHERE job_id = ?');
    const dropSubjectDeliveries = db.prepare<[string, string]>('DELETE FROM ks_deliveries WHERE subject = ? AND account = ?');
    this.scrubPerson = db.transaction((account: string, email: string, jobIds: readonly number[]): ScrubCounts => {
      blankPayloads.run(ERASED_PAYLOAD, email, account);
      const events = blankEvents.run(email, account).changes;
      let jobs = 0;
      let deliveries = 0;
      for (const id of jobIds) {
        if (dropJob.run(id).changes === 0) continue;
        jobs++;
        deliveries += dropJobDeliveries.run(id).changes;
      }
      deliveries += dropSubjectDeliveries.run(email, account).changes;
      return { events, jobs, deliveries };
    });

    const inboxPending = db.prepare<[], { n: number }>(`SELECT COUNT(*) AS n FROM ks_inbox WHERE state = 'pending'`);
    const inboxFailed = db.prepare<[], { n: number }>(`SELECT COUNT(*) AS n FROM ks_inbox WHERE state = 'failed'`);
    const jobCounts = db.prepare<[], { state: JobState; destination: string; n: number }>(
      'SELECT state, destination, COUNT(*) AS n FROM ks_jobs GROUP BY state, destination',
    );
    const oldest = db.prepare<[], { at: number | null }>(
      `SELECT MIN(created_at) AS at FROM ks_jobs WHERE state IN ('pending', 'leased')`,
    );
    this.stats = db.transaction((): QueueStats => {
      const stats: QueueStats = {
        inboxPending: inboxPending.get()?.n ?? 0,
        inboxFailed: inboxFailed.get()?.n ?? 0,
        jobs: { pending: 0, leased: 0, done: 0, dead: 0 },
        depthByDestination: {},
        deadByDestination: {},
        oldestPendingAt: oldest.get()?.at ?? null,
      };
      for (const r of jobCounts.all()) {
        stats.jobs[r.state] += r.n;
        if (r.state === 'pending' || r.state === 'leased') {
          stats.depthByDestination[r.destination] = (stats.depthByDestination[r.destination] ?? 0) + r.n;
        } else if (r.state === 'dead') {
          stats.deadByDestination[r.destination] = r.n;
        }
      }
      return stats;
    });

    // Each step deletes at most `chunk` rows older than `before`; besides the documented three
    // (done jobs, routed inbox rows, delivery logs) it drops expired counter/rate/mark/kv rows.
    const step = (sql: string): PruneStep => db.prepare<[number, number]>(sql);
    // An inbox row and its payload go together (the payload table has no cascading foreign key).
    const routedBefore = db.prepare<[number, number], { id: number }>(`SELECT id FROM ks_inbox WHERE state = 'routed' AND received_at < ? ORDER BY id LIMIT ?`);
    const deletePayloads = db.prepare<[string]>('DELETE FROM ks_inbox_payloads WHERE inbox_id IN (SELECT value FROM json_each(?))');
    const deleteInbox = db.prepare<[string]>('DELETE FROM ks_inbox WHERE id IN (SELECT value FROM json_each(?))');
    const pruneInbox = db.transaction((before: number, limit: number) => {
      const ids = JSON.stringify(routedBefore.all(before, limit).map((r) => r.id));
      deletePayloads.run(ids);
      return deleteInbox.run(ids);
    });
    this.pruneSteps = [
      step(`DELETE FROM ks_jobs WHERE id IN (SELECT id FROM ks_jobs WHERE state = 'done' AND finished_at < ? LIMIT ?)`),
      { run: (before: number, limit: number) => pruneInbox.immediate(before, limit) },
      step('DELETE FROM ks_deliveries WHERE id IN (SELECT id FROM ks_deliveries WHERE at < ? LIMIT ?)'),
      step('DELETE FROM ks_counters WHERE rowid IN (SELECT rowid FROM ks_counters WHERE at < ? LIMIT ?)'),
      step('DELETE FROM ks_rate WHERE rowid IN (SELECT rowid FROM ks_rate WHERE at < ? LIMIT ?)'),
      step('DELETE FROM ks_marks WHERE rowid IN (SELECT rowid FROM ks_marks WHERE until < ? LIMIT ?)'),
      step('DELETE FROM ks_kv WHERE rowid IN (SELECT rowid FROM ks_kv WHERE expires_at < ? LIMIT ?)'),
    ];
  }

  /** Statements whose SQL depends on which filters are set: prepared once per shape. */
  cached<R = unknown>(sql: string): Database.Statement<unknown[], R> {
    let stmt = this.cache.get(sql);
    if (!stmt) {
      stmt = this.db.prepare<unknown[], unknown>(sql);
      this.cache.set(sql, stmt);
    }
    return stmt as Database.Statement<unknown[], R>;
  }
}
