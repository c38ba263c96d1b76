/**
 * The worker: claims due jobs per destination (one head job per ordering key, see Store.claimJobs),
 * delivers their operations in one call, records every result in the delivery log, and decides:
 * done, retry later (backoff, Retry-After) or dead letter (permanent failure, too old, too many tries).
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { ItemResult, SyncOp } from '../destinations/types.js';
import type { KommoOp } from '../model/index.js';
import type { Metrics } from '../observability/metrics.js';
import { StoreUnavailableError } from '../store/errors.js';
import type { DeliveryRecord, Job, JobOutcome, Store } from '../store/store.js';
import { retryDelay, type BackoffPolicy } from './backoff.js';
import { decodeJob, KOMMO_OPS_V1, SYNC_OPS_V1 } from './jobs.js';
import { Pacer } from './pacer.js';

interface TargetBase {
  /** `account/name`, the jobs' destination column. */
  key: string;
  account: string;
  /** Jobs claimed per round. */
  maxBatch: number;
  /**
   * While this gives a reason, nothing is claimed for the target: its jobs wait, neither retried in
   * a loop nor dead-lettered (e.g. Kommo refused the account's credentials: a human must act).
   */
  paused?(): string | null;
}
export type DeliveryTarget =
  | (TargetBase & { jobType: typeof SYNC_OPS_V1; deliver(ops: SyncOp[]): Promise<ItemResult[]> })
  | (TargetBase & { jobType: typeof KOMMO_OPS_V1; deliver(ops: KommoOp[]): Promise<ItemResult[]> });

export interface WorkerOptions {
  store: Store;
  log: Logger;
  metrics?: Metrics;
  targets: DeliveryTarget[];
  batchSize: number;
  leaseMs: number;
  maxAgeMs: number;
  maxAttempts: number;
  pollMs: number;
  backoff: BackoffPolicy;
  workerId?: string;
  /** While a destination is down, how often one of its jobs is tried as a probe (default 5 s). */
  probeEveryMs?: number;
}

/** A destination whose last delivery failed for every job alike: an outage, not a bad item. */
interface Outage {
  since: number;
  reason: string;
  lastProbeAt: number;
}

export class Worker {
  readonly id: string;
  private readonly targets = new Map<string, DeliveryTarget>();
  private readonly inFlight = new Set<string>();
  private running = false;
  private readonly pacer = new Pacer();
  private loopDone: Promise<void> | null = null;
  private readonly warnedUnknown = new Set<string>();
  /** Open circuit breakers by destination key (this process's view). */
  private readonly outages = new Map<string, Outage>();
  /**
   * A destination that answered every item with a wait (429 + Retry-After) gets nothing from this
   * process until then: Retry-After is about the vendor, not only about the jobs that got it.
   */
  private readonly holdUntil = new Map<string, number>();

  constructor(private readonly o: WorkerOptions) {
    this.id = o.workerId ?? `worker-${randomUUID().slice(0, 8)}`;
    for (const t of o.targets) this.targets.set(t.key, t);
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loopDone = this.loop();
  }

  /**
   * Stops claiming and waits for batches in flight, at most `graceMs`. Past it, the claims of the
   * batches still running are given back, so another process (or the next start) delivers them now
   * instead of after their lease (at-least-once: a delivery that did finish may run again).
   */
  async stop(graceMs = Infinity): Promise<void> {
    this.running = false;
    this.pacer.interrupt();
    await this.loopDone;
    const until = Date.now() + graceMs;
    while (this.inFlight.size > 0 && Date.now() < until) await sleep(10);
    if (this.inFlight.size > 0) {
      const released = await this.o.store.releaseClaimsOf(this.id);
      this.o.log.warn({ destinations: [...this.inFlight], released }, 'stopping with deliveries still in flight: their claims are given back');
    }
  }

  /** Destinations this process sees as down, with since when and why (status, dashboard, metrics). */
  openBreakers(): Array<{ destination: string; since: number; reason: string }> {
    return [...this.outages].map(([destination, o]) => ({ destination, since: o.since, reason: o.reason }));
  }

  /** New jobs were enqueued in this process: look now instead of at the next poll. */
  wake(): void {
    this.pacer.wake();
  }

  private async loop(): Promise<void> {
    while (this.running) {
      let started = 0;
      try {
        await this.probeOutages();
        const due = await this.o.store.dueDestinations(Date.now());
        for (const key of due) {
          if (this.inFlight.has(key)) continue;
          const target = this.targets.get(key);
          if (target?.paused?.()) continue;
          if ((this.holdUntil.get(key) ?? 0) > Date.now()) continue;
          if (!target) {
            if (!this.warnedUnknown.has(key)) {
              this.warnedUnknown.add(key);
              this.o.log.warn({ destination: key }, 'jobs wait for a destination that is not in the config; they stay queued');
            }
            continue;
          }
          started++;
          this.inFlight.add(key);
          void this.round(target)
            .catch((err: unknown) => this.o.log.error({ err, destination: key }, 'delivery round failed; jobs will be retried when their lease expires'))
            .finally(() => {
              this.inFlight.delete(key);
              this.wake();
            });
        }
      } catch (err) {
        this.o.log.error({ err }, 'worker could not read the queue; retrying');
      }
      if (!this.running) break;
      if (started === 0) await this.pacer.pause(this.o.pollMs);
    }
  }

  /**
   * While a destination is down its jobs back off (up to minutes apart); one of them is made due
   * every `probeEveryMs`, so its recovery is noticed within seconds, not at the next long backoff.
   */
  private async probeOutages(): Promise<void> {
    const every = this.o.probeEveryMs ?? 5000;
    const now = Date.now();
    for (const [key, outage] of this.outages) {
      if (this.inFlight.has(key) || now - outage.lastProbeAt < every || (this.holdUntil.get(key) ?? 0) > now) continue;
      outage.lastProbeAt = now;
      await this.o.store.expediteOne(key, now);
    }
  }

  /** One claim -> deliver -> complete cycle for one destination. Returns the jobs handled. */
  async round(target: DeliveryTarget): Promise<number> {
    const { store } = this.o;
    const now = Date.now();
    const outage = this.outages.get(target.key);
    const jobs = await store.claimJobs({
      destination: target.key,
      // While it is down: one job at a time (a probe), not a batch that fails as a whole.
      limit: outage ? 1 : Math.min(this.o.batchSize, target.maxBatch),
      leaseMs: this.o.leaseMs,
      workerId: this.id,
      now,
    });
    if (jobs.length === 0) return 0;
    if (outage) outage.lastProbeAt = now;
    // Heartbeat: a slow delivery keeps its claims, so leases can stay short and a dead process's
    // jobs come back within one lease.
    const ids = jobs.map((j) => j.id);
    const heartbeat = setInterval(() => {
      store.renewLeases(this.id, ids, Date.now() + this.o.leaseMs).catch(() => undefined);
    }, Math.max(250, Math.floor(this.o.leaseMs / 3)));
    heartbeat.unref();
    try {
      return await this.deliverClaimed(target, jobs, now);
    } finally {
      clearInterval(heartbeat);
    }
  }

  private async deliverClaimed(target: DeliveryTarget, jobs: Job[], now: number): Promise<number> {
    const { store } = this.o;

    const outcomes: JobOutcome[] = [];
    const runnable: Array<{ job: Job; subject: string; ops: Array<SyncOp | KommoOp> }> = [];
    for (const job of jobs) {
      const decoded = decodeJob(job.type, job.payload);
      if ('error' in decoded) outcomes.push({ id: job.id, outcome: 'dead', error: decoded.error });
      else if (decoded.type !== target.jobType) outcomes.push({ id: job.id, outcome: 'dead', error: `job type ${decoded.type} cannot go to ${target.key}` });
      else runnable.push({ job, subject: decoded.payload.subject, ops: decoded.payload.ops });
    }

    const flat = runnable.flatMap((r) => r.ops);
    const started = performance.now();
    let results: ItemResult[];
    try {
      results = flat.length ? await deliverTo(target, flat) : [];
      if (results.length !== flat.length) throw new Error(`destination returned ${results.length} results for ${flat.length} operations`);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      results = flat.map(() => ({ retry: { reason } }));
    }
    const latencyMs = performance.now() - started;
    this.o.metrics?.deliveryLatency.observe({ destination: target.key }, latencyMs / 1000);

    const records: DeliveryRecord[] = [];
    let i = 0;
    const at = Date.now();
    for (const r of runnable) {
      const own = results.slice(i, i + r.ops.length);
      const outcome = this.decide(r.job, own, at);
      r.ops.forEach((op, k) => {
        const res = own[k]!;
        // A retry that ends the job in dead letters is its last, failed attempt.
        const status = 'ok' in res ? 'ok' : 'fail' in res || outcome.outcome === 'dead' ? 'failed' : 'retry';
        this.o.metrics?.deliveries.inc({ destination: target.key, outcome: status });
        records.push({
          jobId: r.job.id,
          account: target.account,
          destination: target.key,
          op: op.kind,
          subject: r.subject,
          status,
          httpStatus: res.httpStatus ?? null,
          latencyMs: Math.round(latencyMs),
          error: 'retry' in res ? res.retry.reason : 'fail' in res ? `${res.fail.code}: ${res.fail.reason}` : null,
          at,
        });
      });
      i += r.ops.length;
      outcomes.push(outcome);
    }
    await this.record(outcomes, records, now);
    await this.trackOutage(target, results, at);
    const failed = outcomes.filter((o) => o.outcome !== 'done');
    if (failed.length) this.o.log.warn({ destination: target.key, failed: failed.length, of: jobs.length, first: failed[0] }, 'some deliveries did not succeed');
    else this.o.log.debug({ destination: target.key, jobs: jobs.length, ops: flat.length, ms: Math.round(latencyMs) }, 'delivered');
    return jobs.length;
  }

  /**
   * The deliveries happened: recording them must not be given up lightly, or the jobs run again
   * when their lease expires (duplicate notes in Kommo). So while the store is away (a PostgreSQL
   * restart) keep trying until shortly before the lease would expire.
   */
  private async record(outcomes: JobOutcome[], records: DeliveryRecord[], claimedAt: number): Promise<void> {
    const deadline = claimedAt + this.o.leaseMs - 1000;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.o.store.completeJobs(this.id, outcomes);
        break;
      } catch (err) {
        if (!(err instanceof StoreUnavailableError) || Date.now() + 500 > deadline) throw err;
        if (attempt === 1) this.o.log.warn({ err: err.message }, 'store unavailable while recording deliveries; retrying');
        await sleep(Math.min(2000, 100 * 2 ** attempt));
      }
    }
    // The delivery log is for people; losing a few lines in an outage is better than blocking.
    await this.o.store.logDeliveries(records).catch((err: unknown) => this.o.log.warn({ err }, 'could not write the delivery log'));
  }

  /**
   * The circuit breaker: a delivery where every item failed alike (retry, none ok) opens it; the
   * first delivery with an ok item closes it, and the jobs that backed off meanwhile become due at
   * once (the destination's rate limit still paces them).
   */
  private async trackOutage(target: DeliveryTarget, results: ItemResult[], at: number): Promise<void> {
    if (results.length === 0) return;
    const outage = this.outages.get(target.key);
    const anyOk = results.some((r) => 'ok' in r);
    const allRetry = results.every((r) => 'retry' in r);
    // A throttled answer holds the whole destination (Retry-After is about the vendor); a wait that
    // concerns one item (a user not processed yet) holds only that item's job.
    const throttled = results.filter((r): r is Extract<ItemResult, { retry: unknown }> => 'retry' in r && (r.retry.throttled === true || r.httpStatus === 429));
    const wait = Math.max(0, ...throttled.map((r) => r.retry.afterMs ?? 1000));
    if (wait > 0) this.holdUntil.set(target.key, Math.max(this.holdUntil.get(target.key) ?? 0, at + wait));
    if (!outage && allRetry) {
      const first = results[0]!;
      const reason = 'retry' in first ? first.retry.reason : 'failed';
      this.outages.set(target.key, { since: at, reason, lastProbeAt: at });
      this.o.metrics?.breakerOpen.set({ destination: target.key }, 1);
      this.o.log.warn({ destination: target.key, reason }, 'destination is failing: sending one probe at a time until it answers again');
    } else if (outage && anyOk) {
      this.outages.delete(target.key);
      this.o.metrics?.breakerOpen.set({ destination: target.key }, 0);
      const expedited = await this.o.store.expediteRetries(target.key, Date.now());
      this.o.log.info({ destination: target.key, downForMs: at - outage.since, expedited }, 'destination recovered: jobs that backed off are due now');
      this.wake();
    }
  }

  private decide(job: Job, results: ItemResult[], now: number): JobOutcome {
    const fail = results.find((r): r is Extract<ItemResult, { fail: unknown }> => 'fail' in r);
    if (fail) return { id: job.id, outcome: 'dead', error: `${fail.fail.code}: ${fail.fail.reason}` };
    const retries = results.filter((r): r is Extract<ItemResult, { retry: unknown }> => 'retry' in r);
    if (retries.length === 0) return { id: job.id, outcome: 'done' };
    const reason = retries[0]!.retry.reason;
    if (now - job.createdAt > this.o.maxAgeMs) return { id: job.id, outcome: 'dead', error: `gave up after ${Math.round((now - job.createdAt) / 3_600_000)} h (max age): ${reason}` };
    if (job.attempts >= this.o.maxAttempts) return { id: job.id, outcome: 'dead', error: `gave up after ${job.attempts} attempts: ${reason}` };
    const afterMs = Math.max(0, ...retries.map((r) => r.retry.afterMs ?? 0));
    return { id: job.id, outcome: 'retry', runAfter: now + retryDelay(job.attempts, this.o.backoff, afterMs), error: reason };
  }
}

function deliverTo(target: DeliveryTarget, ops: Array<SyncOp | KommoOp>): Promise<ItemResult[]> {
  // decodeJob checked each job's type against target.jobType, so the ops are of the target's kind.
  return target.jobType === SYNC_OPS_V1 ? target.deliver(ops as SyncOp[]) : target.deliver(ops as KommoOp[]);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
