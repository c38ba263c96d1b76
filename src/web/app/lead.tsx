/** Lead timeline: find a lead (id, email, name) and read everything that happened to it, in order. */
import { useEffect } from 'preact/hooks';
import type { LeadMatch, TimelineEntry, TimelineResponse } from '../../http/admin-types.js';
import { get, qs } from './api.js';
import { time } from './format.js';
import { useLoad } from './hooks.js';
import { go } from './route.js';
import { Badge, ErrorNote, stateKind } from './ui.js';

export function LeadSearchPage({ query }: { query: URLSearchParams }) {
  const q = query.get('q') ?? '';
  const found = useLoad(async () => (q ? get<{ leads: LeadMatch[] }>(`/api/leads${qs({ q })}`) : { leads: [] }), [q], false);
  useEffect(() => {
    const leads = found.data?.leads ?? [];
    if (q && leads.length === 1) go(`/leads/${encodeURIComponent(leads[0]!.account)}/${leads[0]!.leadId}`);
  }, [found.data]);
  const submit = (e: Event) => {
    e.preventDefault();
    const v = String(new FormData(e.currentTarget as HTMLFormElement).get('q') ?? '').trim();
    go(`/leads${qs({ q: v })}`);
  };
  return (
    <section>
      <h1>Lead timeline</h1>
      {/* Uncontrolled, and remade when the query changes: a controlled `value` would be written
          back over what the user is typing at every re-render (Preact compares it with the DOM). */}
      <form key={q} class="filters" role="search" aria-label="Find a lead" onSubmit={submit}>
        <label>Lead id, email or name<input name="q" defaultValue={q} required /></label>
        <div class="buttons"><button type="submit">Find</button></div>
      </form>
      <p class="sub">Ids and emails are looked up in kommo-sync's own log; a name is searched in Kommo.</p>
      <ErrorNote error={found.error} />
      {q && found.data && found.data.leads.length === 0 ? <p>No lead found for “{q}”.</p> : null}
      {found.data && found.data.leads.length > 1 ? (
        <ul class="matches">
          {found.data.leads.map((l) => (
            <li key={`${l.account}/${l.leadId}`}><a href={`#/leads/${encodeURIComponent(l.account)}/${l.leadId}`}>{l.name ?? `lead ${l.leadId}`}</a> <span class="sub">{l.account} · {l.leadId}{l.email ? ` · ${l.email}` : ''}</span></li>
          ))}
        </ul>
      ) : null}
    </section>
  );
}

function entryLabel(e: TimelineEntry): { dir: string; where: string } {
  if (e.type === 'in') return { dir: e.source === 'kommo' ? 'from Kommo' : `from ${e.source}`, where: e.kind };
  return { dir: `to ${e.destination.slice(e.destination.indexOf('/') + 1)}`, where: e.op };
}

function Entry({ e }: { e: TimelineEntry }) {
  const { dir, where } = entryLabel(e);
  const kind = e.type === 'in' ? (e.note ? 'warn' : 'in') : e.type === 'out' ? stateKind(e.status) : stateKind(e.state);
  return (
    <li class={`entry ${e.type} ${kind}`} data-testid={`tl-${e.type}`}>
      <time dateTime={new Date(e.at).toISOString()}>{time(e.at)}</time>
      <span class="dir">{dir}</span>
      <span class="what">
        <strong>{e.text}</strong> <span class="sub">{where}</span>
        {e.type === 'in' && e.note ? <div class="error-text">{e.note}</div> : null}
        {e.type === 'out' ? <div class="sub">{e.answer}</div> : null}
      </span>
      <span class="state">
        {e.type === 'out' ? <Badge kind={stateKind(e.status)}>{e.status}</Badge> : e.type === 'queued' ? <Badge kind={stateKind(e.state)}>{e.state}</Badge> : null}
        {e.type === 'in' ? <a href={`#/events/${e.eventId}`}>event</a> : e.eventId !== null ? <a href={`#/events/${e.eventId}`}>job {e.jobId}</a> : null}
      </span>
    </li>
  );
}

export function LeadPage({ account, leadId }: { account: string; leadId: number }) {
  const t = useLoad(() => get<TimelineResponse>(`/api/leads/${encodeURIComponent(account)}/${leadId}`), [account, leadId]);
  return (
    <section>
      <p><a href="#/leads">← find another lead</a></p>
      <h1>Lead {leadId}{t.data?.email ? ` · ${t.data.email}` : ''}</h1>
      <p class="sub">Account {account}. Everything kommo-sync received about this lead and everything it sent, oldest first: stage changes in, identifies and events out, opens and clicks back, notes and tasks written, suppressions.
        {' '}<a href={`#/events?account=${encodeURIComponent(account)}&lead=${leadId}`}>As events</a></p>
      <ErrorNote error={t.error} />
      {t.data && t.data.entries.length === 0 ? <p>Nothing recorded for this lead (yet, or pruned after the retention period).</p> : null}
      {t.data?.truncated ? <p class="sub">Only the most recent events are shown.</p> : null}
      {t.data ? <ol class="timeline" data-testid="timeline">{t.data.entries.map((e, i) => <Entry key={i} e={e} />)}</ol> : null}
    </section>
  );
}
