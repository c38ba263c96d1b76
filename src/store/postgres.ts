/**
 * PostgreSQL implementation of Store (pg.Pool), for deployments with several processes.
 *
 * Concurrency model: every statement runs under READ COMMITTED. Cross-process exclusivity comes from
 * row locks (claimJobs / claimInbox use FOR UPDATE SKIP LOCKED plus a lease column), unique indexes
 * (inbox dedup, marks) and advisory locks (migrations, withLock, per-bucket rate limits, per-key
 * counters). Multi-row writes use `unnest` of array parameters: one statement, one round trip,
 * whatever the number of rows.
 */
import pg from 'pg';
import { StoreUnavailableError, errorCode, errorMessage, isStoreUnavailable } from './errors.js';
import { postgresMigrations } from './migrations/postgres.js';
import { GroupCommit } from './group-commit.js';
import { clampLimit, INBOX_SUMMARY_COLUMNS, MAX_IDS, NamedMutex, requeueTarget, toDelivery, toInboxEvent, toInboxSummary, toJob, toJson, type DeliveryDbRow, type InboxRow, type InboxSummaryRow, type JobRow, type QueuedInsert } from './rows.js';
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

export interface PostgresStoreOptions {
  /** Connections for queries (default 10). withLock uses a separate, smaller pool. */
  poolSize?: number;
  /** How long to wait for a connection before failing with STORE_UNAVAILABLE (default 5 s). */
  connectTimeoutMs?: number;
}

/** First key of the two-key advisory locks, so our locks cannot collide with another app's. */
const LOCK_NS = { migrate: 0x6b73_0001, withLock: 0x6b73_0002, rate: 0x6b73_0003, counter: 0x6b73_0004, jobKey: 0x6b73_0005 } as const;

const SCHEMA_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

export async function openPostgresStore(url: string, opts: PostgresStoreOptions = {}): Promise<Store> {
  const { connectionString, schema } = parseUrl(url);
  const poolSize = Math.max(1, opts.poolSize ?? 10);
  const config: pg.PoolConfig = {
    connectionString,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 5_000,
    idleTimeoutMillis: 30_000,
    // Every ks_ table is found through search_path, so `?schema=x` needs no other change.
    options: schema ? `-c search_path=${schema}` : undefined,
    types: int8AsNumber,
  };
  const pool = new pg.Pool({ ...config, max: poolSize });
  // A lock holder keeps its connection for the whole critical section; a separate pool means
  // waiters for a lock can never take every connection the holder needs to finish its work.
  const lockPool = new pg.Pool({ ...config, max: Math.max(2, Math.ceil(poolSize / 2)) });
  // An idle connection that dies (server restart, network) must not crash the process: the pool
  // drops it and the next query reconnects or fails with STORE_UNAVAILABLE.
  const ignore = (): void => {};
  pool.on('error', ignore);
  lockPool.on('error', ignore);
  return new PostgresStore(pool, lockPool, schema);
}

/** Strips our own `schema` parameter from the URL (pg would pass it on as a connection option). */
function parseUrl(url: string): { connectionString: string; schema: string | null } {
  const parsed = new URL(url);
  const schema = parsed.searchParams.get('schema');
  parsed.searchParams.delete('schema');
  if (schema !== null && !SCHEMA_NAME.test(schema)) {
    throw new Error(`invalid schema name "${schema}" in the database URL: use letters, digits and _`);
  }
  return { connectionString: parsed.toString(), schema: schema || null };
}

/** BIGINT (ids, ms timestamps, count(*)) as JS numbers: all of them fit in a double. */
const int8AsNumber: pg.CustomTypesConfig = {
  getTypeParser: (id, format) =>
    id === pg.types.builtins.INT8 && format !== 'binary' ? (v: string) => Number(v) : pg.types.getTypeParser(id, format),
};

// ---------- errors ----------

const NETWORK_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNABORTED',
]);
/** admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections, read-only transaction (failover). */
const SERVER_CODES = new Set(['57P01', '57P02', '57P03', '53300', '25006']);
const CONNECTION_MESSAGES = /Connection terminated|timeout exceeded when trying to connect|connection error|Connection timeout/i;

function isConnectionError(err: unknown): boolean {
  const code = errorCode(err);
  if (code !== undefined && (NETWORK_CODES.has(code) || SERVER_CODES.has(code) || code.startsWith('08'))) return true;
  return CONNECTION_MESSAGES.test(errorMessage(err));
}

function mapPgError(err: unknown): unknown {
  if (isStoreUnavailable(err) || !isConnectionError(err)) return err;
  return new StoreUnavailableError(`PostgreSQL store unavailable: ${errorMessage(err)}`, { cause: err });
}

// ---------- rows (type aliases: pg wants an index-signature-compatible row type) ----------

const JOB_COLUMNS =
  'id, account, destination, type, ordering_key, payload, run_after, inbox_id, state, attempts, created_at, lease_until, leased_by, last_error, discard_reason';

/** Collects `$n` placeholders and their values for queries whose shape depends on filters. */
class SqlParams {
  readonly values: unknown[] = [];
  add(value: unknown): string {
    this.values.push(value);
    return `$${this.values.length}`;
  }
}

function jobConditions(filter: JobFilter, p: SqlParams): string[] {
  const conds: string[] = [];
  if (filter.state !== undefined) conds.push(`state = ${p.add(filter.state)}`);
  if (filter.destination !== undefined) conds.push(`destination = ${p.add(filter.destination)}`);
  if (filter.account !== undefined) conds.push(`account = ${p.add(filter.account)}`);
  if (filter.orderingKey !== undefined) conds.push(`ordering_key = ${p.add(filter.orderingKey)}`);
  if (filter.withoutInbox) conds.push('inbox_id IS NULL');
  if (filter.since !== undefined) conds.push(`created_at >= ${p.add(filter.since)}`);
  return conds;
}

// ---------- group commit ----------

// ---------- the store ----------

class PostgresStore implements Store {
  readonly kind = 'postgres' as const;
  private readonly localLocks = new NamedMutex();
  /** Advisory lock keys are database-wide: the schema keeps two installations in one database apart. */
  private readonly lockScope: string;
  private closed = false;
  private closing = false;

  private readonly group = new GroupCommit((batch) => this.writeGroup(batch));
  private readonly writing = new Set<Promise<void>>();

  constructor(
    private readonly pool: pg.Pool,
    private readonly lockPool: pg.Pool,
    private readonly schema: string | null,
  ) {
    this.lockScope = schema ?? '';
  }

  // ---------- plumbing ----------

  private async query<R extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<pg.QueryResult<R>> {
    if (this.closed) throw new Error('store is closed');
    try {
      return await this.pool.query<R>(text, values);
    } catch (err) {
      throw mapPgError(err);
    }
  }

  /**
   * A checked-out client has no 'error' listener of the pool's: without ours, a connection dropped
   * while we hold the client (e.g. during withLock's critical section) would crash the process.
   */
  private async checkout(pool: pg.Pool): Promise<{ client: pg.PoolClient; release: (broken: boolean) => void }> {
    if (this.closed) throw new Error('store is closed');
    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch (err) {
      throw mapPgError(err);
    }
    let lost = false;
    const onError = (): void => {
      lost = true;
    };
    client.on('error', onError);
    return {
      client,
      release: (broken) => {
        client.removeListener('error', onError);
        client.release(broken || lost);
      },
    };
  }

  /** BEGIN ... COMMIT on one pooled connection; rolls back (or discards a broken connection) on error. */
  private async tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const { client, release } = await this.checkout(this.pool);
    let broken = false;
    try {
      await client.query('BEGIN');
      const result = await fn(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      broken = isConnectionError(err);
      if (!broken) await client.query('ROLLBACK').catch(() => (broken = true));
      throw mapPgError(err);
    } finally {
      release(broken);
    }
  }

  async migrate(): Promise<void> {
    const { client, release } = await this.checkout(this.pool);
    let broken = false;
    try {
      await client.query('SELECT pg_advisory_lock($1, hashtext($2))', [LOCK_NS.migrate, this.lockScope]);
      try {
        if (this.schema) await client.query(`CREATE SCHEMA IF NOT EXISTS "${this.schema}"`);
        await client.query(
          'CREATE TABLE IF NOT EXISTS ks_schema_migrations (id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)',
        );
        const applied = new Set((await client.query<{ id: number }>('SELECT id FROM ks_schema_migrations')).rows.map((r) => r.id));
        for (const m of postgresMigrations) {
          if (applied.has(m.id)) continue;
          await client.query('BEGIN');
          try {
            await client.query(m.sql);
            await client.query('INSERT INTO ks_schema_migrations (id, name, applied_at) VALUES ($1, $2, $3)', [m.id, m.name, Date.now()]);
            await client.query('COMMIT');
          } catch (err) {
            await client.query('ROLLBACK').catch(() => undefined);
            throw err;
          }
        }
      } finally {
        await client.query('SELECT pg_advisory_unlock($1, hashtext($2))', [LOCK_NS.migrate, this.lockScope]);
      }
    } catch (err) {
      broken = isConnectionError(err);
      throw mapPgError(err);
    } finally {
      release(broken);
    }
  }

  async close(): Promise<void> {
    if (this.closed || this.closing) return;
    // New inserts are refused from here on; the ones already queued are committed first.
    this.closing = true;
    this.group.flush();
    await Promise.allSettled([...this.writing]);
    this.closed = true;
    await Promise.all([this.pool.end(), this.lockPool.end()]);
  }

  async ping(): Promise<void> {
    await this.query('SELECT 1');
  }

  // ---------- inbox ----------

  insertInbox(events: NewInboxEvent[]): Promise<InsertResult> {
    if (this.closed || this.closing) return Promise.reject(new Error('store is closed'));
    return this.group.add(events);
  }

  /** Sends the queued calls as one INSERT; several flushes may be in flight on different connections. */
  private writeGroup(batch: QueuedInsert[]): void {
    const done: Promise<void> = this.writeInboxBatch(batch).finally(() => this.writing.delete(done));
    this.writing.add(done);
  }

  private async writeInboxBatch(batch: QueuedInsert[]): Promise<void> {
    try {
      const results = await this.insertInboxRows(batch);
      batch.forEach((item, i) => item.resolve(results[i] ?? { inserted: 0, duplicates: 0 }));
    } catch (err) {
      if (batch.length === 1 || isStoreUnavailable(err)) {
        for (const item of batch) item.reject(err);
        return;
      }
      // One caller's rows broke the statement (e.g. a NUL byte in a key): retry callers one by one,
      // in order, so only the culprit fails and a key shared by two callers stays the first one's.
      for (const item of batch) {
        try {
          const [result] = await this.insertInboxRows([item]);
          item.resolve(result ?? { inserted: 0, duplicates: 0 });
        } catch (single) {
          item.reject(single);
        }
      }
    }
  }

  /**
   * One INSERT ... ON CONFLICT DO NOTHING for every row of the batch (autocommit: durable when it
   * returns). A key repeated inside the batch is sent once, owned by its first caller; RETURNING
   * says which keys were new, so each caller gets its own counts.
   */
  private async insertInboxRows(batch: QueuedInsert[]): Promise<InsertResult[]> {
    const results = batch.map(({ rows }) => ({ inserted: 0, duplicates: rows.length }));
    const owner = new Map<string, number>();
    const cols = { account: [] as string[], source: [] as string[], kind: [] as string[], dedupKey: [] as string[], payload: [] as string[], receivedAt: [] as number[] };
    batch.forEach(({ rows }, i) => {
      for (const r of rows) {
        const key = `${r.account}\u0000${r.dedupKey}`;
        if (owner.has(key)) continue;
        owner.set(key, i);
        cols.account.push(r.account);
        cols.source.push(r.source);
        cols.kind.push(r.kind);
        cols.dedupKey.push(r.dedupKey);
        cols.payload.push(r.payload);
        cols.receivedAt.push(r.receivedAt);
      }
    });
    const { rows } = await this.query<{ account: string; dedup_key: string }>(
      `WITH input AS (
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[])
           AS t(account, source, kind, dedup_key, payload, received_at)),
       inserted AS (
         INSERT INTO ks_inbox (account, source, kind, dedup_key, received_at)
         SELECT account, source, kind, dedup_key, received_at FROM input
         ON CONFLICT (account, dedup_key) DO NOTHING
         RETURNING id, account, dedup_key),
       payloads AS (
         INSERT INTO ks_inbox_payloads (inbox_id, payload)
         SELECT inserted.id, input.payload FROM inserted JOIN input USING (account, dedup_key))
       SELECT account, dedup_key FROM inserted`,
      [cols.account, cols.source, cols.kind, cols.dedupKey, cols.payload, cols.receivedAt],
    );
    for (const r of rows) {
      const result = results[owner.get(`${r.account}\u0000${r.dedup_key}`) ?? -1];
      if (!result) continue;
      result.inserted++;
      result.duplicates--;
    }
    return results;
  }

  async claimInbox(limit: number, leaseMs: number, now: number, excludeAccounts: readonly string[] = [], perAccount?: number): Promise<InboxEvent[]> {
    if (limit <= 0) return [];
    if (perAccount !== undefined) {
      // Fair claims rank per account (a window function, which FOR UPDATE cannot take): routers
      // claim under their store-wide lock, and the UPDATE re-checks each row's lease.
      const { rows } = await this.query<InboxRow>(
        `WITH cand AS (SELECT id, account FROM ks_inbox
                       WHERE state = 'pending' AND (lease_until IS NULL OR lease_until < $2)
                         AND NOT (account = ANY($4::text[]))
                       ORDER BY id LIMIT $6),
              picked AS (SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY account ORDER BY id) AS rn FROM cand) r
                         WHERE rn <= $5 ORDER BY id LIMIT $1),
              claimed AS (UPDATE ks_inbox i SET lease_until = $3, attempts = i.attempts + 1
                          FROM picked WHERE i.id = picked.id AND i.state = 'pending' AND (i.lease_until IS NULL OR i.lease_until < $2)
                          RETURNING i.id, i.account, i.source, i.kind, i.dedup_key, i.received_at, i.state, i.attempts)
         SELECT claimed.*, p.payload FROM claimed JOIN ks_inbox_payloads p ON p.inbox_id = claimed.id`,
        [limit, now, now + leaseMs, excludeAccounts, perAccount, 50_000],
      );
      return rows.sort((a, b) => a.id - b.id).map(toInboxEvent);
    }
    // SKIP LOCKED: a row another router is claiming right now is left to it; the lease keeps it
    // off everyone else's claims after that commit.
    const { rows } = await this.query<InboxRow>(
      `WITH claimed AS (
         UPDATE ks_inbox i SET lease_until = $3, attempts = i.attempts + 1
         FROM (SELECT id FROM ks_inbox
               WHERE state = 'pending' AND (lease_until IS NULL OR lease_until < $2)
                 AND NOT (account = ANY($4::text[]))
               ORDER BY id LIMIT $1
               FOR UPDATE SKIP LOCKED) c
         WHERE i.id = c.id
         RETURNING i.id, i.account, i.source, i.kind, i.dedup_key, i.received_at, i.state, i.attempts)
       SELECT claimed.*, p.payload FROM claimed JOIN ks_inbox_payloads p ON p.inbox_id = claimed.id`,
      [limit, now, now + leaseMs, excludeAccounts],
    );
    return rows.sort((a, b) => a.id - b.id).map(toInboxEvent);
  }

  async renewLeases(workerId: string, ids: number[], leaseUntil: number): Promise<void> {
    if (ids.length === 0) return;
    await this.query(
      `UPDATE ks_jobs SET lease_until = $1 WHERE state = 'leased' AND leased_by = $2 AND id = ANY($3::bigint[])`,
      [leaseUntil, workerId, ids],
    );
  }

  async releaseAllClaims(): Promise<{ jobs: number; inbox: number }> {
    const jobs = await this.query(`UPDATE ks_jobs SET lease_until = 0 WHERE state = 'leased'`);
    const inbox = await this.query(`UPDATE ks_inbox SET lease_until = NULL WHERE state = 'pending' AND lease_until IS NOT NULL`);
    return { jobs: jobs.rowCount ?? 0, inbox: inbox.rowCount ?? 0 };
  }

  async releaseClaimsOf(workerId: string): Promise<number> {
    // Back to pending (not just an expired lease): a late result of the stopped worker is then ignored.
    const r = await this.query(`UPDATE ks_jobs SET state = 'pending', lease_until = NULL, run_after = 0 WHERE state = 'leased' AND leased_by = $1`, [workerId]);
    return r.rowCount ?? 0;
  }

  async expediteRetries(destination: string, now: number): Promise<number> {
    const r = await this.query(
      `UPDATE ks_jobs SET run_after = $1 WHERE destination = $2 AND state = 'pending' AND attempts > 0 AND run_after > $1`,
      [now, destination],
    );
    return r.rowCount ?? 0;
  }

  async expediteOne(destination: string, now: number): Promise<number> {
    const r = await this.query(
      `UPDATE ks_jobs SET run_after = $1 WHERE id = (
         SELECT id FROM ks_jobs WHERE destination = $2 AND state = 'pending' AND is_head AND run_after > $1
         ORDER BY run_after LIMIT 1)`,
      [now, destination],
    );
    return r.rowCount ?? 0;
  }

  async releaseInbox(ids: number[]): Promise<void> {
    if (ids.length === 0) return;
    await this.query(
      `UPDATE ks_inbox SET lease_until = NULL, attempts = GREATEST(attempts - 1, 0)
       WHERE id = ANY($1::bigint[]) AND state = 'pending'`,
      [ids],
    );
  }

  async routeInbox(inboxIds: number[], jobs: NewJob[], facts: InboxFacts[] = []): Promise<void> {
    await this.tx(async (c) => {
      // `failed` rows may be routed too (a replay); `routed` ones are not routed twice. If another
      // router routed an event after our lease expired, the jobs we built from it are dropped.
      // Facts ride along in the same statement (a LEFT JOIN: events without facts keep NULLs).
      const known = new Map(facts.map((f) => [f.id, f]));
      const { rows } = await c.query<{ id: number }>(
        `UPDATE ks_inbox i SET state = 'routed', lease_until = NULL, lead_id = f.lead_id, email = f.email, note = f.note
         FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[]) AS f(id, lead_id, email, note)
         WHERE i.id = f.id AND i.state <> 'routed' RETURNING i.id`,
        [inboxIds, inboxIds.map((id) => known.get(id)?.leadId ?? null), inboxIds.map((id) => known.get(id)?.email ?? null), inboxIds.map((id) => known.get(id)?.note ?? null)],
      );
      const routedNow = new Set(rows.map((r) => r.id));
      const lost = new Set(inboxIds.filter((id) => !routedNow.has(id)));
      await this.insertJobs(
        c,
        jobs.filter((j) => j.inboxId === undefined || !lost.has(j.inboxId)),
        Date.now(),
      );
    });
  }

  async failInbox(id: number, reason: string): Promise<void> {
    await this.query(`UPDATE ks_inbox SET state = 'failed', last_error = $2, lease_until = NULL WHERE id = $1`, [id, reason]);
  }

  async existingInboxKeys(account: string, keys: readonly string[]): Promise<Set<string>> {
    if (keys.length === 0) return new Set();
    const { rows } = await this.query<{ dedup_key: string }>(
      'SELECT dedup_key FROM ks_inbox WHERE account = $1 AND dedup_key = ANY($2::text[])',
      [account, [...new Set(keys)]],
    );
    return new Set(rows.map((r) => r.dedup_key));
  }

  async requeueInbox(): Promise<number> {
    const r = await this.query(`UPDATE ks_inbox SET state = 'pending', attempts = 0, lease_until = NULL WHERE state = 'failed'`);
    return r.rowCount ?? 0;
  }

  async requeueInboxIds(ids: number[]): Promise<number> {
    if (ids.length === 0) return 0;
    const r = await this.query(
      `UPDATE ks_inbox SET state = 'pending', attempts = 0, lease_until = NULL, note = NULL
       WHERE id = ANY($1::bigint[]) AND (state = 'failed' OR (state = 'routed' AND note IS NOT NULL))`,
      [ids.slice(0, MAX_IDS)],
    );
    return r.rowCount ?? 0;
  }

  async listInbox(filter: InboxFilter): Promise<InboxSummary[]> {
    const p = new SqlParams();
    const conds: string[] = [];
    const eq = (col: string, v: string | number | undefined) => {
      if (v !== undefined) conds.push(`i.${col} = ${p.add(v)}`);
    };
    eq('account', filter.account);
    eq('source', filter.source);
    eq('kind', filter.kind);
    eq('state', filter.state);
    eq('email', filter.email);
    eq('lead_id', filter.leadId);
    if (filter.unrouted) {
      // Two small partial indexes (failed rows, noted rows) instead of a scan of the log.
      conds.push(`i.id IN (SELECT id FROM ks_inbox WHERE state = 'failed' UNION ALL SELECT id FROM ks_inbox WHERE note IS NOT NULL)`);
    }
    if (filter.jobState !== undefined) {
      const dest = filter.destination !== undefined ? ` AND destination = ${p.add(filter.destination)}` : '';
      conds.push(`i.id IN (SELECT inbox_id FROM ks_jobs WHERE state = ${p.add(filter.jobState)}${dest} AND inbox_id IS NOT NULL)`);
    } else if (filter.destination !== undefined) {
      conds.push(`EXISTS (SELECT 1 FROM ks_jobs j WHERE j.inbox_id = i.id AND j.destination = ${p.add(filter.destination)})`);
    }
    if (filter.before !== undefined) conds.push(`i.id < ${p.add(filter.before)}`);
    const where = conds.length ? `WHERE ${conds.join(' AND ')}` : '';
    const cols = INBOX_SUMMARY_COLUMNS.split(', ').map((c) => `i.${c}`).join(', ');
    const { rows } = await this.query<InboxSummaryRow>(
      `SELECT ${cols} FROM ks_inbox i ${where} ORDER BY i.id DESC LIMIT ${p.add(clampLimit(filter.limit))}`,
      p.values,
    );
    return rows.map(toInboxSummary);
  }

  async getInbox(id: number): Promise<InboxDetail | null> {
    const cols = INBOX_SUMMARY_COLUMNS.split(', ').map((c) => `i.${c}`).join(', ');
    const { rows } = await this.query<InboxSummaryRow & { dedup_key: string; payload: string }>(
      `SELECT ${cols}, i.dedup_key, COALESCE(p.payload, 'null') AS payload
       FROM ks_inbox i LEFT JOIN ks_inbox_payloads p ON p.inbox_id = i.id WHERE i.id = $1`,
      [id],
    );
    const row = rows[0];
    return row ? { ...toInboxSummary(row), dedupKey: row.dedup_key, payload: JSON.parse(row.payload) as unknown } : null;
  }

  // ---------- jobs ----------

  async enqueueJobs(jobs: NewJob[], opts: { kv?: KvWrite } = {}): Promise<number[]> {
    const kv = opts.kv;
    if (jobs.length === 0 && !kv) return [];
    return this.tx(async (c) => {
      const ids = await this.insertJobs(c, jobs, Date.now());
      if (kv) {
        await c.query(
          `INSERT INTO ks_kv (key, value, expires_at) VALUES ($1, $2, NULL)
           ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = NULL`,
          [kv.key, kv.value],
        );
      }
      return ids;
    });
  }

  /**
   * Per-key transaction locks, taken before any change to the set of pending/leased jobs of a key
   * (insert, finish, requeue) so the is_head flags stay exact: without them a job inserted while
   * its key's last job finishes could see that job as still active (not head) while the finishing
   * transaction sees no successor to promote, and the new job would wait forever.
   * Claims change no set membership and take no such lock. Locks are taken in hash order, so two
   * transactions locking several keys cannot deadlock.
   */
  private async lockJobKeys(c: pg.PoolClient, keys: { destinations: string[]; orderingKeys: string[] } | { jobIds: number[] }): Promise<void> {
    const source =
      'jobIds' in keys
        ? { sql: 'SELECT destination AS d, ordering_key AS k FROM ks_jobs WHERE id = ANY($3::bigint[])', values: [keys.jobIds] }
        : { sql: 'SELECT * FROM unnest($3::text[], $4::text[]) AS u(d, k)', values: [keys.destinations, keys.orderingKeys] };
    await c.query(
      `SELECT pg_advisory_xact_lock($1, h)
       FROM (SELECT DISTINCT hashtext($2 || chr(31) || d || chr(31) || k) AS h FROM (${source.sql}) s ORDER BY h) l`,
      [LOCK_NS.jobKey, this.lockScope, ...source.values],
    );
  }

  /**
   * Multi-row job insert (inside a transaction). The first job of a key in the batch is the key's
   * head when the key has no pending/leased job yet; ids come back in input order (identity values
   * follow the unnest order).
   */
  private async insertJobs(c: pg.PoolClient, jobs: NewJob[], now: number): Promise<number[]> {
    if (jobs.length === 0) return [];
    const destinations = jobs.map((j) => j.destination);
    const orderingKeys = jobs.map((j) => j.orderingKey);
    await this.lockJobKeys(c, { destinations, orderingKeys });
    // The head probe is a scalar subquery on purpose: as NOT EXISTS the planner may turn it into an
    // anti-join over the whole active index, which is catastrophic on a freshly filled, unanalyzed table.
    const { rows } = await c.query<{ id: number }>(
      `INSERT INTO ks_jobs (account, destination, type, ordering_key, payload, run_after, inbox_id, created_at, is_head)
       SELECT a, d, t, k, p, r, i, $8::bigint,
              n = 1 AND (SELECT e.id FROM ks_jobs e
                         WHERE e.destination = u.d AND e.ordering_key = u.k AND e.state IN ('pending', 'leased')
                         LIMIT 1) IS NULL
       FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY d, k ORDER BY ord) AS n
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[])
                  WITH ORDINALITY AS u(a, d, t, k, p, r, i, ord)) u
       ORDER BY ord
       RETURNING id`,
      [
        jobs.map((j) => j.account),
        destinations,
        jobs.map((j) => j.type),
        orderingKeys,
        jobs.map((j) => toJson(j.payload)),
        jobs.map((j) => j.runAfter ?? now),
        jobs.map((j) => j.inboxId ?? null),
        now,
      ],
    );
    return rows.map((r) => r.id).sort((a, b) => a - b);
  }

  /**
   * Head-of-key claim across processes: only a key's head (is_head) is a candidate, and only while no
   * other job of its key is under a live lease (an earlier job requeued after a later one started).
   * Why two claimers never hold one key at once:
   * - the head row is taken with FOR UPDATE SKIP LOCKED, so while A is leasing it, B skips it;
   * - B cannot take the *next* job of that key instead: it is not the head until the head finishes,
   *   and that finish commits the new is_head in the same transaction as the old head's state;
   * - a row changed by a transaction that committed after B's snapshot is re-checked by PostgreSQL
   *   on its newest version when B locks it (READ COMMITTED), so a head that A has just leased
   *   fails `lease_until < now` and is skipped too.
   * The lease check is a scalar subquery so the planner cannot turn it into a join (plan stability).
   */
  async claimJobs(opts: ClaimOptions): Promise<Job[]> {
    if (opts.limit <= 0) return [];
    const { rows } = await this.query<JobRow>(
      `WITH c AS (
         SELECT j.id FROM ks_jobs j
         WHERE j.destination = $1
           AND j.is_head AND j.state IN ('pending', 'leased')
           AND ((j.state = 'pending' AND j.run_after <= $2) OR (j.state = 'leased' AND j.lease_until < $2))
           AND (SELECT l.id FROM ks_jobs l
                WHERE l.destination = j.destination AND l.ordering_key = j.ordering_key
                  AND l.state = 'leased' AND l.lease_until >= $2 AND l.id <> j.id
                LIMIT 1) IS NULL
         ORDER BY j.id
         LIMIT $3
         FOR UPDATE OF j SKIP LOCKED)
       UPDATE ks_jobs t SET state = 'leased', lease_until = $4, leased_by = $5, attempts = t.attempts + 1
       FROM c WHERE t.id = c.id
       RETURNING ${JOB_COLUMNS.split(', ').map((col) => `t.${col}`).join(', ')}`,
      [opts.destination, opts.now, opts.limit, opts.now + opts.leaseMs, opts.workerId],
    );
    return rows.sort((a, b) => a.id - b.id).map(toJob);
  }

  async completeJobs(workerId: string, outcomes: JobOutcome[]): Promise<void> {
    if (outcomes.length === 0) return;
    // id order: the same lock order as claimers, so two completions never deadlock.
    const sorted = [...outcomes].sort((a, b) => a.id - b.id);
    const values = [
      workerId,
      Date.now(),
      sorted.map((o) => o.id),
      sorted.map((o) => o.outcome),
      sorted.map((o) => (o.outcome === 'retry' ? o.runAfter : null)),
      sorted.map((o) => (o.outcome === 'done' ? null : o.error)),
    ];
    // Only rows still leased by this worker: a stale worker's result is dropped. leased_by is kept
    // after completion as "who ran it last". A retried job stays its key's head.
    const update = `UPDATE ks_jobs j SET
         state = CASE o.outcome WHEN 'retry' THEN 'pending' ELSE o.outcome END,
         run_after = CASE WHEN o.outcome = 'retry' THEN o.run_after ELSE j.run_after END,
         last_error = CASE WHEN o.outcome = 'done' THEN j.last_error ELSE o.error END,
         lease_until = NULL,
         finished_at = CASE WHEN o.outcome = 'retry' THEN j.finished_at ELSE $2 END,
         is_head = j.is_head AND o.outcome = 'retry'
       FROM unnest($3::bigint[], $4::text[], $5::bigint[], $6::text[]) AS o(id, outcome, run_after, error)
       WHERE j.id = o.id AND j.state = 'leased' AND j.leased_by = $1
       RETURNING j.id, j.destination, j.ordering_key, j.state`;
    if (sorted.every((o) => o.outcome === 'retry')) {
      await this.query(update, values); // no job leaves its key's queue: heads do not move
      return;
    }
    await this.tx(async (c) => {
      await this.lockJobKeys(c, { jobIds: sorted.map((o) => o.id) });
      const { rows } = await c.query<{ id: number; destination: string; ordering_key: string; state: JobState }>(update, values);
      const gone = rows.filter((r) => r.state === 'done' || r.state === 'dead');
      if (gone.length === 0) return;
      // A separate statement on purpose: it must see this transaction's update (the promoted job
      // may be one that was just retried in the same batch) and every job committed for these
      // keys before we took their locks.
      await c.query(
        `UPDATE ks_jobs SET is_head = true
         WHERE id IN (SELECT (SELECT MIN(e.id) FROM ks_jobs e
                              WHERE e.destination = k.d AND e.ordering_key = k.k AND e.state IN ('pending', 'leased'))
                      FROM (SELECT DISTINCT d, k FROM unnest($1::text[], $2::text[]) AS u(d, k)) k)
           AND NOT is_head`,
        [gone.map((r) => r.destination), gone.map((r) => r.ordering_key)],
      );
    });
  }

  async getJob(id: number): Promise<Job | null> {
    const { rows } = await this.query<JobRow>(`SELECT ${JOB_COLUMNS} FROM ks_jobs WHERE id = $1`, [id]);
    return rows[0] ? toJob(rows[0]) : null;
  }

  async listJobs(filter: JobFilter): Promise<Job[]> {
    const p = new SqlParams();
    const conds = jobConditions(filter, p);
    const where = conds.length ? `WHERE ${conds.join(' AND ')}` : '';
    const { rows } = await this.query<JobRow>(
      `SELECT ${JOB_COLUMNS} FROM ks_jobs ${where} ORDER BY id DESC LIMIT ${p.add(clampLimit(filter.limit))}`,
      p.values,
    );
    return rows.map(toJob);
  }

  async requeueJobs(filter: JobFilter & { ids?: number[] }): Promise<number> {
    const target = requeueTarget(filter);
    if (target === null) return 0;
    const p = new SqlParams();
    const conds = jobConditions(target, p);
    conds.push(`state <> 'leased'`);
    if (filter.ids) conds.push(`id = ANY(${p.add(filter.ids)}::bigint[])`);
    const limit = filter.limit !== undefined ? ` LIMIT ${p.add(clampLimit(filter.limit))}` : '';
    return this.tx(async (c) => {
      const chosen = await c.query<{ id: number }>(`SELECT id FROM ks_jobs WHERE ${conds.join(' AND ')} ORDER BY id${limit}`, p.values);
      if (chosen.rows.length === 0) return 0;
      const ids = chosen.rows.map((r) => r.id);
      await this.lockJobKeys(c, { jobIds: ids });
      // Re-checked under the locks (a chosen job may have been leased meanwhile).
      const again = new SqlParams();
      const recheck = jobConditions(target, again);
      const revived = await c.query<{ destination: string; ordering_key: string }>(
        // created_at restarts too: a replayed job gets a full max age of retries, not one try.
        `UPDATE ks_jobs SET state = 'pending', attempts = 0, run_after = ${again.add(Date.now())}, created_at = ${again.add(Date.now())}, lease_until = NULL, finished_at = NULL
         WHERE id = ANY(${again.add(ids)}::bigint[]) AND state <> 'leased'${recheck.map((cond) => ` AND ${cond}`).join('')}
         RETURNING destination, ordering_key`,
        again.values,
      );
      // A revived job may be earlier than its key's head: recompute the heads of the touched keys.
      await c.query(
        `WITH k AS (SELECT DISTINCT d, k FROM unnest($1::text[], $2::text[]) AS u(d, k)),
              heads AS (SELECT (SELECT MIN(e.id) FROM ks_jobs e
                                WHERE e.destination = k.d AND e.ordering_key = k.k AND e.state IN ('pending', 'leased')) AS id
                        FROM k)
         UPDATE ks_jobs j SET is_head = (j.id IN (SELECT id FROM heads))
         WHERE (j.destination, j.ordering_key) IN (SELECT d, k FROM k)
           AND j.state IN ('pending', 'leased')
           AND (j.is_head OR j.id IN (SELECT id FROM heads))`,
        [revived.rows.map((r) => r.destination), revived.rows.map((r) => r.ordering_key)],
      );
      return revived.rowCount ?? 0;
    });
  }

  async dueDestinations(now: number): Promise<string[]> {
    // Walks the distinct destinations of active jobs through the index instead of grouping every row.
    // Only heads count: a backlog behind a busy or backing-off head is not "due", so the worker
    // does not spin on it.
    const { rows } = await this.query<{ dest: string }>(
      `WITH RECURSIVE d(dest) AS (
         SELECT (SELECT MIN(destination) FROM ks_jobs WHERE state IN ('pending', 'leased'))
         UNION ALL
         SELECT (SELECT MIN(destination) FROM ks_jobs WHERE state IN ('pending', 'leased') AND destination > d.dest)
         FROM d WHERE d.dest IS NOT NULL)
       SELECT dest FROM d
       WHERE dest IS NOT NULL
         AND (EXISTS (SELECT 1 FROM ks_jobs WHERE destination = d.dest AND is_head AND state = 'pending' AND run_after <= $1)
           OR EXISTS (SELECT 1 FROM ks_jobs WHERE destination = d.dest AND is_head AND state = 'leased' AND lease_until < $1))`,
      [now],
    );
    return rows.map((r) => r.dest);
  }

  async jobsByInbox(inboxIds: number[]): Promise<Job[]> {
    if (inboxIds.length === 0) return [];
    const { rows } = await this.query<JobRow>(
      `SELECT ${JOB_COLUMNS} FROM ks_jobs WHERE inbox_id = ANY($1::bigint[]) ORDER BY id`,
      [inboxIds.slice(0, MAX_IDS)],
    );
    return rows.map(toJob);
  }

  async discardJobs(ids: number[], reason: string): Promise<number> {
    if (ids.length === 0) return 0;
    // Dead jobs are no key's head and in no active set: no key lock, no head maintenance.
    const r = await this.query(
      `UPDATE ks_jobs SET state = 'done', discard_reason = $1, finished_at = $2 WHERE state = 'dead' AND id = ANY($3::bigint[])`,
      [reason, Date.now(), ids],
    );
    return r.rowCount ?? 0;
  }

  async oldestPendingByDestination(): Promise<Record<string, number>> {
    const { rows } = await this.query<{ destination: string; at: number }>(
      `SELECT destination, MIN(created_at) AS at FROM ks_jobs WHERE state IN ('pending', 'leased') GROUP BY destination`,
    );
    return Object.fromEntries(rows.map((r) => [r.destination, r.at]));
  }

  // ---------- delivery log ----------

  async logDeliveries(records: DeliveryRecord[]): Promise<void> {
    if (records.length === 0) return;
    await this.query(
      `INSERT INTO ks_deliveries (job_id, account, destination, op, subject, status, http_status, latency_ms, error, at)
       SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[],
                            $8::float8[], $9::text[], $10::bigint[])`,
      [
        records.map((r) => r.jobId),
        records.map((r) => r.account),
        records.map((r) => r.destination),
        records.map((r) => r.op),
        records.map((r) => r.subject),
        records.map((r) => r.status),
        records.map((r) => r.httpStatus),
        records.map((r) => r.latencyMs),
        records.map((r) => r.error),
        records.map((r) => r.at),
      ],
    );
  }

  async listDeliveries(filter: { destination?: string; subject?: string; limit?: number; since?: number }): Promise<DeliveryRow[]> {
    const p = new SqlParams();
    const conds: string[] = [];
    if (filter.destination !== undefined) conds.push(`destination = ${p.add(filter.destination)}`);
    if (filter.subject !== undefined) conds.push(`subject = ${p.add(filter.subject)}`);
    if (filter.since !== undefined) conds.push(`at >= ${p.add(filter.since)}`);
    const where = conds.length ? `WHERE ${conds.join(' AND ')}` : '';
    const { rows } = await this.query<DeliveryDbRow>(
      `SELECT * FROM ks_deliveries ${where} ORDER BY id DESC LIMIT ${p.add(clampLimit(filter.limit))}`,
      p.values,
    );
    return rows.map(toDelivery);
  }

  async deliveriesByJobs(jobIds: number[]): Promise<DeliveryRow[]> {
    if (jobIds.length === 0) return [];
    const { rows } = await this.query<DeliveryDbRow>('SELECT * FROM ks_deliveries WHERE job_id = ANY($1::bigint[]) ORDER BY id', [jobIds.slice(0, MAX_IDS)]);
    return rows.map(toDelivery);
  }

  async deliveryBuckets(since: number, bucketMs: number): Promise<DeliveryBucket[]> {
    const { rows } = await this.query<{ destination: string; b: number; status: DeliveryRecord['status']; n: number }>(
      `SELECT destination, (at / $2::bigint) * $2::bigint AS b, status, COUNT(*) AS n
       FROM ks_deliveries WHERE at >= $1 GROUP BY destination, b, status`,
      [since, Math.max(1, Math.floor(bucketMs))],
    );
    return rows.map((r) => ({ destination: r.destination, at: r.b, status: r.status, n: r.n }));
  }

  async recentLatencies(destination: string, since: number, limit: number): Promise<number[]> {
    // The first id of the window bounds the (destination, id) range scan.
    const { rows } = await this.query<{ latency_ms: number }>(
      `SELECT latency_ms FROM ks_deliveries
       WHERE destination = $1 AND id >= (SELECT id FROM ks_deliveries WHERE at >= $2 ORDER BY at LIMIT 1) AND at >= $2
       ORDER BY id DESC LIMIT $3`,
      [destination, since, clampLimit(limit)],
    );
    return rows.map((r) => r.latency_ms);
  }

  async inboxBuckets(since: number, bucketMs: number): Promise<InboxBucket[]> {
    // Routed rows through their received_at index; the few pending and failed ones through theirs.
    const { rows } = await this.query<{ account: string; source: string; b: number; n: number }>(
      `SELECT account, source, b, SUM(n)::bigint AS n FROM (
         SELECT account, source, (received_at / $2::bigint) * $2::bigint AS b, COUNT(*) AS n FROM ks_inbox
         WHERE state = 'routed' AND received_at >= $1 GROUP BY 1, 2, 3
         UNION ALL
         SELECT account, source, (received_at / $2::bigint) * $2::bigint, COUNT(*) FROM ks_inbox
         WHERE state = 'pending' AND received_at >= $1 GROUP BY 1, 2, 3
         UNION ALL
         SELECT account, source, (received_at / $2::bigint) * $2::bigint, COUNT(*) FROM ks_inbox
         WHERE state = 'failed' AND received_at >= $1 GROUP BY 1, 2, 3) t
       GROUP BY account, source, b`,
      [since, Math.max(1, Math.floor(bucketMs))],
    );
    return rows.map((r) => ({ account: r.account, source: r.source, at: r.b, n: r.n }));
  }

  // ---------- counters, marks ----------

  async hitCounter(key: string, at: number, windowMs: number): Promise<number> {
    // Serialized per key so concurrent hits from several processes get distinct, exact counts.
    return this.tx(async (c) => {
      await c.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [LOCK_NS.counter, `${this.lockScope}:${key}`]);
      // The CTEs' own insert is invisible to the outer SELECT (one snapshot): hence the + 1.
      // The trimmed rows (at < from) and the counted ones (at >= from) do not overlap.
      const { rows } = await c.query<{ n: number }>(
        `WITH ins AS (INSERT INTO ks_counters (key, at) VALUES ($1, $2)),
              trimmed AS (DELETE FROM ks_counters WHERE key = $1 AND at < $3)
         SELECT COUNT(*) + 1 AS n FROM ks_counters WHERE key = $1 AND at >= $3 AND at <= $2`,
        [key, at, at - windowMs],
      );
      return rows[0]?.n ?? 1;
    });
  }

  async tryMark(key: string, now: number, ttlMs: number): Promise<boolean> {
    // An unexpired mark fails the DO UPDATE's WHERE and returns no row; a concurrent insert of the
    // same key waits for the first and then sees its (unexpired) mark.
    const result = await this.query(
      `INSERT INTO ks_marks (key, until) VALUES ($1, $2)
       ON CONFLICT (key) DO UPDATE SET until = EXCLUDED.until WHERE ks_marks.until <= $3
       RETURNING 1`,
      [key, now + ttlMs, now],
    );
    return (result.rowCount ?? 0) > 0;
  }

  // ---------- kv ----------

  async kvGet(key: string): Promise<string | null> {
    const { rows } = await this.query<{ value: string }>(
      'SELECT value FROM ks_kv WHERE key = $1 AND (expires_at IS NULL OR expires_at > $2)',
      [key, Date.now()],
    );
    return rows[0]?.value ?? null;
  }
  async kvGetMany(keys: string[]): Promise<Map<string, string>> {
    if (keys.length === 0) return new Map();
    const { rows } = await this.query<{ key: string; value: string }>(
      'SELECT key, value FROM ks_kv WHERE key = ANY($1::text[]) AND (expires_at IS NULL OR expires_at > $2)',
      [keys, Date.now()],
    );
    return new Map(rows.map((r) => [r.key, r.value]));
  }


  async kvSet(key: string, value: string, ttlMs?: number, now?: number): Promise<void> {
    const expiresAt = ttlMs === undefined ? null : (now ?? Date.now()) + ttlMs;
    await this.query(
      `INSERT INTO ks_kv (key, value, expires_at) VALUES ($1, $2, $3)
       ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at`,
      [key, value, expiresAt],
    );
  }

  async kvDelete(key: string): Promise<void> {
    await this.query('DELETE FROM ks_kv WHERE key = $1', [key]);
  }

  /**
   * Session advisory lock on a connection held for the whole of `fn`. Callers of this process queue
   * on an in-process mutex first, so one name never ties up more than one connection here.
   * If that connection dies mid-way the server releases the lock: the lock is as good as the
   * connection, which is fine for its use (single-flight token refresh).
   */
  withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return this.localLocks.run(name, async () => {
      const { client, release } = await this.checkout(this.lockPool);
      const key = [LOCK_NS.withLock, `${this.lockScope}:${name}`];
      let broken = false;
      try {
        await client.query('SELECT pg_advisory_lock($1, hashtext($2))', key);
      } catch (err) {
        release(isConnectionError(err));
        throw mapPgError(err);
      }
      try {
        return await fn();
      } finally {
        await client.query('SELECT pg_advisory_unlock($1, hashtext($2))', key).catch(() => (broken = true));
        release(broken);
      }
    });
  }

  async releaseRate(bucket: string, heldAt: number, at: number): Promise<void> {
    await this.query(
      'UPDATE ks_rate SET at = $3 WHERE ctid = (SELECT ctid FROM ks_rate WHERE bucket = $1 AND at = $2 LIMIT 1)',
      [bucket, heldAt, at],
    );
  }

  async reserveRate(bucket: string, limit: number, windowMs: number, now: number, recordAt = now): Promise<number> {
    return this.tx(async (c) => {
      await c.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [LOCK_NS.rate, `${this.lockScope}:${bucket}`]);
      // One statement under the bucket lock: trim, count, record when there is room, and otherwise
      // find the send whose expiry frees a slot (the (n - limit + 1)-th oldest in the window).
      const { rows } = await c.query<{ n: number; nth: number | null }>(
        `WITH trimmed AS (DELETE FROM ks_rate WHERE bucket = $1 AND at <= $2),
              cnt AS (SELECT COUNT(*) AS n FROM ks_rate WHERE bucket = $1 AND at > $2),
              ins AS (INSERT INTO ks_rate (bucket, at) SELECT $1::text, $4::bigint FROM cnt WHERE cnt.n < $3::bigint RETURNING 1)
         SELECT cnt.n,
                CASE WHEN cnt.n >= $3 THEN (
                  SELECT w.at FROM (SELECT at, ROW_NUMBER() OVER (ORDER BY at) AS rn
                                    FROM ks_rate WHERE bucket = $1 AND at > $2) w
                  WHERE w.rn = cnt.n - $3 + 1) END AS nth
         FROM cnt`,
        [bucket, now - windowMs, limit, recordAt],
      );
      const row = rows[0];
      if (!row || row.n < limit) return 0;
      return row.nth === null ? windowMs : Math.max(1, row.nth + windowMs - now);
    });
  }

  // ---------- email index ----------

  async indexEmail(account: string, email: string, leadId: number, updatedAt: number): Promise<void> {
    await this.query(
      `INSERT INTO ks_email_leads (account, email, lead_id, updated_at) VALUES ($1, $2, $3, $4)
       ON CONFLICT (account, email, lead_id) DO UPDATE SET updated_at = GREATEST(ks_email_leads.updated_at, EXCLUDED.updated_at)`,
      [account, normalizeEmail(email), leadId, updatedAt],
    );
  }

  async indexEmails(rows: ReadonlyArray<{ account: string; email: string; leadId: number; updatedAt: number }>): Promise<void> {
    // One statement; ON CONFLICT cannot touch a row twice in it, so fold duplicates first.
    const latest = new Map<string, { account: string; email: string; leadId: number; updatedAt: number }>();
    for (const r of rows) {
      const email = normalizeEmail(r.email);
      const key = `${r.account}\0${email}\0${r.leadId}`;
      const prev = latest.get(key);
      if (!prev || prev.updatedAt < r.updatedAt) latest.set(key, { ...r, email });
    }
    if (latest.size === 0) return;
    const list = [...latest.values()];
    await this.query(
      `INSERT INTO ks_email_leads (account, email, lead_id, updated_at)
       SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
       ON CONFLICT (account, email, lead_id) DO UPDATE SET updated_at = GREATEST(ks_email_leads.updated_at, EXCLUDED.updated_at)`,
      [list.map((r) => r.account), list.map((r) => r.email), list.map((r) => r.leadId), list.map((r) => r.updatedAt)],
    );
  }

  async leadsByEmail(account: string, email: string): Promise<number[]> {
    const { rows } = await this.query<{ lead_id: number }>(
      'SELECT lead_id FROM ks_email_leads WHERE account = $1 AND email = $2 ORDER BY updated_at DESC, lead_id DESC',
      [account, normalizeEmail(email)],
    );
    return rows.map((r) => r.lead_id);
  }

  async forgetEmail(account: string, email: string): Promise<void> {
    const needle = normalizeEmail(email);
    await this.tx(async (c) => {
      await c.query('DELETE FROM ks_email_leads WHERE account = $1 AND email = $2', [account, needle]);
      if (needle === '') return; // an empty needle would match every key
      // Counter and mark keys are free-form strings built by the rules: any key containing the address goes.
      await c.query('DELETE FROM ks_counters WHERE strpos(lower(key), $1) > 0', [needle]);
      await c.query('DELETE FROM ks_marks WHERE strpos(lower(key), $1) > 0', [needle]);
    });
  }

  async scrubPerson(account: string, email: string): Promise<ScrubCounts> {
    const needle = normalizeEmail(email);
    if (needle === '') return { events: 0, jobs: 0, deliveries: 0 };
    return this.tx(async (c) => {
      const events = await c.query<{ id: string }>(
        `UPDATE ks_inbox SET email = NULL, note = NULL WHERE account = $1 AND email = $2 AND state = 'routed' RETURNING id`,
        [account, needle],
      );
      const eventIds = events.rows.map((r) => r.id);
      if (eventIds.length) await c.query('UPDATE ks_inbox_payloads SET payload = $1 WHERE inbox_id = ANY($2::bigint[])', [ERASED_PAYLOAD, eventIds]);
      // A rare operator command: the scan of finished jobs by payload text is acceptable.
      const jobs = await c.query<{ id: string }>(
        `DELETE FROM ks_jobs WHERE account = $1 AND state IN ('done', 'dead') AND strpos(lower(payload), $2) > 0 RETURNING id`,
        [account, needle],
      );
      const deliveries = await c.query(
        'DELETE FROM ks_deliveries WHERE job_id = ANY($1::bigint[]) OR (subject = $2 AND account = $3)',
        [jobs.rows.map((r) => r.id), needle, account],
      );
      return { events: eventIds.length, jobs: jobs.rows.length, deliveries: deliveries.rowCount ?? 0 };
    });
  }

  // ---------- housekeeping ----------

  async stats(_now: number): Promise<QueueStats> {
    // One statement, one snapshot: the numbers add up.
    const { rows } = await this.query<{ what: string; state: JobState | null; destination: string | null; n: number | null }>(
      `SELECT 'inbox' AS what, NULL AS state, NULL AS destination, COUNT(*) AS n FROM ks_inbox WHERE state = 'pending'
       UNION ALL
       SELECT 'inbox_failed', NULL, NULL, COUNT(*) FROM ks_inbox WHERE state = 'failed'
       UNION ALL
       SELECT 'jobs', state, destination, COUNT(*) FROM ks_jobs GROUP BY state, destination
       UNION ALL
       SELECT 'oldest', NULL, NULL, MIN(created_at) FROM ks_jobs WHERE state IN ('pending', 'leased')`,
    );
    const stats: QueueStats = {
      inboxPending: 0,
      inboxFailed: 0,
      jobs: { pending: 0, leased: 0, done: 0, dead: 0 },
      depthByDestination: {},
      deadByDestination: {},
      oldestPendingAt: null,
    };
    for (const r of rows) {
      if (r.what === 'inbox') stats.inboxPending = r.n ?? 0;
      else if (r.what === 'inbox_failed') stats.inboxFailed = r.n ?? 0;
      else if (r.what === 'oldest') stats.oldestPendingAt = r.n;
      else if (r.state !== null && r.destination !== null) {
        const n = r.n ?? 0;
        stats.jobs[r.state] += n;
        if (r.state === 'pending' || r.state === 'leased') {
          stats.depthByDestination[r.destination] = (stats.depthByDestination[r.destination] ?? 0) + n;
        } else if (r.state === 'dead') {
          stats.deadByDestination[r.destination] = n;
        }
      }
    }
    return stats;
  }

  /**
   * Besides the documented three (done jobs, routed inbox rows, delivery logs) it drops counter,
   * rate and mark rows and kv entries that expired before `before`. Returns every row removed.
   */
  async prune(before: number): Promise<number> {
    const steps = [
      `DELETE FROM ks_jobs WHERE state = 'done' AND finished_at < $1`,
      `DELETE FROM ks_inbox WHERE state = 'routed' AND received_at < $1`,
      'DELETE FROM ks_deliveries WHERE at < $1',
      'DELETE FROM ks_counters WHERE at < $1',
      'DELETE FROM ks_rate WHERE at < $1',
      'DELETE FROM ks_marks WHERE until < $1',
      'DELETE FROM ks_kv WHERE expires_at < $1',
    ];
    let removed = 0;
    for (const sql of steps) removed += (await this.query(sql, [before])).rowCount ?? 0;
    return removed;
  }
}
