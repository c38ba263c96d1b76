/**
 * Prometheus metrics (prom-client) on a registry of our own, so several services in one process
 * (tests, the demo) do not collide. Queue gauges are read from the store at scrape time.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Store } from '../store/store.js';

export class Metrics {
  readonly registry = new Registry();
  readonly eventsReceived = new Counter({
    name: 'kommo_sync_events_received_total',
    help: 'Normalized events received by intake, by source and kind (duplicates included: kommo_sync_events_duplicate_total counts those).',
    labelNames: ['account', 'source', 'kind'] as const,
    registers: [this.registry],
  });
  readonly webhookRequests = new Counter({
    name: 'kommo_sync_webhook_requests_total',
    help: 'Webhook HTTP requests by source and answered status.',
    labelNames: ['source', 'status'] as const,
    registers: [this.registry],
  });
  readonly duplicates = new Counter({
    name: 'kommo_sync_events_duplicate_total',
    help: 'Events dropped at intake because their dedup key was already stored.',
    labelNames: ['account', 'source'] as const,
    registers: [this.registry],
  });
  readonly deliveries = new Counter({
    name: 'kommo_sync_deliveries_total',
    help: 'Delivered operations by destination and outcome (ok, retry, failed).',
    labelNames: ['destination', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly deliveryLatency = new Histogram({
    name: 'kommo_sync_delivery_latency_seconds',
    help: 'Time of one delivery batch to a destination.',
    labelNames: ['destination'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly kommoRequests = new Counter({
    name: 'kommo_sync_kommo_requests_total',
    help: 'Requests sent to the Kommo API by account and HTTP status.',
    labelNames: ['account', 'status'] as const,
    registers: [this.registry],
  });
  readonly kommoRateLimited = new Counter({
    name: 'kommo_sync_kommo_429_total',
    help: 'Kommo answers with 429 Too Many Requests.',
    labelNames: ['account'] as const,
    registers: [this.registry],
  });
  readonly sweepEvents = new Counter({
    name: 'kommo_sync_sweep_events_total',
    help: 'Events found by periodic sweeps (engagement a vendor reports by no webhook, webhooks Kommo never delivered), new ones only.',
    labelNames: ['account', 'source'] as const,
    registers: [this.registry],
  });
  readonly sweepRuns = new Counter({
    name: 'kommo_sync_sweep_runs_total',
    help: 'Periodic sweeps run, by source and outcome (ok, failed).',
    labelNames: ['account', 'source', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly backfillLeads = new Counter({
    name: 'kommo_sync_backfill_leads_total',
    help: 'Existing leads read by `kommo-sync backfill`, by outcome: synced (jobs queued) or skipped (no contact, no email, pipeline not synced).',
    labelNames: ['account', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly breakerOpen = new Gauge({
    name: 'kommo_sync_destination_down',
    help: '1 while this process sees a destination as down (its circuit breaker is open: one probe at a time).',
    labelNames: ['destination'] as const,
    registers: [this.registry],
  });
  readonly accountPaused = new Gauge({
    name: 'kommo_sync_account_paused',
    help: '1 while an account\'s Kommo jobs are paused because Kommo refused its credentials (401/403); see /readyz and `status`.',
    labelNames: ['account'] as const,
    registers: [this.registry],
  });
  readonly echoesDropped = new Counter({
    name: 'kommo_sync_echoes_dropped_total',
    help: 'Kommo webhooks dropped because they reported a change kommo-sync itself made.',
    labelNames: ['account'] as const,
    registers: [this.registry],
  });

  constructor(store: Store, opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'kommo_sync_' });
    let cached: { at: number; stats: Awaited<ReturnType<Store['stats']>> } | null = null;
    // One stats query serves all queue gauges of a scrape.
    const stats = async () => {
      const now = Date.now();
      if (!cached || now - cached.at > 500) cached = { at: now, stats: await store.stats(now) };
      return cached.stats;
    };
    new Gauge({
      name: 'kommo_sync_jobs',
      help: 'Jobs by state.',
      labelNames: ['state'] as const,
      registers: [this.registry],
      async collect() {
        const s = await stats();
        for (const [state, n] of Object.entries(s.jobs)) this.set({ state }, n);
      },
    });
    new Gauge({
      name: 'kommo_sync_queue_depth',
      help: 'Pending and leased jobs per destination.',
      labelNames: ['destination'] as const,
      registers: [this.registry],
      async collect() {
        const s = await stats();
        this.reset();
        for (const [destination, n] of Object.entries(s.depthByDestination)) this.set({ destination }, n);
      },
    });
    new Gauge({
      name: 'kommo_sync_inbox_pending',
      help: 'Inbox events not yet routed.',
      registers: [this.registry],
      async collect() {
        this.set((await stats()).inboxPending);
      },
    });
    new Gauge({
      name: 'kommo_sync_inbox_failed',
      help: 'Inbox events the router gave up on; replay them with `kommo-sync replay --inbox`.',
      registers: [this.registry],
      async collect() {
        this.set((await stats()).inboxFailed);
      },
    });
    new Gauge({
      name: 'kommo_sync_oldest_pending_job_age_seconds',
      help: 'Age of the oldest pending or leased job (0 when the queue is empty).',
      registers: [this.registry],
      async collect() {
        const s = await stats();
        this.set(s.oldestPendingAt === null ? 0 : (Date.now() - s.oldestPendingAt) / 1000);
      },
    });
  }
}
