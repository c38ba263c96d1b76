/**
 * One conformance suite for every Store implementation: SQLite (a temp file, and `:memory:` for
 * what needs no second connection) and PostgreSQL (a fresh schema per test, dropped afterwards).
 *
 * PostgreSQL comes from TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test). When it
 * is unreachable the PostgreSQL run is skipped, unless REQUIRE_POSTGRES=1 (then it fails).
 */
import assert from 'node:assert/strict';
import { closeSync, fsync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import Database from 'better-sqlite3';
import { openStore } from '../../src/store/open.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { openPostgresStore } from '../../src/store/postgres.js';
import { StoreUnavailableError } from '../../src/store/errors.js';
import type { DeliveryRecord, InboxFacts, InboxFilter, InboxSummary, Job, NewInboxEvent, NewJob, Store } from '../../src/store/store.js';
import type { WalFiles } from '../../src/store/wal-sync.js';
import pg from 'pg';
import { sqliteMigrations } from '../../src/store/migrations/sqlite.js';
import { postgresMigrations } from '../../src/store/migrations/postgres.js';
import { freshSchema, pgTest, PG_URL, postgresUnreachable } from '../pg.js';

// ---------- backends ----------

/** One empty database; `open` may be called several times to get stores sharing it. */
interface TestDatabase {
  open(): Promise<Store>;
  dispose(): Promise<void>;
}

interface Backend {
  name: string;
  /** False for `:memory:`: every open() is a separate database. */
  shared: boolean;
  fresh(): Promise<TestDatabase>;
}

const sqliteFile: Backend = {
  name: 'sqlite (file)',
  shared: true,
  async fresh() {
    const dir = mkdtempSync(path.join(tmpdir(), 'ks-store-'));
    return {
      open: () => openStore(`sqlite:${path.join(dir, 'nested', 'ks.db')}`),
      dispose: async () => rmSync(dir, { recursive: true, force: true }),
    };
  },
};

const sqliteMemory: Backend = {
  name: 'sqlite (:memory:)',
  shared: false,
  async fresh() {
    return { open: () => openStore('sqlite::memory:'), dispose: async () => {} };
  },
};

function postgres(): Backend {
  return {
    name: 'postgres',
    shared: true,
    async fresh() {
      const db = await freshSchema('ks_test');
      return { open: () => openStore(db.url), dispose: () => db.dispose() };
    },
  };
}

// ---------- helpers ----------

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Small seeded PRNG: a failing random test replays identically. */
function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

function ev(dedupKey: string, over: Partial<NewInboxEvent> = {}): NewInboxEvent {
  return {
    account: 'acc',
    source: 'kommo',
    kind: 'lead.stage_changed',
    dedupKey,
    payload: { key: dedupKey, nested: { n: 1, s: 'é"\'\\' } },
    receivedAt: 1_700_000_000_000,
    ...over,
  };
}

function job(orderingKey: string, over: Partial<NewJob> = {}): NewJob {
  return { account: 'acc', destination: 'dest', type: 'sync.ops@1', orderingKey, payload: { k: orderingKey }, ...over };
}

/** Runs `fn` against a fresh store (and database), closing and dropping both afterwards. */
async function withStore(backend: Backend, fn: (s: Store, db: TestDatabase) => Promise<void>): Promise<void> {
  const db = await backend.fresh();
  const store = await db.open();
  try {
    await fn(store, db);
  } finally {
    await store.close();
    await db.dispose();
  }
}

async function claimIds(s: Store, destination: string, now: number, workerId = 'w1', limit = 100, leaseMs = 60_000): Promise<number[]> {
  return (await s.claimJobs({ destination, limit, leaseMs, workerId, now })).map((j) => j.id);
}

// ---------- the suite ----------

function conformance(backend: Backend): void {
  const sharedTest = backend.shared ? test : test.skip;
  const it = (name: string, fn: (s: Store, db: TestDatabase, t: TestContext) => Promise<void>) =>
    test(name, (t) => withStore(backend, (s, db) => fn(s, db, t)));

  it('migrate is idempotent', async (s) => {
    await s.migrate();
    await s.migrate();
    await s.ping();
    assert.equal((await s.stats(Date.now())).inboxPending, 0);
  });

  sharedTest('several stores migrating one database at once do not race', async () => {
    const db = await backend.fresh();
    try {
      const stores = await Promise.all([db.open(), db.open(), db.open()]);
      await Promise.all(stores.map((s) => s.migrate()));
      assert.deepEqual(await stores[0]!.insertInbox([ev('a')]), { inserted: 1, duplicates: 0 });
      assert.deepEqual(await stores[1]!.insertInbox([ev('a')]), { inserted: 0, duplicates: 1 });
      await Promise.all(stores.map((s) => s.close()));
    } finally {
      await db.dispose();
    }
  });

  // ----- inbox -----

  it('insertInbox stores once per (account, dedupKey) and counts duplicates', async (s) => {
    assert.deepEqual(await s.insertInbox([ev('a'), ev('b')]), { inserted: 2, duplicates: 0 });
    assert.deepEqual(await s.insertInbox([ev('a')]), { inserted: 0, duplicates: 1 });
    assert.deepEqual(await s.insertInbox([ev('c'), ev('c'), ev('b')]), { inserted: 1, duplicates: 2 });
    // same key, other account: a different event
    assert.deepEqual(await s.insertInbox([ev('a', { account: 'other' })]), { inserted: 1, duplicates: 0 });
    assert.deepEqual(await s.insertInbox([]), { inserted: 0, duplicates: 0 });
    assert.equal((await s.stats(Date.now())).inboxPending, 4);

    const rows = await s.claimInbox(10, 1_000, Date.now());
    assert.deepEqual(
      rows.map((r) => [r.account, r.dedupKey]),
      [['acc', 'a'], ['acc', 'b'], ['acc', 'c'], ['other', 'a']],
    );
    const first = rows[0]!;
    assert.deepEqual(first.payload, { key: 'a', nested: { n: 1, s: 'é"\'\\' } });
    assert.equal(first.receivedAt, 1_700_000_000_000);
    assert.equal(first.source, 'kommo');
    assert.equal(first.kind, 'lead.stage_changed');
    assert.equal(first.state, 'pending');
    assert.equal(first.attempts, 1);
    assert.equal(typeof first.id, 'number');
  });

  it('insertInbox dedups across the callers of one group-commit batch, each with its own counts', async (s) => {
    const results = await Promise.all([
      s.insertInbox([ev('x')]),
      s.insertInbox([ev('x'), ev('y')]),
      s.insertInbox([ev('y')]),
      s.insertInbox([ev('z'), ev('z')]),
    ]);
    assert.deepEqual(results, [
      { inserted: 1, duplicates: 0 },
      { inserted: 1, duplicates: 1 },
      { inserted: 0, duplicates: 1 },
      { inserted: 1, duplicates: 1 },
    ]);
    assert.equal((await s.stats(Date.now())).inboxPending, 3);
  });

  it('a bad caller in a group-commit batch fails alone', async (s) => {
    const bad = ev('bad', { account: null as unknown as string });
    const [good1, broken, good2] = await Promise.allSettled([
      s.insertInbox([ev('g1')]),
      s.insertInbox([bad]),
      s.insertInbox([ev('g2'), ev('g1')]),
    ]);
    assert.deepEqual(good1, { status: 'fulfilled', value: { inserted: 1, duplicates: 0 } });
    assert.equal(broken?.status, 'rejected');
    assert.deepEqual(good2, { status: 'fulfilled', value: { inserted: 1, duplicates: 1 } });
    assert.equal((await s.stats(Date.now())).inboxPending, 2);
  });

  it('1,000 concurrent insertInbox calls are all stored (and durable across reopen)', async (s, db) => {
    const calls = Array.from({ length: 1_000 }, (_, i) => s.insertInbox([ev(`k${i}`), ev(`k${i % 10}`)]));
    const results = await Promise.all(calls);
    const inserted = results.reduce((n, r) => n + r.inserted, 0);
    const duplicates = results.reduce((n, r) => n + r.duplicates, 0);
    assert.equal(inserted, 1_000);
    assert.equal(duplicates, 1_000);
    if (backend.shared) {
      const again = await db.open();
      try {
        assert.equal((await again.stats(Date.now())).inboxPending, 1_000);
        assert.equal((await again.claimInbox(2_000, 1_000, Date.now())).length, 1_000);
      } finally {
        await again.close();
      }
    } else {
      assert.equal((await s.stats(Date.now())).inboxPending, 1_000);
    }
  });

  it('releaseInbox gives claimed events back without counting the attempt', async (s) => {
    await s.insertInbox([1, 2, 3].map((i) => ev(`r${i}`)));
    const now = Date.now();
    const claimed = await s.claimInbox(3, 60_000, now);
    await s.releaseInbox([claimed[1]!.id, claimed[2]!.id]);
    const again = await s.claimInbox(10, 60_000, now + 10);
    assert.deepEqual(again.map((r) => r.dedupKey), ['r2', 'r3'], 'released events are claimable at once, in order');
    assert.deepEqual(again.map((r) => r.attempts), [1, 1]);
    await s.releaseInbox([]);
  });

  it('claimInbox leases in id order; routeInbox inserts jobs and marks routed atomically', async (s) => {
    await s.insertInbox([1, 2, 3, 4, 5].map((i) => ev(`e${i}`)));
    const now = Date.now();
    const first = await s.claimInbox(3, 1_000, now);
    assert.deepEqual(first.map((r) => r.dedupKey), ['e1', 'e2', 'e3']);
    // leased rows are skipped by a second router
    const second = await s.claimInbox(10, 1_000, now + 10);
    assert.deepEqual(second.map((r) => r.dedupKey), ['e4', 'e5']);
    assert.deepEqual(await s.claimInbox(10, 1_000, now + 20), []);

    const [e1, e2, e3] = first;
    await s.routeInbox([e1!.id, e2!.id], [job('k1', { inboxId: e1!.id }), job('k2', { inboxId: e2!.id }), job('k2b', { inboxId: e2!.id })]);
    let stats = await s.stats(now);
    assert.equal(stats.inboxPending, 3);
    assert.equal(stats.jobs.pending, 3);
    const jobs = await s.listJobs({});
    assert.deepEqual(jobs.map((j) => j.inboxId).sort(), [e1!.id, e2!.id, e2!.id].sort());

    // Atomic: a job that cannot be inserted rolls the routing back.
    await assert.rejects(s.routeInbox([e3!.id], [job('ok', { inboxId: e3!.id }), job('bad', { destination: null as unknown as string })]));
    stats = await s.stats(now);
    assert.equal(stats.inboxPending, 3);
    assert.equal(stats.jobs.pending, 3);

    // After the lease expires the unrouted rows come back, with one more attempt.
    const retried = await s.claimInbox(10, 1_000, now + 1_500);
    assert.deepEqual(retried.map((r) => [r.dedupKey, r.attempts]), [['e3', 2], ['e4', 2], ['e5', 2]]);

    // Routing an event that was routed already (another router won) adds no duplicate jobs.
    await s.routeInbox([e1!.id], [job('k1', { inboxId: e1!.id })]);
    assert.equal((await s.stats(now)).jobs.pending, 3);

    // failInbox keeps the row but takes it out of the pending set.
    await s.failInbox(e3!.id, 'bad payload');
    assert.equal((await s.stats(now)).inboxPending, 2);
    assert.deepEqual((await s.claimInbox(10, 1_000, now + 5_000)).map((r) => r.dedupKey), ['e4', 'e5']);
  });

  // ----- jobs -----

  it('enqueueJobs returns ids in input order and stores every field', async (s) => {
    const before = Date.now();
    const ids = await s.enqueueJobs([job('a', { runAfter: 5 }), job('b', { inboxId: 42 }), job('c')]);
    assert.equal(ids.length, 3);
    assert.ok(ids[0]! < ids[1]! && ids[1]! < ids[2]!);
    const a = await s.getJob(ids[0]!);
    assert.deepEqual(a, {
      id: ids[0]!,
      account: 'acc',
      destination: 'dest',
      type: 'sync.ops@1',
      orderingKey: 'a',
      payload: { k: 'a' },
      runAfter: 5,
      inboxId: null,
      state: 'pending',
      attempts: 0,
      createdAt: a!.createdAt,
      leaseUntil: null,
      leasedBy: null,
      lastError: null,
    } satisfies Job);
    assert.ok(a!.createdAt >= before && a!.createdAt <= Date.now());
    const b = await s.getJob(ids[1]!);
    assert.equal(b!.inboxId, 42);
    assert.ok(b!.runAfter >= before && b!.runAfter <= Date.now());
    assert.equal(await s.getJob(999_999), null);
    assert.deepEqual(await s.enqueueJobs([]), []);
  });

  it('claimJobs hands out only the head job of each ordering key', async (s) => {
    const [a1, a2, a3, b1] = await s.enqueueJobs([job('A'), job('A'), job('A'), job('B')]);
    const [other] = await s.enqueueJobs([job('A', { destination: 'other' })]);
    let now = Date.now();
    const claimed = await s.claimJobs({ destination: 'dest', limit: 10, leaseMs: 60_000, workerId: 'w1', now });
    assert.deepEqual(claimed.map((j) => j.id), [a1, b1]);
    assert.deepEqual(claimed.map((j) => [j.state, j.attempts, j.leasedBy, j.leaseUntil]), [
      ['leased', 1, 'w1', now + 60_000],
      ['leased', 1, 'w1', now + 60_000],
    ]);
    assert.deepEqual(await claimIds(s, 'dest', now), []);
    // another destination's queue is independent
    assert.deepEqual(await claimIds(s, 'other', now), [other]);

    await s.completeJobs('w1', [{ id: a1!, outcome: 'done' }]);
    assert.equal((await s.getJob(a1!))!.state, 'done');
    assert.deepEqual(await claimIds(s, 'dest', now), [a2]);

    // A retrying job (future runAfter) blocks the later jobs of its key, not other keys.
    await s.completeJobs('w1', [{ id: a2!, outcome: 'retry', runAfter: now + 10_000, error: 'HTTP 503' }]);
    const retrying = await s.getJob(a2!);
    assert.deepEqual([retrying!.state, retrying!.runAfter, retrying!.lastError, retrying!.leaseUntil], ['pending', now + 10_000, 'HTTP 503', null]);
    const [c1] = await s.enqueueJobs([job('C')]);
    now = Date.now();
    assert.deepEqual(await claimIds(s, 'dest', now), [c1]);
    assert.deepEqual(await claimIds(s, 'dest', now + 10_000), [a2]);
    assert.equal((await s.getJob(a2!))!.attempts, 2);

    // A dead job does not block its key.
    await s.completeJobs('w1', [{ id: a2!, outcome: 'dead', error: 'HTTP 400: bad email' }]);
    const dead = await s.getJob(a2!);
    assert.deepEqual([dead!.state, dead!.lastError], ['dead', 'HTTP 400: bad email']);
    assert.deepEqual(await claimIds(s, 'dest', now + 10_000), [a3]);
  });

  it('claimJobs respects limit and runAfter, in id order', async (s) => {
    const now = Date.now();
    const ids = await s.enqueueJobs([job('1', { runAfter: now - 10 }), job('2', { runAfter: now + 1_000 }), job('3', { runAfter: now }), job('4', { runAfter: now - 5 })]);
    assert.deepEqual(await claimIds(s, 'dest', now, 'w', 2), [ids[0], ids[2]]);
    assert.deepEqual(await claimIds(s, 'dest', now, 'w', 2), [ids[3]]);
    assert.deepEqual(await claimIds(s, 'dest', now + 1_000, 'w', 2), [ids[1]]);
  });

  it('an expired lease can be claimed by another worker; the stale worker is ignored', async (s) => {
    const [id] = await s.enqueueJobs([job('K')]);
    const [later] = await s.enqueueJobs([job('K')]);
    const now = Date.now();
    assert.deepEqual(await claimIds(s, 'dest', now, 'w1', 10, 1_000), [id]);
    assert.deepEqual(await claimIds(s, 'dest', now + 500, 'w2', 10, 1_000), []);
    assert.deepEqual(await claimIds(s, 'dest', now + 1_000, 'w2', 10, 1_000), []); // lease_until is still >= now
    const reclaimed = await s.claimJobs({ destination: 'dest', limit: 10, leaseMs: 1_000, workerId: 'w2', now: now + 1_001 });
    assert.deepEqual(reclaimed.map((j) => [j.id, j.attempts, j.leasedBy]), [[id, 2, 'w2']]);

    await s.completeJobs('w1', [{ id: id!, outcome: 'dead', error: 'stale' }]);
    const still = await s.getJob(id!);
    assert.deepEqual([still!.state, still!.leasedBy, still!.lastError], ['leased', 'w2', null]);
    assert.deepEqual(await claimIds(s, 'dest', now + 1_002, 'w3'), []); // key still held by w2

    await s.completeJobs('w2', [{ id: id!, outcome: 'done' }]);
    assert.equal((await s.getJob(id!))!.state, 'done');
    // completing twice changes nothing
    await s.completeJobs('w2', [{ id: id!, outcome: 'dead', error: 'late' }]);
    assert.equal((await s.getJob(id!))!.state, 'done');
    assert.deepEqual(await claimIds(s, 'dest', now + 1_003, 'w3'), [later]);
  });

  it('claimInbox with perAccount is fair: one account\'s backlog does not push another\'s events out', async (s) => {
    await s.insertInbox(Array.from({ length: 30 }, (_, i) => ev(`a${i}`, { account: 'big' })));
    await s.insertInbox([ev('b1', { account: 'small' }), ev('b2', { account: 'small' })]);
    const now = Date.now();
    const first = await s.claimInbox(10, 60_000, now, [], 5);
    assert.deepEqual(first.map((e) => e.account), ['big', 'big', 'big', 'big', 'big', 'small', 'small'], 'five of the big account, and the small one\'s too');
    const next = await s.claimInbox(10, 60_000, now, [], 5);
    assert.deepEqual(next.map((e) => e.account), ['big', 'big', 'big', 'big', 'big'], 'the next chunk goes on with the big one');
    assert.deepEqual((await s.claimInbox(100, 60_000, now, ['big'], 5)).length, 0, 'excluded accounts stay out');
  });

  it('renewLeases extends only the leases its worker still holds', async (s) => {
    const [a, b] = await s.enqueueJobs([job('A'), job('B')]);
    const now = Date.now();
    assert.deepEqual(await claimIds(s, 'dest', now, 'w1', 10, 1_000), [a, b]);
    await s.renewLeases('w1', [a!], now + 10_000);
    await s.renewLeases('w2', [b!], now + 10_000); // not w2's: no effect
    assert.deepEqual(await claimIds(s, 'dest', now + 5_000, 'w2', 10, 1_000), [b], 'only the unrenewed lease expired');
    assert.equal((await s.getJob(a!))!.leasedBy, 'w1');
  });

  it('releaseAllClaims makes leased jobs and inbox events claimable at once', async (s) => {
    const [a] = await s.enqueueJobs([job('A')]);
    await s.insertInbox([ev('e1')]);
    const now = Date.now();
    assert.deepEqual(await claimIds(s, 'dest', now, 'dead-worker', 10, 600_000), [a]);
    assert.equal((await s.claimInbox(10, 600_000, now)).length, 1);
    assert.deepEqual(await claimIds(s, 'dest', now + 1, 'w2'), [], 'held by the dead worker');
    assert.deepEqual(await s.releaseAllClaims(), { jobs: 1, inbox: 1 });
    assert.deepEqual(await claimIds(s, 'dest', now + 2, 'w2'), [a]);
    assert.equal((await s.claimInbox(10, 60_000, now + 2)).length, 1);
  });

  it('releaseClaimsOf gives back one worker\'s claims only', async (s) => {
    const [a, b] = await s.enqueueJobs([job('A'), job('B')]);
    const now = Date.now();
    assert.deepEqual(await claimIds(s, 'dest', now, 'stopping', 1, 600_000), [a]);
    assert.deepEqual(await claimIds(s, 'dest', now, 'other', 1, 600_000), [b]);
    assert.equal(await s.releaseClaimsOf('stopping'), 1);
    assert.deepEqual(await claimIds(s, 'dest', now + 1, 'w3'), [a]);
  });

  it('expediteRetries and expediteOne make backed-off jobs of one destination due now', async (s) => {
    const ids = await s.enqueueJobs([job('A'), job('B'), job('C'), job('D', { destination: 'other' })]);
    const now = Date.now();
    const claimed = await s.claimJobs({ destination: 'dest', limit: 10, leaseMs: 60_000, workerId: 'w', now });
    await s.completeJobs('w', claimed.map((j, i) => ({ id: j.id, outcome: 'retry' as const, runAfter: now + 60_000 + i * 1000, error: 'outage' })));
    const other = await s.claimJobs({ destination: 'other', limit: 10, leaseMs: 60_000, workerId: 'w', now });
    await s.completeJobs('w', other.map((j) => ({ id: j.id, outcome: 'retry' as const, runAfter: now + 60_000, error: 'outage' })));
    assert.deepEqual(await claimIds(s, 'dest', now + 1), []);
    assert.equal(await s.expediteOne('dest', now + 1), 1, 'one probe');
    assert.deepEqual(await claimIds(s, 'dest', now + 2, 'w', 10), [ids[0]], 'the job due soonest');
    assert.equal(await s.expediteRetries('dest', now + 3), 2);
    assert.deepEqual(await claimIds(s, 'dest', now + 4, 'w', 10), [ids[1], ids[2]]);
    assert.deepEqual(await claimIds(s, 'other', now + 4, 'w', 10), [], 'other destinations keep their backoff');
  });

  it('a requeued earlier job does not run while a later job of its key is leased', async (s) => {
    const [first, second] = await s.enqueueJobs([job('K'), job('K')]);
    const now = Date.now();
    await claimIds(s, 'dest', now);
    await s.completeJobs('w1', [{ id: first!, outcome: 'dead', error: 'x' }]);
    assert.deepEqual(await claimIds(s, 'dest', now), [second]);
    assert.equal(await s.requeueJobs({ ids: [first!] }), 1);
    assert.deepEqual(await claimIds(s, 'dest', Date.now() + 1_000), []);
    await s.completeJobs('w1', [{ id: second!, outcome: 'done' }]);
    assert.deepEqual(await claimIds(s, 'dest', Date.now() + 1_000), [first]);
  });

  for (const seed of [7, 99]) it(`claims match a reference model over a random mix of enqueue/claim/complete/requeue (seed ${seed})`, async (s) => {
    // The model is the spec: claimable = earliest pending/leased job of its key, due, and no other
    // job of the key under a live lease. Any drift in the store's head bookkeeping shows up here.
    type ModelJob = { id: number; key: string; state: 'pending' | 'leased' | 'done' | 'dead'; runAfter: number; leaseUntil: number; leasedBy: string };
    const rand = mulberry32(seed);
    const pick = <T,>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const model = new Map<number, ModelJob>();
    let now = Date.now() + 10_000_000; // ahead of the wall clock, so requeued jobs (run_after = wall clock) are due
    const keys = ['a', 'b', 'c', 'd'];
    const workers = ['w1', 'w2'];
    const active = (j: ModelJob) => j.state === 'pending' || j.state === 'leased';
    const expectedClaim = (limit: number): number[] => {
      const jobs = [...model.values()].sort((x, y) => x.id - y.id);
      return jobs
        .filter((j) => active(j) && jobs.find((e) => e.key === j.key && active(e))!.id === j.id)
        .filter((j) => (j.state === 'pending' ? j.runAfter <= now : j.leaseUntil < now))
        .filter((j) => !jobs.some((l) => l.key === j.key && l.id !== j.id && l.state === 'leased' && l.leaseUntil >= now))
        .slice(0, limit)
        .map((j) => j.id);
    };

    for (let step = 0; step < 400; step++) {
      now += Math.floor(rand() * 60);
      const op = rand();
      if (op < 0.3) {
        const batch = Array.from({ length: 1 + Math.floor(rand() * 3) }, () => ({ key: pick(keys), runAfter: now + Math.floor(rand() * 100) - 50 }));
        const ids = await s.enqueueJobs(batch.map((b) => job(b.key, { runAfter: b.runAfter })));
        ids.forEach((id, i) => model.set(id, { id, key: batch[i]!.key, state: 'pending', runAfter: batch[i]!.runAfter, leaseUntil: 0, leasedBy: '' }));
      } else if (op < 0.6) {
        const limit = 1 + Math.floor(rand() * 3);
        const workerId = pick(workers);
        const leaseMs = 50 + Math.floor(rand() * 200);
        const expected = expectedClaim(limit);
        const got = await claimIds(s, 'dest', now, workerId, limit, leaseMs);
        assert.deepEqual(got, expected, `step ${step}: claim`);
        for (const id of got) Object.assign(model.get(id)!, { state: 'leased', leaseUntil: now + leaseMs, leasedBy: workerId });
      } else if (op < 0.9) {
        const workerId = pick(workers);
        const leased = [...model.values()].filter((j) => j.state === 'leased');
        if (leased.length === 0) continue;
        const chosen = leased.filter(() => rand() < 0.7);
        const outcomes = chosen.map((j) => {
          const r = rand();
          return r < 0.5
            ? { id: j.id, outcome: 'done' as const }
            : r < 0.8
              ? { id: j.id, outcome: 'retry' as const, runAfter: now + Math.floor(rand() * 150), error: 'later' }
              : { id: j.id, outcome: 'dead' as const, error: 'no' };
        });
        await s.completeJobs(workerId, outcomes);
        for (const o of outcomes) {
          const j = model.get(o.id)!;
          if (j.state !== 'leased' || j.leasedBy !== workerId) continue; // stale: ignored
          if (o.outcome === 'retry') Object.assign(j, { state: 'pending', runAfter: o.runAfter });
          else j.state = o.outcome;
        }
      } else {
        const dead = [...model.values()].filter((j) => j.state === 'dead');
        const ids = dead.filter(() => rand() < 0.5).map((j) => j.id);
        const n = rand() < 0.5 ? await s.requeueJobs({ ids }) : await s.requeueJobs({});
        const revived = n === ids.length && ids.length > 0 ? ids : dead.map((j) => j.id);
        assert.ok(n === ids.length || n === dead.length, `step ${step}: requeue count`);
        for (const id of revived.slice(0, n)) Object.assign(model.get(id)!, { state: 'pending', runAfter: 0 });
      }
    }
    // Drain: with time far ahead, every remaining job must come out in key order.
    for (;;) {
      now += 1_000_000;
      const expected = expectedClaim(100);
      const got = await claimIds(s, 'dest', now, 'drain', 100, 10);
      assert.deepEqual(got, expected);
      if (got.length === 0) break;
      await s.completeJobs('drain', got.map((id) => ({ id, outcome: 'done' as const })));
      for (const id of got) model.get(id)!.state = 'done';
    }
    assert.ok([...model.values()].every((j) => !active(j)));
  });

  sharedTest('concurrent claimers on 3 stores while a 4th enqueues: a key is never held twice, every job is done once, in key order', { timeout: 120_000 }, async () => {
    const db = await backend.fresh();
    const stores = [await db.open(), await db.open(), await db.open()];
    const producer = await db.open();
    try {
      const KEYS = 200;
      const INITIAL = 2_000;
      const HOT = 20;
      const ROUNDS = 20;
      const TOTAL = INITIAL + HOT * ROUNDS;
      await producer.enqueueJobs(Array.from({ length: INITIAL }, (_, i) => job(`key${i % KEYS}`)));
      const holder = new Map<string, number>();
      const doneCount = new Map<number, number>();
      const lastDone = new Map<string, number>();
      let completed = 0;
      let retried = 0;
      let maxHeld = 0;
      let producing = true;
      let lastProgress = Date.now();

      // One job at a time for a few short-lived keys: a new job often lands while the key's only
      // other job is finishing, the race the head hand-over must survive (a lost hand-over leaves
      // the new job waiting forever: "stuck" below).
      const produce = async (): Promise<void> => {
        for (let round = 0; round < ROUNDS; round++) {
          for (let k = 0; k < HOT; k++) {
            await producer.enqueueJobs([job(`hot${k}`)]);
            await sleep(Math.random());
          }
        }
        producing = false;
      };
      const claimer = async (s: Store, n: number): Promise<void> => {
        while (completed < TOTAL) {
          const jobs = await s.claimJobs({ destination: 'dest', limit: 25, leaseMs: 600_000, workerId: `w${n}`, now: Date.now() });
          if (jobs.length === 0) {
            assert.ok(producing || Date.now() - lastProgress < 5_000, `stuck: ${completed} of ${TOTAL} done and nothing claimable`);
            await sleep(1);
            continue;
          }
          for (const j of jobs) {
            assert.equal(holder.get(j.orderingKey), undefined, `key ${j.orderingKey} claimed by w${n} while held by w${holder.get(j.orderingKey)}`);
            holder.set(j.orderingKey, n);
          }
          maxHeld = Math.max(maxHeld, holder.size);
          await sleep(Math.random() * 3);
          const outcomes = jobs.map((j) =>
            Math.random() < 0.1 ? { id: j.id, outcome: 'retry' as const, runAfter: Date.now() + 2, error: 'again' } : { id: j.id, outcome: 'done' as const },
          );
          for (const o of outcomes) {
            const key = jobs.find((j) => j.id === o.id)!.orderingKey;
            if (o.outcome === 'done') {
              assert.ok((lastDone.get(key) ?? 0) < o.id, `key ${key}: job ${o.id} ran after a later one`);
              lastDone.set(key, o.id);
              doneCount.set(o.id, (doneCount.get(o.id) ?? 0) + 1);
              completed++;
            } else retried++;
            // released before the commit: a claim of the next job can only succeed after it
            holder.delete(key);
          }
          await s.completeJobs(`w${n}`, outcomes);
          lastProgress = Date.now();
        }
      };
      await Promise.all([produce(), ...stores.map((s, n) => claimer(s, n))]);

      assert.equal(completed, TOTAL);
      assert.equal(doneCount.size, TOTAL);
      assert.ok([...doneCount.values()].every((c) => c === 1), 'a job was done twice');
      assert.ok(retried > 0);
      const stats = await stores[1]!.stats(Date.now());
      assert.deepEqual(stats.jobs, { pending: 0, leased: 0, done: TOTAL, dead: 0 });
      assert.ok(maxHeld > 1, 'claimers never overlapped; the test proved nothing');
    } finally {
      await Promise.all([...stores, producer].map((s) => s.close()));
      await db.dispose();
    }
  });

  it('enqueueJobs with a kv write sets the key in the same transaction as the jobs', async (s) => {
    const ids = await s.enqueueJobs([job('a'), job('b')], { kv: { key: 'backfill:acc', value: '{"page":1}' } });
    assert.equal(ids.length, 2);
    assert.equal(await s.kvGet('backfill:acc'), '{"page":1}');
    // An expiring value is replaced by a permanent one; no jobs but a kv write is still a write.
    await s.kvSet('backfill:acc', 'old', 10, Date.now());
    assert.deepEqual(await s.enqueueJobs([], { kv: { key: 'backfill:acc', value: '{"page":2}' } }), []);
    await sleep(20);
    assert.equal(await s.kvGet('backfill:acc'), '{"page":2}');
    // A failing insert writes neither: the jobs and the cursor cannot disagree.
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    await assert.rejects(s.enqueueJobs([job('c'), job('d', { payload: circular })], { kv: { key: 'backfill:acc', value: '{"page":3}' } }));
    assert.equal(await s.kvGet('backfill:acc'), '{"page":2}');
    assert.equal((await s.listJobs({})).length, 2);
  });

  it('existingInboxKeys says which dedup keys an account\'s inbox holds, in any state', async (s) => {
    await s.insertInbox([ev('k1'), ev('k2'), ev('k3', { account: 'other' })]);
    const [first] = await s.claimInbox(1, 60_000, Date.now());
    await s.routeInbox([first!.id], []);
    assert.deepEqual([...(await s.existingInboxKeys('acc', ['k1', 'k2', 'k3', 'k4', 'k1']))].sort(), ['k1', 'k2']);
    assert.deepEqual([...(await s.existingInboxKeys('other', ['k1', 'k3']))], ['k3']);
    assert.equal((await s.existingInboxKeys('acc', [])).size, 0);
    const many = Array.from({ length: 1500 }, (_, i) => `n${i}`);
    assert.deepEqual([...(await s.existingInboxKeys('acc', [...many, 'k2']))], ['k2']);
  });

  it('listJobs and requeueJobs filter by ordering key (one lead\'s jobs)', async (s) => {
    const ids = await s.enqueueJobs([job('lead:1'), job('lead:2'), job('lead:1', { destination: 'other' })]);
    const now = Date.now();
    await claimIds(s, 'dest', now);
    await claimIds(s, 'other', now);
    await s.completeJobs('w1', ids.map((id) => ({ id, outcome: 'dead' as const, error: 'x' })));
    assert.deepEqual((await s.listJobs({ orderingKey: 'lead:1' })).map((j) => j.id), [ids[2], ids[0]]);
    assert.deepEqual((await s.listJobs({ orderingKey: 'lead:1', destination: 'dest' })).map((j) => j.id), [ids[0]]);
    assert.equal(await s.requeueJobs({ state: 'dead', orderingKey: 'lead:1' }), 2);
    assert.equal((await s.getJob(ids[1]!))!.state, 'dead');
  });

  it('listJobs withoutInbox: only the jobs no inbox event made (a backfill\'s, an erasure\'s)', async (s) => {
    await s.insertInbox([ev('w1')]);
    const [e] = await s.claimInbox(1, 60_000, Date.now());
    await s.routeInbox([e!.id], [job('lead:7', { inboxId: e!.id })]);
    const [backfilled, other] = await s.enqueueJobs([job('lead:7'), job('lead:8')]);
    assert.equal((await s.listJobs({ orderingKey: 'lead:7' })).length, 2);
    assert.deepEqual((await s.listJobs({ orderingKey: 'lead:7', withoutInbox: true })).map((j) => j.id), [backfilled]);
    assert.deepEqual((await s.listJobs({ withoutInbox: true })).map((j) => j.id), [other, backfilled]);
    assert.deepEqual((await s.listJobs({ orderingKey: 'lead:7', withoutInbox: true, account: 'nope' })), []);
  });

  it('listJobs filters and orders newest first; requeueJobs revives dead jobs', async (s) => {
    const ids = await s.enqueueJobs([job('a', { destination: 'r' }), job('b', { destination: 'r' }), job('c', { destination: 'r' }), job('d', { destination: 'q', account: 'acc2' })]);
    const now = Date.now();
    await claimIds(s, 'r', now);
    await claimIds(s, 'q', now);
    await s.completeJobs('w1', [
      { id: ids[0]!, outcome: 'dead', error: 'e1' },
      { id: ids[1]!, outcome: 'dead', error: 'e2' },
      { id: ids[2]!, outcome: 'done' },
      { id: ids[3]!, outcome: 'dead', error: 'e4' },
    ]);
    assert.deepEqual((await s.listJobs({ state: 'dead' })).map((j) => j.id), [ids[3], ids[1], ids[0]]);
    assert.deepEqual((await s.listJobs({ state: 'dead', destination: 'r', limit: 1 })).map((j) => j.id), [ids[1]]);
    assert.deepEqual((await s.listJobs({ account: 'acc2' })).map((j) => j.id), [ids[3]]);
    assert.deepEqual((await s.listJobs({ since: Date.now() + 60_000 })).map((j) => j.id), []);
    assert.equal((await s.listJobs({ since: now - 60_000 })).length, 4);

    const beforeRequeue = Date.now();
    assert.equal(await s.requeueJobs({ destination: 'r' }), 2);
    const revived = await s.getJob(ids[0]!);
    assert.deepEqual([revived!.state, revived!.attempts, revived!.lastError], ['pending', 0, 'e1']);
    assert.ok(revived!.runAfter <= Date.now());
    assert.ok(revived!.createdAt >= beforeRequeue, 'a replayed job starts a new max age');
    assert.deepEqual(await claimIds(s, 'r', Date.now()), [ids[0], ids[1]]);
    assert.equal(await s.requeueJobs({ destination: 'r' }), 0);
    // chosen ids, any state but leased: a done job is replayed, the leased ones are left alone
    assert.equal(await s.requeueJobs({ ids: [ids[2]!, ids[0]!] }), 1);
    assert.equal((await s.getJob(ids[2]!))!.state, 'pending');
    assert.equal((await s.getJob(ids[0]!))!.state, 'leased');
    assert.equal(await s.requeueJobs({ state: 'dead', since: Date.now() + 60_000 }), 0);
    assert.equal(await s.requeueJobs({}), 1);
    assert.equal(await s.requeueJobs({ ids: [] }), 0);
  });

  it('dueDestinations lists destinations with due or lease-expired jobs', async (s) => {
    const now = Date.now();
    await s.enqueueJobs([
      job('a', { destination: 'd1', runAfter: now - 1 }),
      job('b', { destination: 'd2', runAfter: now + 5_000 }),
      job('c', { destination: 'd3', runAfter: now }),
    ]);
    assert.deepEqual((await s.dueDestinations(now)).sort(), ['d1', 'd3']);
    await claimIds(s, 'd1', now, 'w', 10, 1_000);
    assert.deepEqual((await s.dueDestinations(now)).sort(), ['d3']);
    assert.deepEqual((await s.dueDestinations(now + 1_001)).sort(), ['d1', 'd3']);
    assert.deepEqual((await s.dueDestinations(now + 5_000)).sort(), ['d1', 'd2', 'd3']);
  });

  // ----- delivery log -----

  it('logDeliveries / listDeliveries round-trip and filter', async (s) => {
    const base = { account: 'acc', op: 'upsertPerson', status: 'ok' as const, httpStatus: 200, latencyMs: 12.5, error: null };
    await s.logDeliveries([
      { ...base, jobId: 1, destination: 'cio', subject: 'a@x.io', at: 1_000 },
      { ...base, jobId: null, destination: 'cio', subject: 'b@x.io', at: 2_000, status: 'retry', httpStatus: null, error: 'timeout' },
      { ...base, jobId: 3, destination: 'seg', subject: 'a@x.io', at: 3_000 },
    ]);
    await s.logDeliveries([]);
    const all = await s.listDeliveries({});
    assert.deepEqual(all.map((d) => d.at), [3_000, 2_000, 1_000]);
    const second = all[1]!;
    assert.deepEqual({ ...second, id: 0 }, { id: 0, jobId: null, account: 'acc', destination: 'cio', op: 'upsertPerson', subject: 'b@x.io', status: 'retry', httpStatus: null, latencyMs: 12.5, error: 'timeout', at: 2_000 });
    assert.deepEqual((await s.listDeliveries({ destination: 'cio' })).map((d) => d.at), [2_000, 1_000]);
    assert.deepEqual((await s.listDeliveries({ subject: 'a@x.io' })).map((d) => d.at), [3_000, 1_000]);
    assert.deepEqual((await s.listDeliveries({ since: 2_000 })).map((d) => d.at), [3_000, 2_000]);
    assert.deepEqual((await s.listDeliveries({ limit: 1 })).map((d) => d.at), [3_000]);
  });

  // ----- counters, marks, kv -----

  it('hitCounter counts occurrences in [at - window, at]', async (s) => {
    const t = 1_000_000;
    assert.equal(await s.hitCounter('k', t, 100), 1);
    assert.equal(await s.hitCounter('k', t + 50, 100), 2);
    assert.equal(await s.hitCounter('k', t + 100, 100), 3);
    assert.equal(await s.hitCounter('k', t + 101, 100), 3); // t fell out
    assert.equal(await s.hitCounter('other', t + 101, 100), 1);
    assert.equal(await s.hitCounter('k', t + 400, 100), 1);
  });

  it('concurrent hitCounter calls get distinct counts', async (s) => {
    const counts = await Promise.all(Array.from({ length: 20 }, () => s.hitCounter('burst', 5_000, 1_000)));
    assert.deepEqual(counts.sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i + 1));
  });

  it('tryMark sets a mark only when absent or expired', async (s) => {
    assert.equal(await s.tryMark('m', 1_000, 500), true);
    assert.equal(await s.tryMark('m', 1_200, 500), false);
    assert.equal(await s.tryMark('m', 1_499, 500), false);
    assert.equal(await s.tryMark('m', 1_500, 500), true);
    assert.equal(await s.tryMark('m', 1_600, 500), false);
    assert.equal(await s.tryMark('n', 1_600, 500), true);
    const racers = await Promise.all(Array.from({ length: 10 }, () => s.tryMark('race', 10_000, 1_000)));
    assert.equal(racers.filter(Boolean).length, 1);
  });

  it('kv get/set/delete with ttl', async (s) => {
    assert.equal(await s.kvGet('missing'), null);
    await s.kvSet('a', '1');
    assert.equal(await s.kvGet('a'), '1');
    await s.kvSet('a', '2');
    assert.equal(await s.kvGet('a'), '2');
    await s.kvSet('t', 'fresh', 60_000);
    assert.equal(await s.kvGet('t'), 'fresh');
    await s.kvSet('e', 'old', 1_000, Date.now() - 2_000);
    assert.equal(await s.kvGet('e'), null);
    await s.kvSet('e', 'new');
    assert.equal(await s.kvGet('e'), 'new');
    await s.kvDelete('a');
    assert.equal(await s.kvGet('a'), null);
    await s.kvDelete('a');
  });

  it('kvGetMany returns the set, unexpired keys in one call', async (s) => {
    await s.kvSet('m1', 'one');
    await s.kvSet('m2', 'two', 60_000);
    await s.kvSet('m3', 'gone', 1_000, Date.now() - 2_000);
    assert.deepEqual(await s.kvGetMany(['m1', 'm2', 'm3', 'nope']), new Map([['m1', 'one'], ['m2', 'two']]));
    assert.deepEqual(await s.kvGetMany([]), new Map());
  });

  it('reserveRate counts a send in flight until releaseRate moves it to its answer\'s time', async (s) => {
    const t = 1_700_000_000_000;
    const held = t + 20_000;
    assert.equal(await s.reserveRate('f', 1, 1_000, t, held), 0);
    // Long after the window, the send in flight still counts: it has not been answered.
    assert.ok((await s.reserveRate('f', 1, 1_000, t + 5_000)) > 0, 'the in-flight send holds its slot');
    await s.releaseRate('f', held, t + 5_100);
    assert.ok((await s.reserveRate('f', 1, 1_000, t + 5_200)) > 0, 'its window runs from the answer');
    assert.equal(await s.reserveRate('f', 1, 1_000, t + 6_101), 0);
  });

  it('reserveRate is a sliding window that never admits more than limit', async (s) => {
    const t = 1_000_000;
    assert.equal(await s.reserveRate('b', 3, 1_000, t), 0);
    assert.equal(await s.reserveRate('b', 3, 1_000, t + 10), 0);
    assert.equal(await s.reserveRate('b', 3, 1_000, t + 20), 0);
    assert.equal(await s.reserveRate('b', 3, 1_000, t + 30), 970);
    assert.equal(await s.reserveRate('b', 3, 1_000, t + 999), 1);
    assert.equal(await s.reserveRate('b', 3, 1_000, t + 1_000), 0); // t left (now - window, now]
    assert.equal(await s.reserveRate('b', 3, 1_000, t + 1_001), 9); // oldest left is t + 10
    assert.equal(await s.reserveRate('other', 3, 1_000, t + 1_001), 0);
    assert.equal(await s.reserveRate('zero', 0, 1_000, t), 1_000);

    // Randomized: replay of every granted send must never show more than `limit` in any window.
    const limit = 5;
    const windowMs = 100;
    const granted: number[] = [];
    let now = 2_000_000;
    for (let i = 0; i < 300; i++) {
      now += Math.floor(Math.random() * 15);
      const wait = await s.reserveRate('rnd', limit, windowMs, now);
      if (wait === 0) granted.push(now);
      else assert.ok(wait > 0 && wait <= windowMs);
    }
    for (const at of granted) {
      assert.ok(granted.filter((g) => g > at - windowMs && g <= at).length <= limit, `more than ${limit} sends in the window ending ${at}`);
    }
    assert.ok(granted.length > 20);
  });

  it('concurrent reserveRate calls admit exactly limit', async (s, db) => {
    const stores = backend.shared ? [s, await db.open()] : [s];
    try {
      const waits = await Promise.all(Array.from({ length: 40 }, (_, i) => stores[i % stores.length]!.reserveRate('c', 7, 60_000, 5_000_000)));
      assert.equal(waits.filter((w) => w === 0).length, 7);
      assert.ok(waits.filter((w) => w !== 0).every((w) => w === 60_000));
    } finally {
      if (stores[1]) await stores[1].close();
    }
  });

  // ----- email index -----

  it('failed inbox events are counted and can be requeued', async (s) => {
    await s.insertInbox([1, 2].map((n) => ({ account: 'a', source: 'kommo', kind: 'lead.created', dedupKey: `f${n}`, payload: {}, receivedAt: Date.now() })));
    const [first] = await s.claimInbox(10, 60_000, Date.now());
    await s.failInbox(first!.id, 'mapping broke');
    let stats = await s.stats(Date.now());
    assert.equal(stats.inboxFailed, 1);
    assert.equal(stats.inboxPending, 1, 'the other one is still waiting (under a router lease)');
    assert.equal(await s.requeueInbox(), 1);
    stats = await s.stats(Date.now());
    assert.equal(stats.inboxFailed, 0);
    const again = await s.claimInbox(10, 60_000, Date.now());
    assert.deepEqual(again.map((e) => [e.id, e.attempts]), [[first!.id, 1]]);
  });

  it('indexEmails writes a batch like indexEmail would, duplicates folded to the newest', async (s) => {
    await s.indexEmails([
      { account: 'acc', email: 'A@x.com', leadId: 1, updatedAt: 100 },
      { account: 'acc', email: 'a@x.com ', leadId: 2, updatedAt: 300 },
      { account: 'acc', email: 'a@x.com', leadId: 1, updatedAt: 500 },
      { account: 'acc', email: 'a@x.com', leadId: 1, updatedAt: 200 },
      { account: 'other', email: 'a@x.com', leadId: 9, updatedAt: 100 },
    ]);
    assert.deepEqual(await s.leadsByEmail('acc', 'a@x.com'), [1, 2]);
    assert.deepEqual(await s.leadsByEmail('other', 'a@x.com'), [9]);
    await s.indexEmails([]);
  });

  it('email index: normalized, most recently updated first; forgetEmail erases it and its counters', async (s) => {
    await s.indexEmail('acc', ' Foo@Example.com ', 1, 100);
    await s.indexEmail('acc', 'foo@example.com', 2, 300);
    await s.indexEmail('acc', 'FOO@example.COM', 3, 200);
    await s.indexEmail('acc2', 'foo@example.com', 9, 100);
    assert.deepEqual(await s.leadsByEmail('acc', 'foo@EXAMPLE.com  '), [2, 3, 1]);
    await s.indexEmail('acc', 'foo@example.com', 1, 400);
    assert.deepEqual(await s.leadsByEmail('acc', 'foo@example.com'), [1, 2, 3]);
    await s.indexEmail('acc', 'foo@example.com', 1, 50); // an older update does not move it back
    assert.deepEqual(await s.leadsByEmail('acc', 'foo@example.com'), [1, 2, 3]);
    assert.deepEqual(await s.leadsByEmail('acc', 'nobody@example.com'), []);

    assert.equal(await s.hitCounter('opens:foo@example.com', 1_000, 10_000), 1);
    assert.equal(await s.hitCounter('opens:bar@example.com', 1_000, 10_000), 1);
    assert.equal(await s.tryMark('hot:Foo@Example.com', 1_000, 10_000), true);

    await s.forgetEmail('acc', 'FOO@example.com');
    assert.deepEqual(await s.leadsByEmail('acc', 'foo@example.com'), []);
    assert.deepEqual(await s.leadsByEmail('acc2', 'foo@example.com'), [9]);
    assert.equal(await s.hitCounter('opens:foo@example.com', 1_001, 10_000), 1);
    assert.equal(await s.hitCounter('opens:bar@example.com', 1_001, 10_000), 2);
    assert.equal(await s.tryMark('hot:Foo@Example.com', 1_001, 10_000), true);
    await s.forgetEmail('acc', '  '); // must not wipe every counter
    assert.equal(await s.hitCounter('opens:bar@example.com', 1_002, 10_000), 3);
  });

  it('scrubPerson: erases our own history about one person, and nothing else', async (s) => {
    const ann = 'ann@example.com';
    const bob = 'bob@example.com';
    await s.insertInbox([ev('a1', { payload: { email: ann, secret: 'ann-data' } }), ev('b1', { payload: { email: bob } }), ev('a-pending', { payload: { email: ann } })]);
    const claimed = await s.claimInbox(2, 60_000, Date.now());
    const [a1, b1] = claimed;
    await s.routeInbox(claimed.map((r) => r.id), [], [{ id: a1!.id, leadId: 7, email: ann }, { id: b1!.id, leadId: 8, email: bob }]);
    const annPayload = { subject: ann, ops: [{ kind: 'upsertPerson', person: { email: ann } }] };
    const [annDone, annDead, annNote, annQueued, bobDone] = await s.enqueueJobs([
      job('lead:7', { payload: annPayload }),
      job('lead:7b', { payload: annPayload }),
      job('lead:7c', { destination: 'acc/kommo', payload: { subject: 'lead 7', ops: [{ kind: 'addNote', leadId: 7, text: `Intent signal: tag x (ANN@example.com, via encharge)` }] } }),
      job('lead:7d', { payload: annPayload }),
      job('lead:8', { payload: { subject: bob, ops: [{ kind: 'upsertPerson', person: { email: bob } }] } }),
    ]);
    const now = Date.now();
    await claimIds(s, 'dest', now);
    await claimIds(s, 'acc/kommo', now);
    await s.completeJobs('w1', [
      { id: annDone!, outcome: 'done' },
      { id: annDead!, outcome: 'dead', error: 'HTTP 400' },
      { id: annNote!, outcome: 'done' },
      { id: annQueued!, outcome: 'retry', runAfter: now + 60_000, error: 'HTTP 503' },
      { id: bobDone!, outcome: 'done' },
    ]);
    const line = (jobId: number, subject: string): DeliveryRecord => ({ jobId, account: 'acc', destination: 'dest', op: 'upsertPerson', subject, status: 'ok', httpStatus: 200, latencyMs: 1, error: null, at: now });
    await s.logDeliveries([line(annDone!, ann), line(annNote!, 'lead 7'), line(annQueued!, ann), line(bobDone!, bob)]);

    assert.deepEqual(await s.scrubPerson('other-account', ann), { events: 0, jobs: 0, deliveries: 0 });
    assert.deepEqual(await s.scrubPerson('acc', ''), { events: 0, jobs: 0, deliveries: 0 });
    // Ann's routed event, her finished jobs (the note names her too) and every log line about her.
    assert.deepEqual(await s.scrubPerson('acc', ' Ann@Example.com '), { events: 1, jobs: 3, deliveries: 3 });

    assert.deepEqual((await s.getInbox(a1!.id))?.payload, { erased: true });
    assert.deepEqual(await s.listInbox({ email: ann }), []);
    assert.deepEqual((await s.getInbox(b1!.id))?.payload, { email: bob });
    assert.equal((await s.listInbox({ email: bob })).length, 1);
    // A pending event (not routed yet) and a queued job stay: they are work still to do.
    assert.equal((await s.listInbox({ account: 'acc' })).length, 3);
    for (const id of [annDone!, annDead!, annNote!]) assert.equal(await s.getJob(id), null, `job ${id} deleted`);
    assert.equal((await s.getJob(annQueued!))?.state, 'pending');
    assert.equal((await s.getJob(bobDone!))?.state, 'done');
    assert.deepEqual((await s.listDeliveries({ subject: ann })), []);
    assert.equal((await s.listDeliveries({ subject: bob })).length, 1);
    assert.equal((await s.deliveriesByJobs([annNote!])).length, 0);
    assert.equal((await s.stats(Date.now())).jobs.dead, 0);
  });

  // ----- stats, prune -----

  it('stats reports queue numbers', async (s) => {
    await s.insertInbox([ev('i1'), ev('i2'), ev('i3')]);
    const [routed] = await s.claimInbox(1, 1_000, Date.now());
    await s.routeInbox([routed!.id], []);
    const ids = await s.enqueueJobs([
      job('a', { destination: 'x' }),
      job('b', { destination: 'x' }),
      job('c', { destination: 'x' }),
      job('d', { destination: 'x' }),
      job('e', { destination: 'y' }),
      job('f', { destination: 'y' }),
    ]);
    const now = Date.now();
    await claimIds(s, 'x', now, 'w', 2); // a, b
    await claimIds(s, 'y', now, 'w', 1); // e
    await s.completeJobs('w', [
      { id: ids[0]!, outcome: 'done' },
      { id: ids[4]!, outcome: 'dead', error: 'no' },
    ]);
    const stats = await s.stats(now);
    assert.deepEqual(stats, {
      inboxPending: 2,
      inboxFailed: 0,
      jobs: { pending: 3, leased: 1, done: 1, dead: 1 },
      depthByDestination: { x: 3, y: 1 },
      deadByDestination: { y: 1 },
      oldestPendingAt: (await s.getJob(ids[1]!))!.createdAt,
    });
    const empty = await (async () => {
      await s.completeJobs('w', [{ id: ids[1]!, outcome: 'done' }]);
      return s.stats(now);
    })();
    assert.equal(empty.jobs.leased, 0);
  });

  it('prune removes old done jobs, routed inbox rows and delivery logs only', async (s) => {
    await s.insertInbox([ev('old', { receivedAt: 1_000 }), ev('pending', { receivedAt: 1_000 }), ev('new', { receivedAt: Date.now() + 3_600_000 })]);
    const claimed = await s.claimInbox(10, 1_000, Date.now());
    const byKey = new Map(claimed.map((r) => [r.dedupKey, r.id]));
    await s.routeInbox([byKey.get('old')!, byKey.get('new')!], []);
    const ids = await s.enqueueJobs([job('done'), job('dead'), job('pending', { runAfter: Date.now() + 60_000 })]);
    await claimIds(s, 'dest', Date.now());
    await s.completeJobs('w1', [
      { id: ids[0]!, outcome: 'done' },
      { id: ids[1]!, outcome: 'dead', error: 'x' },
    ]);
    const base = { jobId: null, account: 'acc', destination: 'd', op: 'op', subject: 's', status: 'ok' as const, httpStatus: 200, latencyMs: 1, error: null };
    await s.logDeliveries([{ ...base, at: 1_000 }, { ...base, at: Date.now() + 3_600_000 }]);

    assert.equal(await s.prune(500), 0);
    assert.equal(await s.prune(Date.now() + 1), 3);
    assert.equal(await s.getJob(ids[0]!), null);
    assert.equal((await s.getJob(ids[1]!))!.state, 'dead');
    assert.equal((await s.getJob(ids[2]!))!.state, 'pending');
    assert.equal((await s.listDeliveries({})).length, 1);
    assert.equal((await s.stats(Date.now())).inboxPending, 1);
    // a pruned event's key is free again (only routed rows past retention are pruned)
    assert.deepEqual(await s.insertInbox([ev('old'), ev('new')]), { inserted: 1, duplicates: 1 });
    assert.equal(await s.prune(Date.now() + 1), 0);
  });

  // ----- dashboard: events, lead timeline, failures -----

  /** Routes every pending event; facts and jobs per dedup key. */
  async function routeAll(s: Store, facts: Record<string, Omit<InboxFacts, 'id'>>, jobsFor: Record<string, NewJob[]> = {}): Promise<Map<string, number>> {
    const rows = await s.claimInbox(1000, 60_000, Date.now());
    const ids = new Map(rows.map((r) => [r.dedupKey, r.id]));
    const jobs = rows.flatMap((r) => (jobsFor[r.dedupKey] ?? []).map((j) => ({ ...j, inboxId: r.id })));
    await s.routeInbox(rows.map((r) => r.id), jobs, rows.filter((r) => facts[r.dedupKey]).map((r) => ({ id: r.id, ...facts[r.dedupKey] })));
    return ids;
  }

  it('listInbox: newest first, every filter, cursor pages; getInbox has the payload and the facts', async (s) => {
    await s.insertInbox([
      ev('k1', { kind: 'lead.created', receivedAt: 1_000 }),
      ev('k2', { kind: 'lead.stage_changed', receivedAt: 2_000 }),
      ev('e1', { source: 'cio', kind: 'email.opened', receivedAt: 3_000 }),
      ev('e2', { source: 'cio', kind: 'email.opened', receivedAt: 4_000 }),
      ev('o1', { account: 'other', kind: 'lead.created', receivedAt: 5_000 }),
      ev('p1', { kind: 'lead.created', receivedAt: 6_000 }),
    ]);
    // p1 stays pending: the claim below takes everything, so insert it afterwards instead
    const ids = await routeAll(s, {
      k1: { leadId: 7, email: 'ann@x.io' },
      k2: { leadId: 7, email: 'ann@x.io' },
      e1: { leadId: 7, email: 'ann@x.io' },
      e2: { email: 'nobody@x.io', note: 'no Kommo lead has this email' },
      o1: { leadId: 8 },
    }, {
      k1: [job('lead:7', { destination: 'acc/cio' }), job('lead:7', { destination: 'acc/kommo' })],
      k2: [job('lead:7', { destination: 'acc/cio' })],
      e1: [job('lead:7', { destination: 'acc/kommo' })],
    });
    await s.insertInbox([ev('late', { kind: 'lead.won', receivedAt: 7_000 })]);
    const keys = async (f: InboxFilter) => {
      const rows = await s.listInbox(f);
      const byId = new Map([...ids].map(([k, id]) => [id, k]));
      return rows.map((r) => byId.get(r.id) ?? 'late');
    };
    assert.deepEqual(await keys({}), ['late', 'p1', 'o1', 'e2', 'e1', 'k2', 'k1']);
    assert.deepEqual(await keys({ account: 'acc', source: 'cio' }), ['e2', 'e1']);
    assert.deepEqual(await keys({ kind: 'lead.created' }), ['p1', 'o1', 'k1']);
    assert.deepEqual(await keys({ state: 'pending' }), ['late']);
    assert.deepEqual(await keys({ email: 'ann@x.io' }), ['e1', 'k2', 'k1']);
    assert.deepEqual(await keys({ leadId: 7 }), ['e1', 'k2', 'k1']);
    assert.deepEqual(await keys({ destination: 'acc/cio' }), ['k2', 'k1']);
    assert.deepEqual(await keys({ destination: 'acc/kommo', kind: 'email.opened' }), ['e1']);
    assert.deepEqual(await keys({ unrouted: true }), ['e2']);
    assert.deepEqual(await keys({ limit: 2 }), ['late', 'p1']);
    const page1 = await s.listInbox({ limit: 3 });
    assert.deepEqual(await keys({ limit: 3, before: page1[2]!.id }), ['e2', 'e1', 'k2']);

    const e2 = (await s.listInbox({ email: 'nobody@x.io' }))[0]!;
    assert.deepEqual({ ...e2, id: 0 }, {
      id: 0, account: 'acc', source: 'cio', kind: 'email.opened', receivedAt: 4_000, state: 'routed', attempts: 1,
      leadId: null, email: 'nobody@x.io', note: 'no Kommo lead has this email', lastError: null,
    } satisfies InboxSummary);
    const detail = await s.getInbox(ids.get('k1')!);
    assert.equal(detail?.dedupKey, 'k1');
    assert.deepEqual(detail?.payload, { key: 'k1', nested: { n: 1, s: 'é"\'\\' } });
    assert.equal(detail?.leadId, 7);
    assert.equal(await s.getInbox(999_999), null);

    const jobs = await s.jobsByInbox([ids.get('k1')!, ids.get('e1')!]);
    assert.deepEqual(jobs.map((j) => [j.inboxId, j.destination]), [[ids.get('k1'), 'acc/cio'], [ids.get('k1'), 'acc/kommo'], [ids.get('e1'), 'acc/kommo']]);
    assert.deepEqual(await s.jobsByInbox([]), []);
  });

  it('listInbox by job state finds the events whose jobs are dead letters; failed events are unrouted too', async (s) => {
    await s.insertInbox([ev('a'), ev('b'), ev('c')]);
    const ids = await routeAll(s, {}, { a: [job('lead:1')], b: [job('lead:2')] });
    const [ja, jb] = await claimIds(s, 'dest', Date.now());
    await s.completeJobs('w1', [{ id: ja!, outcome: 'dead', error: 'invalid: HTTP 400' }, { id: jb!, outcome: 'done' }]);
    assert.deepEqual((await s.listInbox({ jobState: 'dead' })).map((r) => r.id), [ids.get('a')]);
    assert.deepEqual((await s.listInbox({ jobState: 'dead', destination: 'other' })).map((r) => r.id), []);
    await s.insertInbox([ev('f')]);
    const [f] = await s.claimInbox(10, 60_000, Date.now());
    await s.failInbox(f!.id, 'mapping: no such field');
    const unrouted = await s.listInbox({ unrouted: true });
    assert.deepEqual(unrouted.map((r) => [r.id, r.state, r.lastError]), [[f!.id, 'failed', 'mapping: no such field']]);
  });

  it('requeueInboxIds routes failed and noted events again, nothing else', async (s) => {
    await s.insertInbox([ev('noted'), ev('plain'), ev('failed')]);
    const rows = await s.claimInbox(10, 60_000, Date.now());
    const id = (k: string) => rows.find((r) => r.dedupKey === k)!.id;
    await s.failInbox(id('failed'), 'broken');
    await s.routeInbox([id('noted'), id('plain')], [], [{ id: id('noted'), email: 'x@y.io', note: 'no Kommo lead has this email' }]);
    assert.equal(await s.requeueInboxIds([id('noted'), id('plain'), id('failed'), 999_999]), 2);
    assert.equal(await s.requeueInboxIds([]), 0);
    const again = await s.claimInbox(10, 60_000, Date.now());
    assert.deepEqual(again.map((r) => r.dedupKey), ['noted', 'failed']);
    assert.equal(again[0]!.attempts, 1, 'attempts start over');
    assert.equal((await s.getInbox(id('noted')))?.note, null, 'the old reason is gone');
  });

  it('discardJobs finishes dead letters only, with the reason; replay --dead no longer sees them', async (s) => {
    const [a, b, c] = await s.enqueueJobs([job('a'), job('b'), job('c')]);
    await claimIds(s, 'dest', Date.now());
    await s.completeJobs('w1', [{ id: a!, outcome: 'dead', error: 'invalid' }, { id: b!, outcome: 'dead', error: 'invalid' }, { id: c!, outcome: 'retry', runAfter: 0, error: 'x' }]);
    assert.equal(await s.discardJobs([a!, c!], 'bad address, told sales'), 1);
    assert.equal(await s.discardJobs([], 'x'), 0);
    const da = await s.getJob(a!);
    assert.equal(da?.state, 'done');
    assert.equal(da?.discardReason, 'bad address, told sales');
    assert.equal((await s.getJob(c!))?.state, 'pending', 'not dead: untouched');
    assert.equal((await s.getJob(b!))?.discardReason, undefined);
    assert.deepEqual((await s.stats(Date.now())).deadByDestination, { dest: 1 });
    assert.equal(await s.requeueJobs({ state: 'dead' }), 1, 'only the one still dead');
  });

  it('deliveriesByJobs, deliveryBuckets, recentLatencies, inboxBuckets, oldestPendingByDestination', async (s) => {
    const base = { account: 'acc', op: 'upsertPerson', status: 'ok' as const, httpStatus: 200, error: null };
    await s.logDeliveries([
      { ...base, jobId: 1, destination: 'acc/cio', subject: 'a', latencyMs: 10, at: 60_000 },
      { ...base, jobId: 1, destination: 'acc/cio', subject: 'a', latencyMs: 20, at: 61_000, status: 'retry' },
      { ...base, jobId: 2, destination: 'acc/cio', subject: 'a', latencyMs: 30, at: 125_000 },
      { ...base, jobId: 3, destination: 'acc/kommo', subject: 'a', latencyMs: 40, at: 126_000 },
      { ...base, jobId: null, destination: 'acc/cio', subject: 'a', latencyMs: 50, at: 10_000 },
    ]);
    assert.deepEqual((await s.deliveriesByJobs([1, 3])).map((d) => [d.jobId, d.latencyMs]), [[1, 10], [1, 20], [3, 40]]);
    assert.deepEqual(await s.deliveriesByJobs([]), []);
    const buckets = (await s.deliveryBuckets(60_000, 60_000)).map((b) => `${b.destination} ${b.at} ${b.status} ${b.n}`).sort();
    assert.deepEqual(buckets, ['acc/cio 120000 ok 1', 'acc/cio 60000 ok 1', 'acc/cio 60000 retry 1', 'acc/kommo 120000 ok 1']);
    assert.deepEqual(await s.recentLatencies('acc/cio', 61_000, 10), [30, 20]);
    assert.deepEqual(await s.recentLatencies('acc/cio', 0, 1), [50], 'the newest row, whatever its time');
    assert.deepEqual(await s.recentLatencies('acc/cio', 999_000, 10), []);

    await s.insertInbox([ev('a', { receivedAt: 60_500 }), ev('b', { receivedAt: 61_500, source: 'cio' }), ev('c', { receivedAt: 130_000 }), ev('d', { receivedAt: 1_000 })]);
    const [a] = await s.claimInbox(1, 60_000, Date.now());
    await s.routeInbox([a!.id], []);
    const inbox = (await s.inboxBuckets(60_000, 60_000)).map((b) => `${b.account} ${b.source} ${b.at} ${b.n}`).sort();
    assert.deepEqual(inbox, ['acc cio 60000 1', 'acc kommo 120000 1', 'acc kommo 60000 1']);

    assert.deepEqual(await s.oldestPendingByDestination(), {});
    const before = Date.now();
    await s.enqueueJobs([job('x', { destination: 'd1' }), job('y', { destination: 'd2' })]);
    const oldest = await s.oldestPendingByDestination();
    assert.deepEqual(Object.keys(oldest).sort(), ['d1', 'd2']);
    assert.ok(oldest.d1! >= before && oldest.d1! <= Date.now());
  });

  // ----- withLock -----

  it('withLock runs one holder at a time per name, releases on error, returns the result', async (s, db) => {
    const stores = backend.shared ? [s, await db.open()] : [s, s];
    try {
      let inside = 0;
      let maxInside = 0;
      const order: number[] = [];
      await Promise.all(
        Array.from({ length: 12 }, (_, i) =>
          stores[i % 2]!.withLock('refresh', async () => {
            inside++;
            maxInside = Math.max(maxInside, inside);
            await sleep(3);
            order.push(i);
            inside--;
          }),
        ),
      );
      assert.equal(maxInside, 1);
      assert.equal(order.length, 12);

      await assert.rejects(stores[1]!.withLock('refresh', async () => Promise.reject(new Error('boom'))), /boom/);
      assert.equal(await stores[0]!.withLock('refresh', async () => 42), 42);

      // different names do not wait for each other
      let releaseA = (): void => {};
      const holdingA = stores[0]!.withLock('a', () => new Promise<void>((r) => (releaseA = r)));
      await sleep(20);
      const b = await Promise.race([stores[1]!.withLock('b', async () => 'b'), sleep(2_000).then(() => 'timeout')]);
      assert.equal(b, 'b');
      releaseA();
      await holdingA;
    } finally {
      if (backend.shared) await stores[1]!.close();
    }
  });

  it('timing: 10,000 concurrent insertInbox calls', async (s, _db, t) => {
    const started = performance.now();
    const results = await Promise.all(Array.from({ length: 10_000 }, (_, i) => s.insertInbox([ev(`t${i}`)])));
    const ms = performance.now() - started;
    assert.equal(results.reduce((n, r) => n + r.inserted, 0), 10_000);
    t.diagnostic(`${backend.name}: 10,000 concurrent insertInbox calls took ${ms.toFixed(0)} ms (${Math.round(10_000 / (ms / 1000))} events/s)`);
  });
}

// ---------- implementation-specific checks ----------

describe('store URLs', () => {
  test('openStore rejects an unknown scheme, naming the accepted forms', async () => {
    await assert.rejects(openStore('mysql://u:secret@h/db'), (err: Error) => {
      assert.match(err.message, /sqlite:\.\/file\.db/);
      assert.match(err.message, /postgres:\/\//);
      assert.doesNotMatch(err.message, /secret/);
      return true;
    });
  });
});

describe('sqlite specifics', () => {
  test('a write blocked past busy_timeout fails with STORE_UNAVAILABLE', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ks-busy-'));
    const file = path.join(dir, 'ks.db');
    const store = await openSqliteStore(file, { busyTimeoutMs: 50 });
    await store.migrate();
    const other = new Database(file);
    try {
      other.exec('BEGIN IMMEDIATE');
      await assert.rejects(store.insertInbox([ev('a')]), (err: unknown) => {
        assert.ok(err instanceof StoreUnavailableError);
        assert.equal(err.code, 'STORE_UNAVAILABLE');
        return true;
      });
      other.exec('ROLLBACK');
      assert.deepEqual(await store.insertInbox([ev('a')]), { inserted: 1, duplicates: 0 });
    } finally {
      other.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('inserts arriving while the WAL fsync runs are held, then committed together and fsynced next', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ks-held-'));
    const file = path.join(dir, 'ks.db');
    // Real fsyncs, started only when the test lets them.
    const waiting: Array<() => void> = [];
    let manual = true;
    const walFiles: WalFiles = {
      open: (f) => openSync(f, 'r+'),
      fsync: (fd, done) => (manual ? waiting.push(() => fsync(fd, done)) : fsync(fd, done)),
      close: (fd) => closeSync(fd),
    };
    const store = await openSqliteStore(file, { walFiles });
    await store.migrate();
    const reader = new Database(file, { readonly: true });
    const committed = (): number => (reader.prepare('SELECT count(*) AS n FROM ks_inbox').get() as { n: number }).n;
    const turn = (): Promise<void> => new Promise((r) => setImmediate(r));
    try {
      const a = store.insertInbox([ev('a')]);
      await turn();
      assert.equal(committed(), 1);
      assert.equal(waiting.length, 1, "a's fsync runs");
      const b = store.insertInbox([ev('b')]);
      await turn();
      const c = store.insertInbox([ev('c'), ev('d')]);
      await turn();
      assert.equal(committed(), 1, 'b, c and d wait for the running fsync instead of committing turn by turn');
      waiting.shift()!();
      assert.deepEqual(await a, { inserted: 1, duplicates: 0 });
      assert.equal(committed(), 4, 'held inserts committed at once when it ended');
      assert.equal(waiting.length, 1, 'and share the next fsync');
      waiting.shift()!();
      assert.deepEqual(await Promise.all([b, c]), [{ inserted: 1, duplicates: 0 }, { inserted: 2, duplicates: 0 }]);
      assert.equal(waiting.length, 0);
    } finally {
      manual = false;
      for (const go of waiting.splice(0)) go();
      reader.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a file store is in WAL mode', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ks-wal-'));
    const file = path.join(dir, 'ks.db');
    const store = await openSqliteStore(file);
    await store.migrate();
    const other = new Database(file);
    try {
      assert.equal(other.pragma('journal_mode', { simple: true }), 'wal');
    } finally {
      other.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('upgrading a version-2 database keeps every inbox payload (migration 3 moves them)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ks-upgrade-'));
    const file = path.join(dir, 'ks.db');
    const old = new Database(file);
    try {
      old.exec('CREATE TABLE ks_schema_migrations (id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)');
      for (const m of sqliteMigrations.filter((m) => m.id <= 2)) {
        old.exec(m.sql);
        old.prepare('INSERT INTO ks_schema_migrations VALUES (?, ?, ?)').run(m.id, m.name, 0);
      }
      old.prepare(`INSERT INTO ks_inbox (account, source, kind, dedup_key, payload, received_at) VALUES ('acc', 'kommo', 'lead.won', 'k1', '{"n":1}', 1)`).run();
    } finally {
      old.close();
    }
    const store = await openSqliteStore(file);
    try {
      await store.migrate();
      const [row] = await store.claimInbox(10, 60_000, Date.now());
      assert.deepEqual(row?.payload, { n: 1 });
      assert.deepEqual(await store.insertInbox([ev('k1')]), { inserted: 0, duplicates: 1 }, 'the dedup index survived the column drop');
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('prune removes a routed event together with its payload row', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ks-prune-'));
    const file = path.join(dir, 'ks.db');
    const store = await openSqliteStore(file);
    const db = new Database(file);
    try {
      await store.migrate();
      await store.insertInbox([ev('a', { receivedAt: 1_000 }), ev('b', { receivedAt: 1_000 }), ev('c', { receivedAt: 1_000 })]);
      const claimed = await store.claimInbox(10, 1_000, Date.now());
      await store.routeInbox(claimed.filter((r) => r.dedupKey !== 'c').map((r) => r.id), []);
      assert.equal(await store.prune(Date.now()), 2);
      const count = (table: string) => (db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n;
      assert.equal(count('ks_inbox'), 1);
      assert.equal(count('ks_inbox_payloads'), 1, 'no payload outlives its inbox row');
    } finally {
      db.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('synchronous=normal is accepted', async () => {
    const store = await openSqliteStore(':memory:', { synchronous: 'normal' });
    await store.migrate();
    assert.deepEqual(await store.insertInbox([ev('a')]), { inserted: 1, duplicates: 0 });
    await store.close();
  });
});

describe('postgres specifics', async () => {
  await pgTest('upgrading a version-2 database keeps every inbox payload (migration 3 moves them)', async () => {
    const db = await freshSchema();
    const schema = new URL(db.url).searchParams.get('schema');
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    try {
      await c.query(`SET search_path TO ${schema}`);
      await c.query('CREATE TABLE ks_schema_migrations (id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)');
      for (const m of postgresMigrations.filter((m) => m.id <= 2)) {
        await c.query(m.sql);
        await c.query('INSERT INTO ks_schema_migrations VALUES ($1, $2, 0)', [m.id, m.name]);
      }
      await c.query(`INSERT INTO ks_inbox (account, source, kind, dedup_key, payload, received_at) VALUES ('acc', 'kommo', 'lead.won', 'k1', '{"n":1}', 1)`);
    } finally {
      await c.end();
    }
    const store = await openStore(db.url);
    try {
      await store.migrate();
      const [row] = await store.claimInbox(10, 60_000, Date.now());
      assert.deepEqual(row?.payload, { n: 1 });
      assert.deepEqual(await store.insertInbox([ev('k1')]), { inserted: 0, duplicates: 1 });
    } finally {
      await store.close();
      await db.dispose();
    }
  });

  test('an unreachable server gives STORE_UNAVAILABLE, not a crash', async () => {
    const store = await openPostgresStore('postgres://postgres@127.0.0.1:1/test', { connectTimeoutMs: 1_000 });
    try {
      const calls = [
        () => store.ping(),
        () => store.insertInbox([ev('a')]),
        () => store.claimJobs({ destination: 'd', limit: 1, leaseMs: 1, workerId: 'w', now: 0 }),
        () => store.withLock('x', async () => 1),
      ];
      for (const call of calls) {
        await assert.rejects(call(), (err: unknown) => {
          assert.ok(err instanceof StoreUnavailableError, String(err));
          assert.equal(err.code, 'STORE_UNAVAILABLE');
          return true;
        });
      }
    } finally {
      await store.close();
    }
  });
});

// ---------- run ----------

describe(sqliteFile.name, () => conformance(sqliteFile));
describe(sqliteMemory.name, () => conformance(sqliteMemory));

const unreachable = await postgresUnreachable(PG_URL);
if (unreachable === null) {
  describe('postgres', () => conformance(postgres()));
} else if (process.env.REQUIRE_POSTGRES === '1') {
  test('postgres', () => assert.fail(`PostgreSQL not reachable at ${PG_URL} (${unreachable}) and REQUIRE_POSTGRES=1`));
} else {
  test('postgres', (t) => t.skip(`PostgreSQL not reachable at ${PG_URL}; set TEST_DATABASE_URL`));
}
