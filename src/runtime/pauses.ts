/**
 * Paused accounts. When Kommo refuses an account's credentials (403: integration disabled, account
 * blocked, token without rights; 401 after one OAuth refresh), retrying cannot help and hammering
 * Kommo can prolong a block: that account's Kommo work stops. Its jobs and inbox events wait (not
 * dead-lettered, not retried in a loop); `/readyz`, `status`, a metric and one error log line say
 * why. It resumes when the account's credentials change (a restart with a new token), on
 * `kommo-sync replay`, or when a check every `recheckMs` finds Kommo answering again.
 *
 * The state lives in the store (`paused:<account>`), so every process sees it and it survives
 * restarts; each process keeps a copy refreshed every few seconds for the hot paths.
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { Metrics } from '../observability/metrics.js';
import type { Store } from '../store/store.js';

export interface Pause {
  account: string;
  status: number;
  reason: string;
  since: number;
  /** Fingerprint of the credentials that were refused: different credentials resume the account. */
  credential: string;
  /** When Kommo was last asked whether it answers again. */
  checkedAt: number;
}

export interface PausedAccount {
  name: string;
  /** Fingerprint of the configured credentials (see `credentialFingerprint`). */
  credential: string;
  /** A cheap authenticated Kommo call: resolves when Kommo answers again. */
  probe(): Promise<void>;
  /** Called when the account resumes (its jobs that backed off become due). */
  onResume(): Promise<void>;
}

const key = (account: string) => `paused:${account}`;

/** A short hash of the credentials, so a changed token is noticed without storing the token. */
export function credentialFingerprint(parts: ReadonlyArray<string | undefined>): string {
  return createHash('sha256').update(parts.map((p) => p ?? '').join('\0')).digest('hex').slice(0, 16);
}

export class AccountPauses {
  private readonly current = new Map<string, Pause>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly o: {
      store: Pick<Store, 'kvGetMany' | 'kvSet' | 'kvDelete'>;
      accounts: PausedAccount[];
      log: Logger;
      metrics?: Metrics;
      /** How often a paused account is probed (default 15 min). */
      recheckMs?: number;
    },
  ) {}

  /** Why `account` is paused, or null. Synchronous: the copy refreshed by `refresh()`. */
  reason(account: string): string | null {
    const p = this.current.get(account);
    return p ? `Kommo refused the credentials (${p.status}): ${p.reason}` : null;
  }

  list(): Pause[] {
    return [...this.current.values()];
  }

  names(): string[] {
    return [...this.current.keys()];
  }

  async pause(account: string, status: number, reason: string): Promise<void> {
    if (this.current.has(account)) return;
    const a = this.o.accounts.find((x) => x.name === account);
    const now = Date.now();
    const p: Pause = { account, status, reason, since: now, credential: a?.credential ?? '', checkedAt: now };
    this.current.set(account, p);
    await this.o.store.kvSet(key(account), JSON.stringify(p));
    this.o.metrics?.accountPaused.set({ account }, 1);
    this.o.log.error({ account, status, reason }, 'Kommo refused this account\'s credentials: its Kommo work is paused until the credentials change or `kommo-sync replay` (nothing is lost meanwhile)');
  }

  async resume(account: string, why: string): Promise<void> {
    const was = this.current.get(account);
    this.current.delete(account);
    await this.o.store.kvDelete(key(account));
    this.o.metrics?.accountPaused.set({ account }, 0);
    if (was) {
      this.o.log.info({ account, why, pausedForMs: Date.now() - was.since }, 'account resumed');
      await this.o.accounts.find((x) => x.name === account)?.onResume();
    }
  }

  /**
   * Reads the pauses from the store (other processes may have set or cleared one), resumes those
   * whose credentials changed, and probes those due for a check.
   */
  async refresh(now = Date.now()): Promise<void> {
    const stored = await this.o.store.kvGetMany(this.o.accounts.map((a) => key(a.name)));
    for (const a of this.o.accounts) {
      const raw = stored.get(key(a.name));
      const p = raw ? parsePause(raw) : null;
      if (!p) {
        // Resumed by another process (e.g. `kommo-sync replay`): resume here too.
        if (this.current.delete(a.name)) {
          this.o.metrics?.accountPaused.set({ account: a.name }, 0);
          this.o.log.info({ account: a.name }, 'account resumed');
          await a.onResume();
        }
        continue;
      }
      if (p.credential && p.credential !== a.credential) {
        this.current.set(a.name, p);
        await this.resume(a.name, 'its credentials changed');
        continue;
      }
      this.current.set(a.name, p);
      this.o.metrics?.accountPaused.set({ account: a.name }, 1);
      if (now - p.checkedAt >= (this.o.recheckMs ?? 15 * 60_000)) {
        const checked = { ...p, checkedAt: now };
        this.current.set(a.name, checked);
        await this.o.store.kvSet(key(a.name), JSON.stringify(checked));
        const ok = await a.probe().then(() => true, () => false);
        if (ok) await this.resume(a.name, 'Kommo answers again');
      }
    }
  }

  start(everyMs = 3000): void {
    const tick = () => {
      this.refresh().catch((err: unknown) => this.o.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'could not read paused accounts'));
    };
    this.timer = setInterval(tick, everyMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}

function parsePause(raw: string): Pause | null {
  try {
    const p = JSON.parse(raw) as Partial<Pause>;
    if (typeof p.account !== 'string' || typeof p.status !== 'number' || typeof p.since !== 'number') return null;
    return { account: p.account, status: p.status, reason: String(p.reason ?? ''), since: p.since, credential: String(p.credential ?? ''), checkedAt: Number(p.checkedAt ?? p.since) };
  } catch {
    return null;
  }
}
