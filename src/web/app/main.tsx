/**
 * The dashboard page: a header with the sections and the overall state, and one section at a time
 * (hash routes, so a view is a link an operator can share): overview, events, lead timeline,
 * failures, configuration. Live data arrives by server-sent events (api.ts).
 */
import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import 'uplot/dist/uPlot.min.css';
import './app.css';
import type { OverviewResponse } from '../../http/admin-types.js';
import { loadSession, logout, onLiveState, onOverview, session, startLive } from './api.js';
import { ConfigPage } from './config.js';
import { EventDetail, EventsPage } from './events.js';
import { FailuresPage } from './failures.js';
import { LeadPage, LeadSearchPage } from './lead.js';
import { OverviewPage } from './overview.js';
import { useHashRoute } from './route.js';

const SECTIONS = [
  { path: '/overview', label: 'Overview' },
  { path: '/events', label: 'Events' },
  { path: '/leads', label: 'Lead timeline' },
  { path: '/failures', label: 'Failures' },
  { path: '/config', label: 'Configuration' },
] as const;

function Header({ path }: { path: string }) {
  const [o, setO] = useState<OverviewResponse | null>(null);
  const [live, setLive] = useState('connecting');
  useEffect(() => onOverview(setO), []);
  useEffect(() => onLiveState(setLive), []);
  const dead = o?.queue.dead ?? 0;
  const unrouted = o?.queue.inboxFailed ?? 0;
  return (
    <header class="top">
      <div class="brand">
        <a href="#/overview">kommo-sync</a>
        <span class={`pill ${o?.status ?? 'unknown'}`} data-testid="global-status">
          {o ? (o.status === 'ok' ? 'all good' : o.status === 'warn' ? 'attention' : 'problem') : '…'}
        </span>
        <span class={`live ${live}`} title="how this page gets its updates">{live === 'live' ? 'live' : live === 'polling' ? 'polling' : 'connecting'}</span>
      </div>
      <nav aria-label="Sections">
        <ul>
          {SECTIONS.map((s) => (
            <li key={s.path}>
              <a href={`#${s.path}`} aria-current={path.startsWith(s.path) ? 'page' : undefined}>
                {s.label}
                {s.path === '/failures' && dead + unrouted > 0 ? <span class="count" aria-label={`${dead + unrouted} to look at`}>{dead + unrouted}</span> : null}
              </a>
            </li>
          ))}
        </ul>
      </nav>
      {session?.mode === 'token' ? <button type="button" class="link" onClick={() => void logout()}>Log out</button> : null}
    </header>
  );
}

function App() {
  const route = useHashRoute();
  const main = useRef<HTMLElement>(null);
  // A new section: move focus to its heading, so keyboard and screen-reader users land on it
  // (not on the first load: there the skip link comes first, as on any page).
  const first = useRef(true);
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    const h = main.current?.querySelector('h1');
    if (h) {
      h.setAttribute('tabindex', '-1');
      h.focus({ preventScroll: true });
    }
  }, [route.path]);
  const parts = route.path.split('/').filter(Boolean);
  let page;
  if (parts[0] === 'events' && parts[1]) page = <EventDetail id={Number(parts[1])} />;
  else if (parts[0] === 'events') page = <EventsPage query={route.query} />;
  else if (parts[0] === 'leads' && parts[1] && parts[2]) page = <LeadPage account={decodeURIComponent(parts[1])} leadId={Number(parts[2])} />;
  else if (parts[0] === 'leads') page = <LeadSearchPage query={route.query} />;
  else if (parts[0] === 'failures') page = <FailuresPage />;
  else if (parts[0] === 'config') page = <ConfigPage />;
  else page = <OverviewPage />;
  return (
    <>
      <Header path={`/${parts[0] ?? 'overview'}`} />
      <main id="main" ref={main}>{page}</main>
    </>
  );
}

/** The skip link moves focus without touching the hash (the hash is the router's). */
function skipLink(): void {
  document.querySelector('a.skip')?.addEventListener('click', (e) => {
    e.preventDefault();
    const main = document.getElementById('main');
    main?.setAttribute('tabindex', '-1');
    main?.focus();
  });
}

async function start(): Promise<void> {
  skipLink();
  await loadSession();
  startLive();
  const root = document.getElementById('app')!;
  root.textContent = '';
  render(<App />, root);
}

void start().catch((err: unknown) => {
  const root = document.getElementById('app');
  if (root) root.textContent = `The dashboard could not start: ${err instanceof Error ? err.message : String(err)}`;
});
