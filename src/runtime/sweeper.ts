/**
 * Periodic sweeps: reads what a source reports by no webhook (or not reliably) and stores it in the
 * inbox like a webhook, with the same dedup keys, so whichever path sees an event first wins and
 * the router handles it the same way. One process sweeps a source at a time (a store-wide lock), a
 * cursor in the store says where the last run stopped, and a run stamp keeps several processes from
 * sweeping more often than the interval.
 */
import type { Logger } from 'pino';
import type { NormalizedInbound } from '../model/index.js';
import type { Metrics } from '../observability/metrics.js';
import { Pacer } from '../queue/pacer.js';
import type { NewInboxEvent, Store } from '../store/store.js';

export interface SweepSource {
  account: string;
  /** The inbox `source`: a destination name, or `kommo`. */
  name: string;
  intervalMs: number;
  /** Reads after `cursor`; returns events (with dedup keys) and the next cursor. */
  run(cursor: string | null): Promise<{ events: NormalizedInbound[]; cursor: string | null }>;
}

/** The last run of one sweep, kept in the store (`sweep-stats:<account>/<source>`). */
export interface SweepStats {
  /** When it last ran (ms). */
  at: number;
  /** Events that run read, and how many of them were new (no webhook had brought them). */
  read: number;
  found: number;
  /** New events found since the store was created. */
  totalFound: number;
}

export function sweepStatsKey(account: string, source: string): string {
  return `sweep-stats:${account}/${source}`;
}

export function parseStats(raw: string | null): SweepStats | null {
  if (!raw) return null;
  try {
    const v = JSON.parse(raw) as Partial<SweepStats>;
    return typeof v.at === 'number' && typeof v.totalFound === 'number' ? { at: v.at, read: v.read ?? 0, found: v.found ?? 0, totalFound: v.totalFound } : null;
  } catch {
    return null;
  }
}

export interface SweeperOptions {
  store: Pick<Store, 'withLock' | 'kvGet' | 'kvSet' | 'insertInbox'>;
  log: Logger;
  metrics?: Metrics;
  sources: SweepSource[];
  /** Called after a run stored new events (wakes the in-process router). */
  onStored?: () => void;
  now?: () => number;
}

export class Sweeper {
  private running = false;
  private readonly loops: Array<Promise<void>> = [];
  /** One per source: a Pacer holds one waiter. */
  private readonly pacers: Pacer[] = [];

  constructor(private readonly o: SweeperOptions) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    for (const s of this.o.sources) {
      if (s.intervalMs <= 0) continue;
      const pacer = new Pacer();
      this.pacers.push(pacer);
      this.loops.push(this.loop(s, pacer));
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    for (const p of this.pacers) p.interrupt();
    await Promise.all(this.loops);
  }

  private async loop(s: SweepSource, pacer: Pacer): Promise<void> {
    // The first run waits one interval: start-up already reads enough of every API.
    while (this.running) {
      await pacer.pause(s.intervalMs, false);
      if (!this.running) break;
      await this.runOnce(s).catch((err: unknown) => {
        this.o.metrics?.sweepRuns.inc({ account: s.account, source: s.name, outcome: 'failed' });
        this.o.log.warn({ account: s.account, source: s.name, err: err instanceof Error ? err.message : String(err) }, 'sweep failed; will try again at the next interval');
      });
    }
  }

  /** One sweep of `s` unless another process swept it within its interval. Returns the new events stored. */
  async runOnce(s: SweepSource, opts: { force?: boolean } = {}): Promise<number> {
    const { store } = this.o;
    const now = this.o.now ?? Date.now;
    const key = `${s.account}/${s.name}`;
    return store.withLock(`kommo-sync:sweep:${key}`, async () => {
      const last = Number(await store.kvGet(`sweep-at:${key}`));
      if (!opts.force && Number.isFinite(last) && now() - last < s.intervalMs * 0.9) return 0;
      const cursor = await store.kvGet(`sweep-cursor:${key}`);
      const { events, cursor: next } = await s.run(cursor);
      const at = now();
      const rows: NewInboxEvent[] = events.map((e) => ({ account: s.account, source: s.name, kind: e.event.kind, dedupKey: e.dedupKey, payload: e.event, receivedAt: at }));
      const { inserted } = rows.length ? await store.insertInbox(rows) : { inserted: 0 };
      // The cursor moves only after the events are stored: a crash in between reads them again
      // and the dedup keys drop the repeats.
      if (next !== null) await store.kvSet(`sweep-cursor:${key}`, next);
      await store.kvSet(`sweep-at:${key}`, String(at));
      // What `status` (and the dashboard) show: when it last ran and what it has found in all.
      const before = parseStats(await store.kvGet(sweepStatsKey(s.account, s.name)));
      const stats: SweepStats = { at, read: events.length, found: inserted, totalFound: (before?.totalFound ?? 0) + inserted };
      await store.kvSet(sweepStatsKey(s.account, s.name), JSON.stringify(stats));
      this.o.metrics?.sweepRuns.inc({ account: s.account, source: s.name, outcome: 'ok' });
      if (inserted) {
        this.o.metrics?.sweepEvents.inc({ account: s.account, source: s.name }, inserted);
        this.o.log.info({ account: s.account, source: s.name, found: events.length, new: inserted }, 'sweep found events the webhooks had not delivered');
        this.o.onStored?.();
      }
      return inserted;
    });
  }
}
