/**
 * SQLite schema, as an ordered list of steps. A step, once released, is never edited: add a new one.
 * Applied by SqliteStore.migrate() inside one BEGIN IMMEDIATE transaction and recorded in
 * ks_schema_migrations. Every table is prefixed `ks_` so the file can be shared with other apps.
 */

export interface Migration {
  id: number;
  name: string;
  sql: string;
}

export const sqliteMigrations: readonly Migration[] = [
  {
    id: 1,
    name: 'initial',
    sql: `
      -- AUTOINCREMENT: ids are never reused after prune (jobs point at inbox ids, deliveries at job ids).
      CREATE TABLE ks_inbox (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        account     TEXT    NOT NULL,
        source      TEXT    NOT NULL,
        kind        TEXT    NOT NULL,
        dedup_key   TEXT    NOT NULL,
        payload     TEXT    NOT NULL,
        received_at INTEGER NOT NULL,
        state       TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'routed', 'failed')),
        attempts    INTEGER NOT NULL DEFAULT 0,
        -- set by claimInbox: a pending row with lease_until >= now belongs to some router
        lease_until INTEGER,
        last_error  TEXT
      );
      CREATE UNIQUE INDEX ks_inbox_dedup ON ks_inbox (account, dedup_key);
      CREATE INDEX ks_inbox_pending ON ks_inbox (id) WHERE state = 'pending';
      CREATE INDEX ks_inbox_routed_received ON ks_inbox (received_at) WHERE state = 'routed';

      CREATE TABLE ks_jobs (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        account      TEXT    NOT NULL,
        destination  TEXT    NOT NULL,
        type         TEXT    NOT NULL,
        ordering_key TEXT    NOT NULL,
        payload      TEXT    NOT NULL,
        run_after    INTEGER NOT NULL,
        inbox_id     INTEGER,
        state        TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'leased', 'done', 'dead')),
        attempts     INTEGER NOT NULL DEFAULT 0,
        created_at   INTEGER NOT NULL,
        lease_until  INTEGER,
        leased_by    TEXT,
        last_error   TEXT,
        finished_at  INTEGER,
        -- 1 on the earliest pending/leased job of its (destination, ordering_key), 0 elsewhere.
        -- Maintained on every change of that set, so a claim reads only key heads instead of
        -- scanning the backlog queued behind busy keys.
        is_head      INTEGER NOT NULL DEFAULT 0
      );
      -- the earliest active job of a key (head maintenance)
      CREATE INDEX ks_jobs_active_key ON ks_jobs (destination, ordering_key, id) WHERE state IN ('pending', 'leased');
      -- claim: the heads of one destination in id order
      CREATE INDEX ks_jobs_heads ON ks_jobs (destination, id) WHERE is_head = 1 AND state IN ('pending', 'leased');
      -- dueDestinations: is some head due?
      CREATE INDEX ks_jobs_heads_due ON ks_jobs (destination, run_after) WHERE is_head = 1 AND state = 'pending';
      -- "is another job of this key under a live lease?" (small: only in-flight jobs)
      CREATE INDEX ks_jobs_leased_key ON ks_jobs (destination, ordering_key, lease_until) WHERE state = 'leased';
      -- stats, listJobs, requeueJobs
      CREATE INDEX ks_jobs_state ON ks_jobs (state, destination);
      CREATE INDEX ks_jobs_done_finished ON ks_jobs (finished_at) WHERE state = 'done';

      CREATE TABLE ks_deliveries (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id      INTEGER,
        account     TEXT    NOT NULL,
        destination TEXT    NOT NULL,
        op          TEXT    NOT NULL,
        subject     TEXT    NOT NULL,
        status      TEXT    NOT NULL,
        http_status INTEGER,
        latency_ms  REAL    NOT NULL,
        error       TEXT,
        at          INTEGER NOT NULL
      );
      CREATE INDEX ks_deliveries_destination ON ks_deliveries (destination, id);
      CREATE INDEX ks_deliveries_subject ON ks_deliveries (subject, id);
      CREATE INDEX ks_deliveries_at ON ks_deliveries (at);

      -- one row per occurrence; hitCounter trims a key's rows older than its window
      CREATE TABLE ks_counters (
        key TEXT    NOT NULL,
        at  INTEGER NOT NULL
      );
      CREATE INDEX ks_counters_key_at ON ks_counters (key, at);

      CREATE TABLE ks_marks (
        key   TEXT    PRIMARY KEY,
        until INTEGER NOT NULL
      );

      CREATE TABLE ks_kv (
        key        TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        expires_at INTEGER
      );

      -- sliding-window log: one row per reserved send
      CREATE TABLE ks_rate (
        bucket TEXT    NOT NULL,
        at     INTEGER NOT NULL
      );
      CREATE INDEX ks_rate_bucket_at ON ks_rate (bucket, at);

      CREATE TABLE ks_email_leads (
        account    TEXT    NOT NULL,
        email      TEXT    NOT NULL,
        lead_id    INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (account, email, lead_id)
      );
    `,
  },
  {
    id: 2,
    name: 'failed inbox events are counted and replayed',
    sql: `CREATE INDEX ks_inbox_failed ON ks_inbox (id) WHERE state = 'failed';`,
  },
  {
    id: 3,
    name: 'inbox payloads in their own table',
    // Claims and routed marks rewrite an inbox row several times; without the ~1.5 KB payload in it,
    // each rewrite touches a few bytes of a shared page instead of most of a page. No foreign key:
    // its check cost ~4 us per webhook at intake; prune deletes both rows in one transaction.
    sql: `
      CREATE TABLE ks_inbox_payloads (
        inbox_id INTEGER PRIMARY KEY,
        payload  TEXT    NOT NULL
      );
      INSERT INTO ks_inbox_payloads (inbox_id, payload) SELECT id, payload FROM ks_inbox;
      ALTER TABLE ks_inbox DROP COLUMN payload;
    `,
  },
  {
    id: 4,
    name: 'dashboard: events by lead and email, jobs by event, deliveries by job, discarded dead letters',
    // Columns filled when the router marks an event routed (none at intake: its insert stays as it
    // was, no index added to what it maintains; a kind filter walks the log by id, measured fast
    // enough in bench/events-api.ts). The partial indexes hold only rows that have the value.
    sql: `
      ALTER TABLE ks_inbox ADD COLUMN lead_id INTEGER;
      ALTER TABLE ks_inbox ADD COLUMN email TEXT;
      -- why a routed event produced nothing (no lead has the email, the lead is gone, ...)
      ALTER TABLE ks_inbox ADD COLUMN note TEXT;
      CREATE INDEX ks_inbox_lead ON ks_inbox (lead_id, id) WHERE lead_id IS NOT NULL;
      CREATE INDEX ks_inbox_email ON ks_inbox (email, id) WHERE email IS NOT NULL;
      CREATE INDEX ks_inbox_noted ON ks_inbox (id) WHERE note IS NOT NULL;
      -- a discarded dead letter is finished (state done, pruned with the rest) with its reason
      ALTER TABLE ks_jobs ADD COLUMN discard_reason TEXT;
      CREATE INDEX ks_jobs_inbox ON ks_jobs (inbox_id) WHERE inbox_id IS NOT NULL;
      CREATE INDEX ks_deliveries_job ON ks_deliveries (job_id) WHERE job_id IS NOT NULL;
    `,
  },
  {
    id: 5,
    name: "lead timeline: jobs no inbox event made (backfill, erase), by lead",
    // Partial: the jobs the router makes from webhooks all have an inbox id, so the hot path
    // maintains nothing new; only backfill and erase jobs get an entry.
    sql: `CREATE INDEX ks_jobs_keyed_no_inbox ON ks_jobs (ordering_key, id) WHERE inbox_id IS NULL;`,
  },
];
