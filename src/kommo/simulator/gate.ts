/**
 * Request log, sliding-window rate limit and the 403 block (kommo.md 2.3). Every request the plugin
 * receives is logged, including the ones it rejects, so tests can check what a client really sent.
 */
import type { RequestLogEntry } from './types.js';

const BLOCK_WINDOW_MS = 60_000;

export type GateVerdict = 'ok' | 'rate_limited' | 'blocked';

/** Monotonic epoch ms with sub-ms precision (Date.now() can step and has 1 ms resolution). */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

export class RequestGate {
  readonly requests: RequestLogEntry[] = [];
  blocked = false;
  /** Arrival times of admitted requests still inside the 1000 ms window. */
  private admitted: number[] = [];
  private violations: number[] = [];

  constructor(
    private readonly limitPerSecond: number,
    private readonly blockAfterViolations: number,
  ) {}

  /** Logs the request and decides whether it may proceed. */
  admit(entry: RequestLogEntry): GateVerdict {
    this.requests.push(entry);
    if (this.blocked) return 'blocked';
    const t = entry.at;
    while (this.admitted.length > 0 && t - (this.admitted[0] ?? t) >= 1000) this.admitted.shift();
    if (this.admitted.length >= this.limitPerSecond) {
      this.violations.push(t);
      while (this.violations.length > 0 && t - (this.violations[0] ?? t) >= BLOCK_WINDOW_MS) this.violations.shift();
      if (this.blockAfterViolations > 0 && this.violations.length >= this.blockAfterViolations) this.blocked = true;
      return 'rate_limited';
    }
    this.admitted.push(t);
    return 'ok';
  }

  /** Largest number of logged requests (any status) whose arrival times lie within `windowMs` of each other. */
  maxRequestsInWindow(windowMs = 1000): number {
    const times = this.requests.map((r) => r.at).sort((a, b) => a - b);
    let best = 0;
    let i = 0;
    for (let j = 0; j < times.length; j++) {
      while ((times[j] ?? 0) - (times[i] ?? 0) >= windowMs) i++;
      best = Math.max(best, j - i + 1);
    }
    return best;
  }

  resetLog(): void {
    this.requests.length = 0;
  }

  unblock(): void {
    this.blocked = false;
    this.violations = [];
    this.admitted = [];
  }
}
