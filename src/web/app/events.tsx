/** Events: the sync log (newest first, filters, pages) and one event with its jobs and attempts. */
import { useEffect, useState } from 'preact/hooks';
import type { EventDetailResponse, EventRow, EventsResponse, JobView, OverviewResponse } from '../../http/admin-types.js';
import { get, onOverview, post, qs } from './api.js';
import { json, plural, time } from './format.js';
import { useLoad } from './hooks.js';
import { go } from './route.js';
import { ActionButton, Badge, ErrorNote, Table, stateKind } from './ui.js';

const FILTERS = ['account', 'destination', 'source', 'kind', 'status', 'email', 'lead'] as const;
type Filters = Partial<Record<(typeof FILTERS)[number], string>>;

const KINDS = ['lead.created', 'lead.updated', 'lead.stage_changed', 'lead.won', 'lead.lost', 'lead.responsible_changed', 'lead.deleted', 'contact.updated',
  'email.sent', 'email.delivered', 'email.opened', 'email.clicked', 'email.unsubscribed', 'email.bounced', 'email.spammed', 'tag.added', 'vendor.other'];

/** The status filter's choices: value and label. */
const STATUSES: ReadonlyArray<readonly [string, string]> = [
  ['', 'any'], ['pending', 'waiting to be routed'], ['routed', 'routed'],
  ['unrouted', 'could not be routed'], ['failed', 'failed to route'], ['dead', 'has a dead letter'],
];

export function jobSummary(r: EventRow): string {
  const j = r.jobs;
  if (r.state === 'failed') return 'not routed';
  if (r.state === 'pending') return 'waiting to be routed';
  if (j.total === 0) return r.note ? 'nothing to do (see why)' : 'nothing to do';
  const parts = [j.done && `${j.done} delivered`, j.pending && `${j.pending} queued`, j.dead && `${j.dead} dead`, j.discarded && `${j.discarded} discarded`].filter(Boolean);
  return parts.join(', ');
}

function rowKind(r: EventRow): string {
  if (r.state === 'failed' || r.jobs.dead) return 'error';
  if (r.state === 'pending' || r.jobs.pending || r.note) return 'warn';
  return 'ok';
}

export function EventTable({ events, caption }: { events: EventRow[]; caption: string }) {
  return (
    <Table caption={caption} testid="events">
      <thead>
        <tr><th scope="col">received</th><th scope="col">event</th><th scope="col">from</th><th scope="col">lead</th><th scope="col">email</th><th scope="col">outcome</th><th scope="col">to</th></tr>
      </thead>
      <tbody>
        {events.map((r) => (
          <tr key={r.id} class={`row-${rowKind(r)}`}>
            <td><a href={`#/events/${r.id}`} aria-label={`event ${r.id}: ${r.kind} at ${time(r.receivedAt)}`}>{time(r.receivedAt)}</a></td>
            <td><a href={`#/events/${r.id}`}>{r.kind}</a></td>
            <td>{r.account}/{r.source}</td>
            <td>{r.leadId !== null ? <a href={`#/leads/${encodeURIComponent(r.account)}/${r.leadId}`}>{r.leadId}</a> : '–'}</td>
            <td class="wrap">{r.email ?? '–'}</td>
            <td><Badge kind={rowKind(r)}>{jobSummary(r)}</Badge>{r.note || r.lastError ? <div class="sub wrap">{r.note ?? r.lastError}</div> : null}</td>
            <td class="wrap">{r.destinations.join(', ') || '–'}</td>
          </tr>
        ))}
      </tbody>
    </Table>
  );
}

export function EventsPage({ query }: { query: URLSearchParams }) {
  const filters: Filters = {};
  for (const f of FILTERS) {
    const v = query.get(f);
    if (v) filters[f] = v;
  }
  const key = JSON.stringify(filters);
  const [older, setOlder] = useState<EventRow[]>([]);
  const [next, setNext] = useState<number | null>(null);
  const [o, setO] = useState<OverviewResponse | null>(null);
  useEffect(() => onOverview(setO), []);
  const first = useLoad(() => get<EventsResponse>(`/api/events${qs({ ...filters, limit: 50 })}`), [key]);
  // New filters start over; a live refresh of the first page keeps the older pages already loaded.
  useEffect(() => {
    setOlder([]);
    setNext(null);
  }, [key]);
  useEffect(() => {
    if (older.length === 0) setNext(first.data?.next ?? null);
  }, [first.data]);
  const more = async () => {
    if (next === null) return;
    const page = await get<EventsResponse>(`/api/events${qs({ ...filters, before: next, limit: 50 })}`);
    setOlder((list) => [...list, ...page.events]);
    setNext(page.next);
  };
  const submit = (e: Event) => {
    e.preventDefault();
    const data = new FormData(e.currentTarget as HTMLFormElement);
    const f: Record<string, string> = {};
    for (const name of FILTERS) {
      const v = String(data.get(name) ?? '').trim();
      if (v) f[name] = v;
    }
    go(`/events${qs(f)}`);
  };
  const accounts = [...new Set(o?.destinations.map((d) => d.account) ?? [])];
  const head = first.data?.events ?? [];
  const seen = new Set(head.map((e) => e.id));
  const events = [...head, ...older.filter((e) => !seen.has(e.id))];
  return (
    <section>
      <h1>Events</h1>
      {/* Uncontrolled fields, remade when the filters change: a controlled `value` would be written
          back over what the user is typing at every live refresh (every 2 s). */}
      <form key={key} class="filters" role="search" aria-label="Filter events" onSubmit={submit}>
        <label>Account<select name="account"><option value="">any</option>{accounts.map((a) => <option key={a} selected={filters.account === a}>{a}</option>)}</select></label>
        <label>Destination<select name="destination"><option value="">any</option>{o?.destinations.map((d) => <option key={d.key} value={d.key} selected={filters.destination === d.key}>{d.key}</option>)}</select></label>
        <label>From<input name="source" defaultValue={filters.source ?? ''} placeholder="kommo, cio…" /></label>
        <label>Kind<input name="kind" list="kinds" defaultValue={filters.kind ?? ''} placeholder="email.opened" /></label>
        <datalist id="kinds">{KINDS.map((k) => <option key={k} value={k} />)}</datalist>
        <label>Status<select name="status">
          {STATUSES.map(([value, label]) => <option key={value} value={value} selected={(filters.status ?? '') === value}>{label}</option>)}
        </select></label>
        <label>Email<input name="email" type="email" defaultValue={filters.email ?? ''} /></label>
        <label>Lead id<input name="lead" inputMode="numeric" pattern="[0-9]*" defaultValue={filters.lead ?? ''} /></label>
        <div class="buttons"><button type="submit">Filter</button><a href="#/events" class="button secondary">Clear</a></div>
      </form>
      <ErrorNote error={first.error} />
      {first.data && events.length === 0 ? <p>No events match.</p> : null}
      {events.length ? <EventTable events={events} caption="Events, newest first" /> : null}
      {next !== null ? <p><button type="button" onClick={() => void more()}>Load older events</button></p> : null}
    </section>
  );
}

function JobCard({ j, onChange }: { j: JobView; onChange: () => void }) {
  return (
    <article class={`job job-${stateKind(j.state)}`} data-testid={`job-${j.id}`}>
      <header>
        <h3>Job {j.id} → {j.destination}</h3>
        <Badge kind={stateKind(j.state)}>{j.state}</Badge>
        <span class="sub">{plural(j.attempts, 'attempt')} · queued {time(j.createdAt)}{j.state === 'pending' ? ` · next try ${time(j.runAfter)}` : ''}</span>
      </header>
      {j.lastError && j.state !== 'done' ? <p class="error-text">{j.lastError}</p> : null}
      {j.discardReason ? <p class="sub">Discarded: {j.discardReason}</p> : null}
      <details>
        <summary>{plural(j.ops.length, 'operation')} for {j.subject || 'unknown'}</summary>
        <pre>{json(j.ops)}</pre>
      </details>
      {j.deliveries.length ? (
        <Table caption={`Delivery attempts of job ${j.id}`} testid={`attempts-${j.id}`}>
          <thead><tr><th scope="col">at</th><th scope="col">operation</th><th scope="col">result</th><th scope="col">vendor answer</th><th scope="col">latency</th></tr></thead>
          <tbody>
            {j.deliveries.map((d) => (
              <tr key={d.id}><td>{time(d.at)}</td><td>{d.op}</td><td><Badge kind={stateKind(d.status)}>{d.status}</Badge></td><td class="wrap">{d.answer}</td><td>{d.latencyMs} ms</td></tr>
            ))}
          </tbody>
        </Table>
      ) : <p class="sub">No delivery attempt yet.</p>}
      {j.state === 'dead' || j.state === 'done' || j.state === 'discarded' ? (
        <ActionButton label={j.state === 'dead' ? 'Replay this job' : 'Deliver again'} testid={`replay-${j.id}`} confirm={j.state === 'dead' ? undefined : 'Deliver this job again? Notes and tasks would be written twice.'}
          run={async () => {
            const r = await post<{ requeued: number }>('/api/replay', { ids: [j.id] });
            onChange();
            return r.requeued ? 'queued again' : 'not queued (in flight?)';
          }} />
      ) : null}
    </article>
  );
}

export function EventDetail({ id }: { id: number }) {
  const d = useLoad(() => get<EventDetailResponse>(`/api/events/${id}`), [id]);
  const e = d.data?.event;
  return (
    <section>
      <p><a href="#/events">← all events</a></p>
      <h1>Event {id}{e ? `: ${e.kind}` : ''}</h1>
      <ErrorNote error={d.error} />
      {e ? (
        <>
          <dl class="facts">
            <dt>received</dt><dd>{time(e.receivedAt)}</dd>
            <dt>from</dt><dd>{e.account}/{e.source}</dd>
            <dt>state</dt><dd><Badge kind={stateKind(e.state)}>{e.state}</Badge> ({plural(e.attempts, 'routing attempt')})</dd>
            <dt>lead</dt><dd>{e.leadId !== null ? <a href={`#/leads/${encodeURIComponent(e.account)}/${e.leadId}`}>{e.leadId} (timeline)</a> : '–'}</dd>
            <dt>email</dt><dd>{e.email ?? '–'}</dd>
            <dt>dedup key</dt><dd class="wrap"><code>{e.dedupKey}</code></dd>
            {e.note || e.lastError ? <><dt>why nothing came of it</dt><dd class="error-text">{e.note ?? e.lastError}</dd></> : null}
          </dl>
          {e.state === 'failed' || e.note ? (
            <ActionButton label="Route this event again" testid="reroute" run={async () => {
              const r = await post<{ requeued: number }>('/api/events/replay', { ids: [e.id] });
              d.reload();
              return r.requeued ? 'back in the inbox' : 'nothing to do';
            }} />
          ) : null}
          <h2>What arrived</h2>
          <details open><summary>Inbound payload</summary><pre data-testid="payload">{json(e.payload)}</pre></details>
          <h2>What it produced</h2>
          {d.data!.jobs.length === 0 ? <p>No jobs.</p> : d.data!.jobs.map((j) => <JobCard key={j.id} j={j} onChange={d.reload} />)}
        </>
      ) : null}
    </section>
  );
}
