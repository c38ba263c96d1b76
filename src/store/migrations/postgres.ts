/**
 * PostgreSQL schema, as an ordered list of steps. A step, once released, is never edited: add a new one.
 * Applied by PostgresStore.migrate() under a session advisory lock (several processes may start at
 * once), each step in its own transaction, recorded in ks_schema_migrations. Tables are prefixed `ks_`
 * so they can live in a schema shared with other apps.
 *
 * Times are BIGINT unix milliseconds, like the Store interface. Payloads are TEXT (JSON), not JSONB:
 * intake stores them as received and JSONB would reject some valid JSON (\u0000) and cost parse time.
 */

export interface Migration {
  id: number;
  name: string;
  sql: string;
}

export const postgresMigrations: readonly Migration[] = [
  {
    id: 1,
    name: 'initial',
    sql: `
      CREATE TABLE ks_inbox (
        id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        account     TEXT    NOT NULL,
        source      TEXT    NOT NULL,
        kind        TEXT    NOT NULL,
        dedup_key   TEXT    NOT NULL,
        payload     TEXT    NOT NULL,
        received_at BIGINT  NOT NULL,
        state       TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'routed', 'failed')),
        attempts    INTEGER NOT NULL DEFAULT 0,
        -- set by claimInbox: a pending row with lease_until >= now belongs to some router
        lease_until BIGINT,
        last_error  TEXT
      );
      CREATE UNIQUE INDEX ks_inbox_dedup ON ks_inbox (account, dedup_key);
      CREATE INDEX ks_inbox_pending ON ks_inbox (id) WHERE state = 'pending';
      CREATE INDEX ks_inbox_routed_received ON ks_inbox (received_at) WHERE state = 'routed';

      CREATE TABLE ks_jobs (
        id           BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        account      TEXT    NOT NULL,
        destination  TEXT    NOT NULL,
        type         TEXT    NOT NULL,
        ordering_key TEXT    NOT NULL,
        payload      TEXT    NOT NULL,
        run_after    BIGINT  NOT NULL,
        inbox_id     BIGINT,
        state        TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'leased', 'done', 'dead')),
        attempts     INTEGER NOT NULL DEFAULT 0,
        created_at   BIGINT  NOT NULL,
        lease_until  BIGINT,
        leased_by    TEXT,
        last_error   TEXT,
        finished_at  BIGINT,
        -- true on the earliest pending/leased job of its (destination, ordering_key), false elsewhere.
        -- Maintained (under a per-key advisory lock) on every change of that set, so a claim reads
        -- only key heads instead of scanning the backlog queued behind busy keys.
        is_head      BOOLEAN NOT NULL DEFAULT false
      );
      -- the earliest active job of a key (head maintenance)
      CREATE INDEX ks_jobs_active_key ON ks_jobs (destination, ordering_key, id) WHERE state IN ('pending', 'leased');
      -- claim: the heads of one destination in id order
      CREATE INDEX ks_jobs_heads ON ks_jobs (destination, id) WHERE is_head AND state IN ('pending', 'leased');
      -- dueDestinations: is some head due?
      CREATE INDEX ks_jobs_heads_due ON ks_jobs (destination, run_after) WHERE is_head AND state = 'pending';
      -- "is another job of this key under a live lease?" (small: only in-flight jobs)
      CREATE INDEX ks_jobs_leased_key ON ks_jobs (destination, ordering_key, lease_until) WHERE state = 'leased';
      -- stats, listJobs, requeueJobs
      CREATE INDEX ks_jobs_state ON ks_jobs (state, destination);
      CREATE INDEX ks_jobs_done_finished ON ks_jobs (finished_at) WHERE state = 'done';

      CREATE TABLE ks_deliveries (
        id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        job_id      BIGINT,
        account     TEXT    NOT NULL,
        destination TEXT    NOT NULL,
        op          TEXT    NOT NULL,
        subject     TEXT    NOT NULL,
        status      TEXT    NOT NULL,
        http_status INTEGER,
        latency_ms  DOUBLE PRECISION NOT NULL,
        error       TEXT,
        at          BIGINT  NOT NULL
      );
      CREATE INDEX ks_deliveries_destination ON ks_deliveries (destination, id);
      CREATE INDEX ks_deliveries_subject ON ks_deliveries (subject, id);
      CREATE INDEX ks_deliveries_at ON ks_deliveries (at);

      -- one row per occurrence; hitCounter trims a key's rows older than its window
      CREATE TABLE ks_counters (
        key TEXT   NOT NULL,
        at  BIGINT NOT NULL
      );
      CREATE INDEX ks_counters_key_at ON ks_counters (key, at);

      CREATE TABLE ks_marks (
        key   TEXT   PRIMARY KEY,
        until BIGINT NOT NULL
      );

      CREATE TABLE ks_kv (
        key        TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        expires_at BIGINT
      );

      -- sliding-window log: one row per reserved send
      CREATE TABLE ks_rate (
        bucket TEXT   NOT NULL,
        at     BIGINT NOT NULL
      );
      CREATE INDEX ks_rate_bucket_at ON ks_rate (bucket, at);

      CREATE TABLE ks_email_leads (
        account    TEXT   NOT NULL,
        email      TEXT   NOT NULL,
        lead_id    BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
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
    // Claims and routed marks rewrite an inbox row several times (a new tuple version each time);
    // without the ~1.5 KB payload in it, each version is a few dozen bytes.
    sql: `
      CREATE TABLE ks_inbox_payloads (
        inbox_id BIGINT PRIMARY KEY REFERENCES ks_inbox (id) ON DELETE CASCADE,
        payload  TEXT   NOT NULL
      );
      INSERT INTO ks_inbox_payloads (inbox_id, payload) SELECT id, payload FROM ks_inbox;
      ALTER TABLE ks_inbox DROP COLUMN payload;
    `,
  },
  {
    id: 4,
    name: 'dashboard: events by lead and email, jobs by event, deliveries by job, discarded dead letters',
    // Columns filled when the router marks an event routed (none at intake, whose inserts maintain
    // no new index). Nullable columns without a default: ADD COLUMN only changes the catalog.
    sql: `
      ALTER TABLE ks_inbox ADD COLUMN lead_id BIGINT;
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
