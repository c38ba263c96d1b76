/**
 * Retry schedule: about base, base*factor, base*factor^2 ... (1 s, 4 s, 16 s, 64 s ...) capped at
 * max, with +-20% jitter so a vendor outage does not end in a synchronized stampede. A vendor's
 * Retry-After is a floor: we never come back sooner than it asked.
 */
export interface BackoffPolicy {
  base: number;
  factor: number;
  max: number;
}

export function retryDelay(attempt: number, policy: BackoffPolicy, retryAfterMs?: number, random: () => number = Math.random): number {
  const exp = Math.min(policy.max, policy.base * policy.factor ** Math.max(0, attempt - 1));
  const jittered = exp * (0.8 + 0.4 * random());
  const floor = retryAfterMs && retryAfterMs > 0 ? retryAfterMs : 0;
  return Math.round(Math.max(jittered, floor));
}
