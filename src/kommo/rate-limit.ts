/**
 * Outbound pacing for one Kommo account, and the circuit breaker that stops us from calling at all
 * when Kommo pushes back.
 *
 * Kommo allows 7 requests/s and escalates repeated 429s to a 403 block of the whole account/IP
 * (vendor-apis/kommo.md 2.3), so every request of an account — reads, writes, OAuth refreshes,
 * retries — takes a slot from ONE limiter before it is sent.
 */
import type { Store } from '../store/store.js';

/**
 * Call after the response (or the failure) of the request the permit was for. Until then the slot
 * counts as used; the window runs from this moment, not from the grant (see SlidingWindowLimiter).
 * Calling it twice is harmless.
 */
export type Release = () => void;

export interface RateLimiter {
  /** Resolves when the caller may send one request; rejects with `signal.reason` if aborted first. */
  acquire(signal?: AbortSignal): Promise<Release>;
  /** This process's view of the budget right now (the dashboard shows it). */
  usage(): LimiterUsage;
}

export interface LimiterUsage {
  inUse: number;
  limit: number;
  /** Callers queued for a slot. */
  waiting: number;
}

/**
 * Our promise is "Kommo never sees more than N requests in any 1000 ms". Both limiters measure the
 * window from the response, which can only come after Kommo saw the request, so they need only a
 * small margin: for timer granularity (in process), and across processes for clock skew between
 * machines (keep them NTP-synced). The store-backed one records a send in flight at a placeholder
 * time in the future (it counts until it is released), then at its answer.
 */
export const WINDOW_MS = 1000;
export const LOCAL_MARGIN_MS = 50;
export const STORE_MARGIN_MS = 100;
/** A send in flight counts until released, at most this long (a process that died mid-request). */
const STORE_HOLD_MS = 20_000;
/** A permit never released (a caller bug) stops counting after this long. */
const MAX_HOLD_MS = 120_000;

interface Waiter {
  resolve: (release: Release) => void;
  reject: (err: unknown) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

/**
 * In-process limiter: at most `limit` requests in flight or finished less than `windowMs` ago.
 *
 * Why from the response and not from the grant: between our grant and Kommo's arrival there can be
 * hundreds of ms (a busy event loop parsing a 250-lead page, a TLS handshake), so grant-spaced
 * requests can arrive bunched (measured: 7 granted at t=0 arrived over 0.2-0.9 s, the next 7 granted
 * at 1.1 s arrived right after them). A request j granted when request i's slot had freed arrives
 * after r_i + window >= a_i + window (a = arrival at Kommo, r = our response), so no N+1 requests
 * can ever arrive within one window, whatever the delays.
 *
 * Waiters are served strictly FIFO (a newcomer never overtakes a queued caller) and sleep on one
 * timer set for the next moment a slot frees, or are woken by a release; nothing polls.
 */
export class SlidingWindowLimiter implements RateLimiter {
  /** When each used slot becomes free again (ms on `now`'s clock). */
  private readonly slots: Array<{ freeAt: number }> = [];
  private readonly queue: Waiter[] = [];
  private timer: NodeJS.Timeout | null = null;

  constructor(
    readonly limit: number,
    readonly windowMs: number = WINDOW_MS + LOCAL_MARGIN_MS,
    private readonly now: () => number = () => performance.now(),
    opts: { startFull?: boolean } = {},
  ) {
    if (!(limit >= 1)) throw new RangeError(`rate limit must be >= 1, got ${limit}`);
    // A process that starts after another one stopped (a restart, a deploy, kill -9) cannot know
    // what the previous one just spent: it assumes the whole budget went in the last moment.
    if (opts.startFull) for (let i = 0; i < limit; i++) this.slots.push({ freeAt: this.now() + this.windowMs });
  }

  acquire(signal?: AbortSignal): Promise<Release> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.queue.length === 0) {
      const release = this.tryGrant();
      if (release) return Promise.resolve(release);
    }
    return new Promise<Release>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject };
      if (signal) {
        waiter.signal = signal;
        waiter.onAbort = () => {
          const i = this.queue.indexOf(waiter);
          if (i >= 0) this.queue.splice(i, 1);
          reject(signal.reason);
          this.schedule();
        };
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      this.queue.push(waiter);
      this.schedule();
    });
  }

  /** How many callers are queued (for metrics and tests). */
  get waiting(): number {
    return this.queue.length;
  }

  /** Read-only: slots used in the current window (in flight or finished < window ago), and the queue. */
  usage(): LimiterUsage {
    const now = this.now();
    return { inUse: this.slots.filter((s) => s.freeAt > now).length, limit: this.limit, waiting: this.queue.length };
  }

  private tryGrant(): Release | null {
    const now = this.now();
    for (let i = this.slots.length - 1; i >= 0; i--) if (this.slots[i]!.freeAt <= now) this.slots.splice(i, 1);
    if (this.slots.length >= this.limit) return null;
    const slot = { freeAt: now + MAX_HOLD_MS + this.windowMs };
    this.slots.push(slot);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      slot.freeAt = this.now() + this.windowMs;
      this.schedule();
    };
  }

  private pump = (): void => {
    this.timer = null;
    while (this.queue.length > 0) {
      const release = this.tryGrant();
      if (!release) break;
      const w = this.queue.shift()!;
      if (w.signal && w.onAbort) w.signal.removeEventListener('abort', w.onAbort);
      w.resolve(release);
    }
    this.schedule();
  };

  /** (Re)arms the one timer for the earliest moment a slot frees, if anyone is waiting. */
  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.queue.length === 0) return;
    const next = Math.min(...this.slots.map((s) => s.freeAt));
    // +1 ms: timers may fire a fraction of a millisecond early; waking before the slot frees would
    // only reschedule, but this keeps it to one wake-up per slot.
    const delay = Number.isFinite(next) ? Math.max(0, next - this.now()) + 1 : 0;
    this.timer = setTimeout(this.pump, delay);
  }
}

/**
 * One budget across every process sharing the store (workers scaled out on PostgreSQL).
 * `store.reserveRate` is the authority across processes; in front of it an in-process
 * SlidingWindowLimiter keeps this process's own requests correctly spaced (and FIFO), so only
 * callers holding a local permit talk to the store.
 */
export class StoreRateLimiter implements RateLimiter {
  private readonly local: SlidingWindowLimiter;

  constructor(
    private readonly store: Pick<Store, 'reserveRate' | 'releaseRate'>,
    readonly bucket: string,
    readonly limit: number,
    readonly windowMs: number = WINDOW_MS + STORE_MARGIN_MS,
  ) {
    this.local = new SlidingWindowLimiter(limit);
  }

  /** This process's share: the store holds the other processes' sends. */
  usage(): LimiterUsage {
    return this.local.usage();
  }

  async acquire(signal?: AbortSignal): Promise<Release> {
    const release = await this.local.acquire(signal);
    try {
      for (;;) {
        signal?.throwIfAborted();
        // A unique placeholder in the future: the send counts while in flight, and is found again
        // at release to be moved to its answer's time.
        const heldAt = Date.now() + STORE_HOLD_MS + Math.floor(Math.random() * 1000);
        const waitMs = await this.store.reserveRate(this.bucket, this.limit, this.windowMs, Date.now(), heldAt);
        if (waitMs <= 0) {
          return () => {
            release();
            this.store.releaseRate(this.bucket, heldAt, Date.now()).catch(() => undefined);
          };
        }
        // A slot held by a send in flight frees at its answer, not at its placeholder: look again
        // soon. A little jitter so processes told the same wait do not retry in lockstep.
        await sleep(Math.min(waitMs, 50) + Math.floor(Math.random() * 10), signal);
      }
    } catch (err) {
      release();
      throw err;
    }
  }
}

/** setTimeout as a promise that an AbortSignal can cut short (rejecting with its reason). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, Math.max(0, ms));
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

const accountLimiters = new Map<string, RateLimiter>();

/**
 * The limiter of `account` in this process, created on first use and then shared by every caller
 * (client, OAuth refresh, backfill, doctor), so they all draw from the same budget. With `shared`
 * and a store, the budget is also shared with other processes on that store (and survives a
 * restart there); otherwise it starts empty, as the previous process may have just spent it.
 * The first call's settings win; later calls get the same instance.
 */
export function getAccountLimiter(
  account: string,
  perSecond: number,
  store?: Pick<Store, 'reserveRate' | 'releaseRate'>,
  shared = false,
): RateLimiter {
  let limiter = accountLimiters.get(account);
  if (!limiter) {
    limiter = shared && store
      ? new StoreRateLimiter(store, `kommo:${account}`, perSecond)
      : new SlidingWindowLimiter(perSecond, undefined, undefined, { startFull: true });
    accountLimiters.set(account, limiter);
  }
  return limiter;
}

/** Read-only: the usage of the limiter registered under `key` in this process, if any. */
export function limiterUsage(key: string): LimiterUsage | null {
  return accountLimiters.get(key)?.usage() ?? null;
}

/** Tests only: forget every account limiter. */
export function resetAccountLimiters(): void {
  accountLimiters.clear();
}

// ---------------------------------------------------------------------------------------------
// Circuit breaker
// ---------------------------------------------------------------------------------------------

export interface BreakerOptions {
  /** This many 429s ... (default 3) */
  threshold?: number;
  /** ... within this window open the breaker (default 10 s). */
  windowMs?: number;
  /** First cool-down after 429s (default 30 s); doubles each time it re-opens, up to maxCooldownMs. */
  cooldownMs?: number;
  maxCooldownMs?: number;
  /** Cool-down after a 403 block (default 10 min; doubles likewise). */
  blockedCooldownMs?: number;
  now?: () => number;
}

export type BreakerState =
  | { state: 'closed' }
  | { state: 'open'; status: 429 | 403; retryAfterMs: number; detail: string };

/**
 * Stops calls to an account whose API keeps refusing us. Closed -> (3 x 429 in 10 s | a 403) -> open
 * for a cool-down -> half-open: traffic flows again, and the first 429/403 re-opens it with double
 * the cool-down, while the first success closes it and resets the cool-down.
 */
export class CircuitBreaker {
  private readonly threshold: number;
  private readonly windowMs: number;
  private readonly baseCooldown: number;
  private readonly maxCooldown: number;
  private readonly blockedCooldown: number;
  private readonly now: () => number;

  private recent429: number[] = [];
  private openUntil = 0;
  private openStatus: 429 | 403 = 429;
  private halfOpen = false;
  /** How many times it opened without a success in between (the doubling exponent). */
  private streak = 0;

  constructor(opts: BreakerOptions = {}) {
    this.threshold = opts.threshold ?? 3;
    this.windowMs = opts.windowMs ?? 10_000;
    this.baseCooldown = opts.cooldownMs ?? 30_000;
    this.maxCooldown = opts.maxCooldownMs ?? 30 * 60_000;
    this.blockedCooldown = opts.blockedCooldownMs ?? 10 * 60_000;
    this.now = opts.now ?? Date.now;
  }

  check(): BreakerState {
    const now = this.now();
    if (now < this.openUntil) {
      const detail = this.openStatus === 403
        ? 'Kommo blocked API access (403): calls to this account are paused until the block lifts'
        : 'Kommo keeps answering 429 Too Many Requests: calls to this account are paused';
      return { state: 'open', status: this.openStatus, retryAfterMs: this.openUntil - now, detail };
    }
    if (this.openUntil > 0 && !this.halfOpen) this.halfOpen = true;
    return { state: 'closed' };
  }

  recordSuccess(): void {
    this.halfOpen = false;
    this.openUntil = 0;
    this.streak = 0;
    this.recent429 = [];
  }

  /** Returns the cool-down in ms when this 429 opened the breaker, else 0. */
  record429(): number {
    const now = this.now();
    // Answers to requests sent before it opened: already counted, must not escalate it further.
    if (now < this.openUntil) return this.openUntil - now;
    if (this.halfOpen) return this.open(429, this.baseCooldown, now);
    this.recent429 = this.recent429.filter((t) => t > now - this.windowMs);
    this.recent429.push(now);
    return this.recent429.length >= this.threshold ? this.open(429, this.baseCooldown, now) : 0;
  }

  /** A 403 block: open at once, for longer. Returns the cool-down in ms. */
  record403(): number {
    const now = this.now();
    if (now < this.openUntil && this.openStatus === 403) return this.openUntil - now;
    return this.open(403, this.blockedCooldown, now);
  }

  private open(status: 429 | 403, base: number, now: number): number {
    const cooldown = Math.min(this.maxCooldown, base * 2 ** this.streak);
    this.streak += 1;
    this.openStatus = status;
    this.openUntil = Math.max(this.openUntil, now + cooldown);
    this.halfOpen = false;
    this.recent429 = [];
    return this.openUntil - now;
  }
}

const accountBreakers = new Map<string, CircuitBreaker>();

/** The breaker of `account` in this process: every client of the account must see the same state. */
export function getAccountBreaker(account: string, opts?: BreakerOptions): CircuitBreaker {
  let b = accountBreakers.get(account);
  if (!b) {
    b = new CircuitBreaker(opts);
    accountBreakers.set(account, b);
  }
  return b;
}

/** Tests only. */
export function resetAccountBreakers(): void {
  accountBreakers.clear();
}
