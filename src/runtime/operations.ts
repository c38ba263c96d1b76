/**
 * What the long-running operations are doing, per account, read from the store: the latest
 * backfill and the reconciliation of missed Kommo webhooks. `status` prints it; the dashboard can
 * show the same (plain data, no secret in it).
 */
import type { Store } from '../store/store.js';
import { describeFilter, lastBackfill } from './backfill.js';
import { KOMMO_SOURCE } from './reconcile.js';
import { parseStats, sweepStatsKey, type SweepStats } from './sweeper.js';

export interface BackfillSummary {
  /** The filter in words ("all leads", "leads in pipeline "Sales" updated since ..."). */
  filter: string;
  status: 'running' | 'paused' | 'done' | 'failed';
  leads: number;
  /** Leads that matched when counted (null while counting). */
  total: number | null;
  synced: number;
  skipped: number;
  jobs: number;
  /** Why it is not moving right now, or null. */
  waiting: string | null;
  error: string | null;
  startedAt: number;
  updatedAt: number;
  finishedAt: number | null;
}

export interface OperationsStatus {
  backfill: Record<string, BackfillSummary>;
  /** The reconciliation's last run and what it found (`found`: events no webhook had brought). */
  reconcile: Record<string, SweepStats | null>;
}

export async function readOperations(store: Pick<Store, 'kvGet'>, accounts: readonly string[]): Promise<OperationsStatus> {
  const out: OperationsStatus = { backfill: {}, reconcile: {} };
  for (const a of accounts) {
    const b = await lastBackfill(store, a);
    if (b) {
      out.backfill[a] = {
        filter: describeFilter(b.filter), status: b.status, leads: b.leads, total: b.total, synced: b.synced, skipped: b.skipped, jobs: b.jobs,
        waiting: b.waiting, error: b.error, startedAt: b.startedAt, updatedAt: b.updatedAt, finishedAt: b.finishedAt,
      };
    }
    out.reconcile[a] = parseStats(await store.kvGet(sweepStatsKey(a, KOMMO_SOURCE)));
  }
  return out;
}
