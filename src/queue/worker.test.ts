/**
 * The worker's decisions on a real (in-memory SQLite) store: done, retry with backoff and
 * Retry-After as a floor, dead letters for permanent failures, too many attempts, too old, and
 * unreadable job rows. The destination is a scripted stand-in: the worker is the subject here
 * (every real destination has its own conformance suite).
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import pino from 'pino';
import type { ItemResult, SyncOp } from '../destinations/types.js';
import { Metrics } from '../observability/metrics.js';
import { openSqliteStore } from '../store/sqlite.js';
import type { Store } from '../store/store.js';
import { retryDelay } from './backoff.js';
import { SYNC_OPS_V1 } from './jobs.js';
import { Worker, type DeliveryTarget } from './worker.js';

const op = (n: number): SyncOp => ({ kind: 'trackEvent', person: { email: `p${n}@x.com` }, name: 'e', properties: { n }, timestamp: 0, messageId: `m${n}` });
const policy = { base: 1000, factor: 4, max: 600_000 };

describe('retryDelay', () => {
  it('grows about x4 from 1 s, capped at 10 min, with +-20% jitter', () => {
    assert.equal(retryDelay(1, policy, undefined, () => 0.5), 1000);
    assert.equal(retryDelay(2, policy, undefined, () => 0.5), 4000);
    assert.equal(retryDelay(4, policy, undefined, () => 0.5), 64_000);
    assert.equal(retryDelay(20, policy, undefined, () => 0.5), 600_000);
    assert.equal(retryDelay(2, policy, undefined, () => 0), 3200);
    assert.equal(retryDelay(2, policy, undefined, () => 1), 4800);
  });
  it('never comes back sooner than Retry-After', () => {
    assert.equal(retryDelay(1, policy, 30_000, () => 0.5), 30_000);
    assert.equal(retryDelay(5, policy, 30_000, () => 0.5), 256_000);
  });
});

describe('Worker', () => {
  let store: Store;
  let script: (ops: SyncOp[]) => ItemResult[];
  let calls: SyncOp[][];
  const target = (): DeliveryTarget => ({
    key: 'acme/test',
    account: 'acme',
    maxBatch: 50,
    jobType: SYNC_OPS_V1,
    deliver: async (ops) => {
      calls.push(ops);
      return script(ops);
    },
  });
  const worker = (over: Partial<ConstructorParameters<typeof Worker>[0]> = {}) => new Worker({
    store, log: pino({ level: 'silent' }), targets: [target()], batchSize: 50, leaseMs: 60_000, maxAgeMs: 72 * 3_600_000,
    maxAttempts: 500, pollMs: 10, backoff: policy, workerId: 'w1', ...over,
  });
  const enqueue = (n: number, extra: { type?: string; payload?: unknown } = {}) => store.enqueueJobs(Array.from({ length: n }, (_, i) => ({
    account: 'acme', destination: 'acme/test', type: extra.type ?? SYNC_OPS_V1, orderingKey: `k${i}`, payload: extra.payload ?? { subject: `p${i}@x.com`, ops: [op(i)] },
  })));

  beforeEach(async () => {
    store = await openSqliteStore(':memory:');
    await store.migrate();
    calls = [];
    script = (ops) => ops.map(() => ({ ok: true }));
  });
  afterEach(() => store.close());

  it('delivers a batch in one call and records every operation', async () => {
    await enqueue(3);
    assert.equal(await worker().round(target()), 3);
    assert.equal(calls.length, 1);
    assert.equal(calls[0]!.length, 3);
    const s = await store.stats(Date.now());
    assert.equal(s.jobs.done, 3);
    const log = await store.listDeliveries({ destination: 'acme/test' });
    assert.equal(log.length, 3);
    assert.ok(log.every((d) => d.status === 'ok' && d.op === 'trackEvent'));
  });

  it('a retry is scheduled with backoff and Retry-After as a floor; a permanent failure is dead-lettered with its reason', async () => {
    const [a, b] = await enqueue(2);
    script = (ops) => ops.map((o): ItemResult => (o.kind === 'trackEvent' && o.properties.n === 0
      ? { retry: { reason: 'HTTP 429', afterMs: 30_000 }, httpStatus: 429 }
      : { fail: { reason: 'name is blank', code: 'invalid' }, httpStatus: 400 }));
    const before = Date.now();
    await worker().round(target());
    const retried = (await store.getJob(a!))!;
    assert.equal(retried.state, 'pending');
    assert.equal(retried.lastError, 'HTTP 429');
    assert.ok(retried.runAfter >= before + 30_000 && retried.runAfter < Date.now() + 31_000, 'after Retry-After');
    const dead = (await store.getJob(b!))!;
    assert.equal(dead.state, 'dead');
    assert.equal(dead.lastError, 'invalid: name is blank');
    const log = await store.listDeliveries({});
    assert.deepEqual(log.map((d) => d.status).sort(), ['failed', 'retry']);
  });

  it('gives up after maxAttempts or maxAge, with the reason; that last attempt is recorded as failed', async () => {
    const [id] = await enqueue(1);
    script = (ops) => ops.map(() => ({ retry: { reason: 'HTTP 503' } }));
    const metrics = new Metrics(store, { defaultMetrics: false });
    await worker({ maxAttempts: 1, metrics }).round(target());
    const job = (await store.getJob(id!))!;
    assert.equal(job.state, 'dead');
    assert.match(job.lastError!, /gave up after 1 attempts: HTTP 503/);
    assert.deepEqual((await store.listDeliveries({})).map((d) => d.status), ['failed']);
    const counted = (await metrics.deliveries.get()).values.map((v) => [v.labels.outcome, v.value]);
    assert.deepEqual(counted, [['failed', 1]], 'the failed-outcome metric fires');

    const [old] = await enqueue(1);
    await worker({ maxAgeMs: -1 }).round(target());
    assert.match((await store.getJob(old!))!.lastError!, /max age/);
  });

  it('an unreadable job row is dead-lettered, not retried forever', async () => {
    const [unknownType] = await enqueue(1, { type: 'sync.ops@99' });
    const [badPayload] = await enqueue(1, { payload: { subject: 'x', ops: [] } });
    // Both have ordering key k0: the second becomes claimable once the first is dead.
    await worker().round(target());
    await worker().round(target());
    assert.match((await store.getJob(unknownType!))!.lastError!, /unknown job type "sync.ops@99"/);
    assert.equal((await store.getJob(badPayload!))!.state, 'dead');
    assert.equal(calls.length, 0, 'nothing sent');
  });

  it('a destination that throws gets every job of the batch retried', async () => {
    await enqueue(2);
    script = () => {
      throw new Error('socket hang up');
    };
    await worker().round(target());
    const jobs = await store.listJobs({ destination: 'acme/test' });
    assert.ok(jobs.every((j) => j.state === 'pending' && j.lastError === 'socket hang up'));
  });

  it('keeps its claims alive while a delivery is slow (heartbeat), so a short lease is safe', async () => {
    const [id] = await enqueue(1);
    let release!: () => void;
    const slow = new Promise<void>((r) => { release = r; });
    const slowTarget: DeliveryTarget = { ...target(), jobType: SYNC_OPS_V1, deliver: async (ops: SyncOp[]): Promise<ItemResult[]> => { await slow; return ops.map(() => ({ ok: true })); } };
    const w = worker({ leaseMs: 600 });
    const round = w.round(slowTarget);
    await new Promise((r) => setTimeout(r, 1500)); // 2.5 leases
    const held = (await store.getJob(id!))!;
    assert.equal(held.state, 'leased');
    assert.ok(held.leaseUntil! > Date.now(), 'the lease was renewed');
    assert.deepEqual(await store.claimJobs({ destination: 'acme/test', limit: 5, leaseMs: 1000, workerId: 'w2', now: Date.now() }), [], 'nobody else can take it');
    release();
    await round;
    assert.equal((await store.getJob(id!))!.state, 'done');
  });

  it('a destination that fails for everyone gets one probe at a time; when it answers again the backed-off jobs are due at once', async () => {
    await enqueue(5);
    let down = true;
    script = (ops) => ops.map(() => (down ? { retry: { reason: 'HTTP 503' }, httpStatus: 503 } : { ok: true }));
    const metrics = new Metrics(store, { defaultMetrics: false });
    const w = worker({ probeEveryMs: 100, metrics });
    assert.equal(await w.round(target()), 5, 'the first round meets the outage with a whole batch');
    assert.deepEqual(w.openBreakers().map((b) => b.destination), ['acme/test']);
    assert.deepEqual((await metrics.breakerOpen.get()).values.map((v) => v.value), [1]);
    // Jobs now back off (>= 0.8 s); while down, the loop makes one due every probeEveryMs.
    w.start();
    try {
      await new Promise((r) => setTimeout(r, 450));
      const sizes = calls.slice(1).map((c) => c.length);
      assert.ok(sizes.length >= 2 && sizes.every((n) => n === 1), `probes of one job each: ${JSON.stringify(sizes)}`);
      down = false;
      const deadline = Date.now() + 3000;
      while ((await store.stats(Date.now())).jobs.done < 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      assert.equal((await store.stats(Date.now())).jobs.done, 5, 'all delivered soon after recovery, not after their backoff');
      assert.deepEqual(w.openBreakers(), []);
    } finally {
      await w.stop();
    }
  });

  it('a paused target is not claimed from: its jobs wait, neither retried nor dead', async () => {
    await enqueue(2);
    let reason: string | null = 'Kommo refused the credentials (403)';
    const paused: DeliveryTarget = { ...target(), paused: () => reason };
    const pw = new Worker({ store, log: pino({ level: 'silent' }), targets: [paused], batchSize: 50, leaseMs: 60_000, maxAgeMs: 72 * 3_600_000, maxAttempts: 500, pollMs: 10, backoff: policy, workerId: 'w9' });
    pw.start();
    try {
      await new Promise((r) => setTimeout(r, 150));
      assert.equal(calls.length, 0);
      assert.deepEqual((await store.stats(Date.now())).jobs, { pending: 2, leased: 0, done: 0, dead: 0 });
      reason = null;
      pw.wake();
      const deadline = Date.now() + 3000;
      while ((await store.stats(Date.now())).jobs.done < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      assert.equal((await store.stats(Date.now())).jobs.done, 2, 'resumed');
    } finally {
      await pw.stop();
    }
  });

  it('the running loop picks up new jobs when woken', async () => {
    const w = worker();
    w.start();
    try {
      await enqueue(5);
      w.wake();
      const deadline = Date.now() + 5000;
      while ((await store.stats(Date.now())).jobs.done < 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      assert.equal((await store.stats(Date.now())).jobs.done, 5);
    } finally {
      await w.stop();
    }
  });
});
