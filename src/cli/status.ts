/** `kommo-sync status`: queue depth, dead letters and recent failures per destination. */
import { withStore } from './context.js';

export async function status(o: { config?: string; json?: boolean }): Promise<void> {
  await withStore(o.config, async (store) => {
    const now = Date.now();
    const stats = await store.stats(now);
    const failures = await store.listDeliveries({ limit: 200, since: now - 3_600_000 });
    const recentFailures: Record<string, number> = {};
    for (const d of failures) if (d.status !== 'ok') recentFailures[d.destination] = (recentFailures[d.destination] ?? 0) + 1;
    const summary = { ...stats, oldestPendingAgeSeconds: stats.oldestPendingAt === null ? 0 : Math.round((now - stats.oldestPendingAt) / 1000), failuresLastHour: recentFailures };
    if (o.json) {
      process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
      return;
    }
    const lines = [
      `inbox: ${stats.inboxPending} waiting to be routed${stats.inboxFailed ? `, ${stats.inboxFailed} FAILED (kommo-sync replay --inbox, after fixing the cause in the logs)` : ''}`,
      `jobs:  ${stats.jobs.pending} pending, ${stats.jobs.leased} in flight, ${stats.jobs.done} done, ${stats.jobs.dead} dead`,
      `oldest pending job: ${summary.oldestPendingAgeSeconds} s`,
      '',
      'destination                     queued   dead   failures (1 h)',
    ];
    const names = new Set([...Object.keys(stats.depthByDestination), ...Object.keys(stats.deadByDestination), ...Object.keys(recentFailures)]);
    for (const n of [...names].sort()) {
      lines.push(`${n.padEnd(30)} ${String(stats.depthByDestination[n] ?? 0).padStart(7)} ${String(stats.deadByDestination[n] ?? 0).padStart(6)} ${String(recentFailures[n] ?? 0).padStart(8)}`);
    }
    if (names.size === 0) lines.push(stats.jobs.done > 0 ? '(nothing queued: all done)' : '(no jobs yet)');
    if (stats.jobs.dead > 0) lines.push('', 'Dead-lettered jobs can be retried with: kommo-sync replay --dead');
    process.stdout.write(`${lines.join('\n')}\n`);
  });
}
