/**
 * Reconciliation of missed Kommo webhooks: Kommo does not always retry a webhook it failed to
 * deliver (vendor-apis/kommo.md 1.4), so a periodic sweep reads the account's event log for lead
 * additions and stage moves and stores them in the inbox like webhooks, with the same dedup keys
 * (kommo/events.ts). What the inbox already holds is a duplicate and dropped; what it never saw is
 * routed late instead of never. The Sweeper (sweeper.ts) runs it: one process at a time, cursor in
 * the store, counted in `kommo_sync_sweep_events_total{source="kommo"}`.
 */
import type { KommoClient } from '../kommo/client.js';
import { inboundFromEvent, nearbyStageKeys, RECONCILED_EVENT_TYPES } from '../kommo/events.js';
import type { NormalizedInbound } from '../model/index.js';
import type { Store } from '../store/store.js';
import type { SweepSource } from './sweeper.js';

/** The inbox `source` of reconciled events: the same as Kommo's webhooks. */
export const KOMMO_SOURCE = 'kommo';

/**
 * Events younger than this are left for the next run: their webhook may still be on its way, and
 * Kommo's own first retry comes 5 minutes later. Capped at half the interval, so short test
 * intervals still see recent events.
 */
const SETTLE_SECONDS = 60;
/** One run reads at most this much of the log, so a long outage is caught up over a few runs. */
const MAX_WINDOW_SECONDS = 24 * 3600;
/** Kommo's `updated_at` and the event's `created_at` are expected equal; a webhook stamped this close still counts as the same move. */
const STAMP_SLACK_SECONDS = 3;

export interface ReconcileOptions {
  account: string;
  subdomain: string;
  intervalMs: number;
  client: Pick<KommoClient, 'events'>;
  store: Pick<Store, 'existingInboxKeys'>;
  /** See EventContext.pipelineOfStatus (the account's catalog). */
  pipelineOfStatus(statusId: number): number | null;
  now?: () => number;
}

export function kommoReconcileSource(o: ReconcileOptions): SweepSource {
  const now = o.now ?? Date.now;
  const settle = Math.min(SETTLE_SECONDS, Math.floor(o.intervalMs / 2000));
  return {
    account: o.account,
    name: KOMMO_SOURCE,
    intervalMs: o.intervalMs,
    async run(cursor) {
      const to0 = Math.floor(now() / 1000) - settle;
      // The first run looks back one interval: older gaps are what `backfill --since` is for.
      const from = cursor !== null && Number.isFinite(Number(cursor)) ? Number(cursor) : to0 - Math.ceil(o.intervalMs / 1000);
      const to = Math.min(to0, from + MAX_WINDOW_SECONDS);
      if (to < from) return { events: [], cursor };
      const found: NormalizedInbound[] = [];
      // `from` is inclusive: the boundary second is read twice, and its repeats are duplicates.
      for await (const page of o.client.events({ types: RECONCILED_EVENT_TYPES, from, to, entity: 'lead' })) {
        for (const e of page) {
          const inbound = inboundFromEvent(e, { subdomain: o.subdomain, pipelineOfStatus: o.pipelineOfStatus });
          if (inbound) found.push(inbound);
        }
      }
      const fresh = await dropSeenMoves(found, o);
      return { events: fresh, cursor: String(to) };
    },
  };
}

/**
 * Stage moves a webhook already brought under a key stamped a few seconds off the event's time are
 * dropped here (exact keys are dropped by the inbox's dedup anyway).
 */
async function dropSeenMoves(found: NormalizedInbound[], o: ReconcileOptions): Promise<NormalizedInbound[]> {
  const nearby = found.map((i) => nearbyStageKeys(i, o.subdomain, STAMP_SLACK_SECONDS));
  const all = nearby.flat();
  if (all.length === 0) return found;
  const seen = await o.store.existingInboxKeys(o.account, all);
  return found.filter((_, i) => !nearby[i]!.some((k) => seen.has(k)));
}
