/**
 * Overview panel: the long-running operations of each Kommo account. The latest backfill (status,
 * filter, progress, why it waits, times) and the reconciliation of missed webhooks (last run, what
 * it found). Before either ever ran it is one hint line, not an empty table.
 */
import type { AccountOperations, BackfillView } from '../../http/admin-types.js';
import { duration, plural, time } from './format.js';
import { Badge, Table } from './ui.js';

const KIND: Record<BackfillView['status'], string> = { running: 'in', paused: 'warn', done: 'ok', failed: 'error' };

function every(ms: number | null): string {
  return ms ? ` (every ${duration(ms / 1000)})` : '';
}

function Progress({ account, b }: { account: string; b: BackfillView }) {
  const label = `Backfill progress of ${account}`;
  if (b.total === null) {
    return (
      <div class="progress">
        <progress aria-label={label} data-testid={`ops-progress-${account}`} />
        <span class="sub">counting the leads…</span>
      </div>
    );
  }
  // Kommo changes meanwhile: more leads may be read than were counted.
  const max = Math.max(b.total, b.leads, 1);
  const value = b.status === 'done' ? max : Math.min(b.leads, max);
  const pct = Math.floor((value / max) * 100);
  return (
    <div class="progress">
      <progress max={max} value={value} aria-label={label} data-testid={`ops-progress-${account}`}>{pct}%</progress>
      <span>{pct}%</span>
    </div>
  );
}

function BackfillCells({ account, b }: { account: string; b: BackfillView | null }) {
  if (!b) return <td colSpan={3} class="sub">none yet: <code>kommo-sync backfill</code> syncs the leads Kommo already has</td>;
  return (
    <>
      <td>
        <Badge kind={KIND[b.status]}>{b.status}</Badge> {b.filter}
        {b.waiting && b.status === 'running' ? <div class="sub">waiting: {b.waiting}</div> : null}
        {b.error ? <ul class="reasons"><li>{b.error}</li></ul> : null}
      </td>
      <td>
        <Progress account={account} b={b} />
        <div data-testid={`ops-synced-${account}`}><strong>{b.synced} / {b.total ?? '?'}</strong> leads synced</div>
        <div class="sub">{b.leads} read · {b.skipped} with nothing to send · {plural(b.jobs, 'job')} queued</div>
      </td>
      <td>
        <div>started {time(b.startedAt)}</div>
        <div class="sub">
          {b.finishedAt !== null
            ? `finished ${time(b.finishedAt)} (took ${duration((b.finishedAt - b.startedAt) / 1000)})`
            : `updated ${time(b.updatedAt)}`}
        </div>
      </td>
    </>
  );
}

function ReconcileCell({ r }: { r: AccountOperations['reconcile'] }) {
  if (r.everyMs === 0) return <>off (<code>kommo.reconcile: 0</code>)</>;
  if (!r.last) return <>not run yet{every(r.everyMs)}</>;
  return (
    <>
      checked {time(r.last.at)}: {plural(r.last.read, 'Kommo event')} read, {r.last.found} no webhook had brought
      <div class="sub">{r.last.totalFound} found in all{every(r.everyMs)}</div>
    </>
  );
}

/** For the "nothing ran yet" line: whether the reconciliation is off or when it runs. */
function reconcileHint(ops: AccountOperations[]): string {
  const on = ops.filter((o) => o.reconcile.everyMs !== 0);
  if (on.length === 0) return 'the reconciliation of missed webhooks is off (kommo.reconcile: 0)';
  const soonest = Math.min(...on.map((o) => o.reconcile.everyMs ?? Infinity));
  return `the reconciliation of missed webhooks has not run yet${Number.isFinite(soonest) ? ` (every ${duration(soonest / 1000)})` : ''}`;
}

export function OperationsPanel({ ops }: { ops: AccountOperations[] | null }) {
  if (!ops || ops.length === 0) return null;
  const idle = ops.every((o) => o.backfill === null && (o.reconcile.everyMs === 0 || o.reconcile.last === null));
  return (
    <>
      <h2>Backfill and missed webhooks</h2>
      {idle ? (
        <p class="hint" data-testid="operations-hint">No backfill yet: <code>kommo-sync backfill</code> syncs the leads Kommo already has; {reconcileHint(ops)}.</p>
      ) : (
        <Table caption="Backfill and reconciliation per Kommo account" testid="operations">
          <thead>
            <tr><th scope="col">account</th><th scope="col">latest backfill</th><th scope="col">progress</th><th scope="col">when</th><th scope="col">missed webhooks (reconciliation)</th></tr>
          </thead>
          <tbody>
            {ops.map((o) => (
              <tr key={o.account} data-testid={`ops-${o.account}`} class={o.backfill?.status === 'failed' ? 'health-error' : o.backfill?.status === 'paused' ? 'health-warn' : ''}>
                <th scope="row">{o.account}</th>
                <BackfillCells account={o.account} b={o.backfill} />
                <td data-testid={`ops-reconcile-${o.account}`}><ReconcileCell r={o.reconcile} /></td>
              </tr>
            ))}
          </tbody>
        </Table>
      )}
    </>
  );
}
