/**
 * `kommo-sync status [--json] [--watch]`: queue depth, the oldest pending job, deliveries per minute
 * and failures per destination, paused accounts, and what the backfill and the reconciliation of
 * missed webhooks are doing. Reads only the store (no vendor secret needed).
 */
import type { StoreConfig } from '../config/load.js';
import { readOperations, type OperationsStatus } from '../runtime/operations.js';
import type { QueueStats, Store } from '../store/store.js';
import { withStore } from './context.js';

/** Deliveries read to count the last hour (a busy hour shows "at least"). */
const DELIVERY_SAMPLE = 10_000;
const WATCH_MS = 2000;

interface Summary extends QueueStats, OperationsStatus {
  oldestPendingAgeSeconds: number;
  /** Failed and retried operations in the last hour, per destination. */
  failuresLastHour: Record<string, number>;
  /** Operations delivered in the last minute, per destination, by outcome. */
  perMinute: Record<string, { ok: number; retry: number; failed: number }>;
  /** True when the last hour had more deliveries than were read (the counts are lower bounds). */
  sampled: boolean;
  pausedAccounts: Array<{ account: string; status: number; reason: string; since: number }>;
}

export async function status(o: { config?: string; json?: boolean; watch?: boolean }): Promise<void> {
  await withStore(o.config, async (store, cfg) => {
    if (!o.watch) {
      print(await collect(store, cfg), o.json === true);
      return;
    }
    let stop = false;
    const onSignal = () => {
      stop = true;
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    try {
      while (!stop) {
        const s = await collect(store, cfg);
        if (!o.json && process.stdout.isTTY) process.stdout.write('\u001b[2J\u001b[H');
        else if (!o.json) process.stdout.write(`\n--- ${new Date().toISOString()}\n`);
        print(s, o.json === true);
        const until = Date.now() + WATCH_MS;
        while (!stop && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  });
}

async function collect(store: Store, cfg: StoreConfig): Promise<Summary> {
  const now = Date.now();
  const stats = await store.stats(now);
  const recent = await store.listDeliveries({ limit: DELIVERY_SAMPLE, since: now - 3_600_000 });
  const failuresLastHour: Record<string, number> = {};
  const perMinute: Summary['perMinute'] = {};
  for (const d of recent) {
    if (d.status !== 'ok') failuresLastHour[d.destination] = (failuresLastHour[d.destination] ?? 0) + 1;
    if (d.at >= now - 60_000) {
      const m = (perMinute[d.destination] ??= { ok: 0, retry: 0, failed: 0 });
      m[d.status] += 1;
    }
  }
  const accounts = Object.keys(cfg.accounts);
  const paused = await store.kvGetMany(accounts.map((a) => `paused:${a}`));
  const pausedAccounts: Summary['pausedAccounts'] = [];
  for (const a of accounts) {
    const raw = paused.get(`paused:${a}`);
    if (!raw) continue;
    try {
      const p = JSON.parse(raw) as { status?: number; reason?: string; since?: number };
      pausedAccounts.push({ account: a, status: Number(p.status ?? 0), reason: String(p.reason ?? ''), since: Number(p.since ?? 0) });
    } catch {
      pausedAccounts.push({ account: a, status: 0, reason: 'unreadable pause record', since: 0 });
    }
  }
  const { backfill, reconcile } = await readOperations(store, accounts);
  return {
    ...stats,
    oldestPendingAgeSeconds: stats.oldestPendingAt === null ? 0 : Math.round((now - stats.oldestPendingAt) / 1000),
    failuresLastHour,
    perMinute,
    sampled: recent.length >= DELIVERY_SAMPLE,
    pausedAccounts,
    backfill,
    reconcile,
  };
}

function print(s: Summary, json: boolean): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(s, null, 2)}\n`);
    return;
  }
  const lines = [
    `inbox: ${s.inboxPending} waiting to be routed${s.inboxFailed ? `, ${s.inboxFailed} FAILED (kommo-sync replay --inbox, after fixing the cause in the logs)` : ''}`,
    `jobs:  ${s.jobs.pending} pending, ${s.jobs.leased} in flight, ${s.jobs.done} done, ${s.jobs.dead} dead`,
    `oldest pending job: ${age(s.oldestPendingAgeSeconds)}`,
  ];
  for (const p of s.pausedAccounts) {
    lines.push(`PAUSED account ${p.account} since ${new Date(p.since).toISOString()}: Kommo refused its credentials (${p.status}): ${p.reason}. Its Kommo work waits; fix the credentials and restart, or \`kommo-sync replay\` to try again.`);
  }
  lines.push('', `destination                     queued   dead  ok/min  failed/min  failures (1 h)${s.sampled ? ' (at least)' : ''}`);
  const names = new Set([...Object.keys(s.depthByDestination), ...Object.keys(s.deadByDestination), ...Object.keys(s.failuresLastHour), ...Object.keys(s.perMinute)]);
  for (const n of [...names].sort()) {
    const m = s.perMinute[n] ?? { ok: 0, retry: 0, failed: 0 };
    lines.push(`${n.padEnd(30)} ${String(s.depthByDestination[n] ?? 0).padStart(7)} ${String(s.deadByDestination[n] ?? 0).padStart(6)} ${String(m.ok).padStart(7)} ${String(m.failed + m.retry).padStart(11)} ${String(s.failuresLastHour[n] ?? 0).padStart(15)}`);
  }
  if (names.size === 0) lines.push(s.jobs.done > 0 ? '(nothing queued: all done)' : '(no jobs yet)');
  const accounts = new Set([...Object.keys(s.backfill), ...Object.keys(s.reconcile)]);
  if (accounts.size) lines.push('');
  for (const a of [...accounts].sort()) {
    const b = s.backfill[a];
    if (b) {
      const of = b.total !== null ? ` of ${b.total}` : '';
      const extra = b.status === 'failed' ? `: ${b.error}` : b.waiting ? ` (${b.waiting})` : '';
      lines.push(`backfill ${a}: ${b.filter}: ${b.status}, ${b.leads}${of} leads, ${b.synced} synced, ${b.skipped} with nothing to send${extra}`);
    }
    const r = s.reconcile[a];
    if (r) lines.push(`missed webhooks ${a}: checked ${age(Math.round((Date.now() - r.at) / 1000))} ago (${r.read} Kommo events read, ${r.found} no webhook had brought); ${r.totalFound} found in all`);
  }
  if (s.jobs.dead > 0) lines.push('', 'Dead-lettered jobs can be retried with: kommo-sync replay --dead');
  process.stdout.write(`${lines.join('\n')}\n`);
}

function age(seconds: number): string {
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 3600)} h`;
}
