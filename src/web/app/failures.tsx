/**
 * Failures: dead letters grouped by destination and reason (replay one, a selection or a group;
 * discard with a reason) and inbound events that could not be routed. Replays go through the
 * normal queue: the jobs become pending and the worker delivers them.
 */
import { useState } from 'preact/hooks';
import type { FailureGroup, FailuresResponse } from '../../http/admin-types.js';
import { get, post } from './api.js';
import { plural, time } from './format.js';
import { EventTable } from './events.js';
import { useLoad } from './hooks.js';
import { ActionButton, ErrorNote, Table } from './ui.js';

function Discard({ label, body, onDone }: { label: string; body: () => object; onDone: () => void }) {
  const [open, setOpen] = useState(false);
  const [reason, setReason] = useState('');
  const [error, setError] = useState<string | null>(null);
  if (!open) return <button type="button" class="secondary" onClick={() => setOpen(true)}>{label}…</button>;
  const submit = async (e: Event) => {
    e.preventDefault();
    try {
      await post('/api/discard', { ...body(), reason });
      setOpen(false);
      onDone();
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  };
  return (
    <form class="discard" onSubmit={(e) => void submit(e)}>
      <label>Why discard? (kept with the jobs)<input value={reason} onInput={(e) => setReason((e.currentTarget as HTMLInputElement).value)} required minLength={3} /></label>
      <button type="submit" class="danger">{label}</button>
      <button type="button" class="secondary" onClick={() => setOpen(false)}>Cancel</button>
      <ErrorNote error={error} />
    </form>
  );
}

function Group({ g, onChange }: { g: FailureGroup; onChange: () => void }) {
  const [selected, setSelected] = useState<Set<number>>(new Set());
  const toggle = (id: number) => {
    const next = new Set(selected);
    if (next.has(id)) next.delete(id);
    else next.add(id);
    setSelected(next);
  };
  const replay = async (body: object) => {
    const r = await post<{ requeued: number }>('/api/replay', body);
    setSelected(new Set());
    onChange();
    return `${plural(r.requeued, 'job')} queued again`;
  };
  const label = `${g.destination}: ${g.reason}`;
  return (
    <section class="group" aria-label={label} data-testid={`group-${g.destination}`}>
      <h3><span class="dest">{g.destination}</span> {plural(g.count, 'dead letter')}</h3>
      <p class="reason"><code>{g.reason}</code></p>
      <div class="buttons">
        <ActionButton label={`Replay all ${g.count}`} run={() => replay({ group: { destination: g.destination, reason: g.reason } })} />
        <ActionButton label={`Replay ${selected.size} selected`} disabled={selected.size === 0} run={() => replay({ ids: [...selected] })} />
        <Discard label={selected.size ? `Discard ${selected.size} selected` : `Discard all ${g.count}`} onDone={onChange}
          body={() => (selected.size ? { ids: [...selected] } : { group: { destination: g.destination, reason: g.reason } })} />
      </div>
      <Table caption={`Dead letters of ${label}`}>
        <thead><tr><th scope="col"><span class="sr-only">select</span></th><th scope="col">job</th><th scope="col">for</th><th scope="col">queued</th><th scope="col">error</th><th scope="col">action</th></tr></thead>
        <tbody>
          {g.jobs.map((j) => (
            <tr key={j.id} data-testid={`dead-${j.id}`}>
              <td><input type="checkbox" aria-label={`select job ${j.id}`} checked={selected.has(j.id)} onChange={() => toggle(j.id)} /></td>
              <td>{j.inboxId !== null ? <a href={`#/events/${j.inboxId}`}>{j.id}</a> : j.id}</td>
              <td class="wrap">{j.subject}</td>
              <td>{time(j.createdAt)}<div class="sub">{plural(j.attempts, 'attempt')}</div></td>
              <td class="wrap">{j.lastError}</td>
              <td><ActionButton label="Replay" testid={`replay-${j.id}`} run={() => replay({ ids: [j.id] })} /></td>
            </tr>
          ))}
        </tbody>
      </Table>
      {g.count > g.jobs.length ? <p class="sub">Showing {g.jobs.length} of {g.count}; “Replay all” and “Discard all” take the whole group.</p> : null}
    </section>
  );
}

export function FailuresPage() {
  const f = useLoad(() => get<FailuresResponse>('/api/failures'), []);
  return (
    <section>
      <h1>Failures</h1>
      <ErrorNote error={f.error} />
      <h2>Dead letters{f.data ? ` (${f.data.deadTotal})` : ''}</h2>
      <p class="sub">A destination refused these for good (or they failed for longer than the max age). Fix the cause, then replay: they go through the normal queue.</p>
      {f.data && f.data.groups.length === 0 ? <p data-testid="no-dead">No dead letters.</p> : null}
      {f.data?.groups.map((g) => <Group key={`${g.destination}\u0000${g.reason}`} g={g} onChange={f.reload} />)}
      <h2>Inbound events that could not be routed{f.data ? ` (${f.data.unrouted.length})` : ''}</h2>
      <p class="sub">No lead had the email, the lead was gone, the config could not map it, or Kommo was away too long. Route them again once that is fixed.</p>
      {f.data && f.data.unrouted.length === 0 ? <p>None.</p> : null}
      {f.data && f.data.unrouted.length > 0 ? (
        <>
          <ActionButton label={`Route all ${f.data.unrouted.length} again`} run={async () => {
            const r = await post<{ requeued: number }>('/api/events/replay', { ids: f.data!.unrouted.map((e) => e.id) });
            f.reload();
            return `${plural(r.requeued, 'event')} back in the inbox`;
          }} />
          <EventTable events={f.data.unrouted} caption="Events that could not be routed" />
        </>
      ) : null}
    </section>
  );
}
