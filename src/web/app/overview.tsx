/**
 * Overview: counters, health per account and per destination and direction, the events chart,
 * backfill and reconciliation per account.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import type { DestinationHealth, OverviewResponse, SeriesLine } from '../../http/admin-types.js';
import { onOverview } from './api.js';
import { duration, ms, pct, plural, time } from './format.js';
import { OperationsPanel } from './operations.js';
import { Badge, Table } from './ui.js';

const COLORS = ['#2563eb', '#16a34a', '#d97706', '#9333ea', '#0891b2', '#db2777', '#4b5563', '#65a30d', '#dc2626', '#0d9488'];

function lineLabel(l: SeriesLine): string {
  return l.direction === 'out' ? `${l.key} (out)` : `${l.key} (in)`;
}

function Chart({ o }: { o: OverviewResponse }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const shape = o.series.lines.map(lineLabel).join('|');
  const data: uPlot.AlignedData = [o.series.buckets.map((b) => b / 1000), ...o.series.lines.map((l) => l.values)];
  useEffect(() => {
    const el = box.current;
    if (!el) return undefined;
    const width = () => Math.max(280, el.clientWidth);
    plot.current?.destroy();
    plot.current = new uPlot({
      width: width(),
      height: 240,
      series: [{}, ...o.series.lines.map((l, i) => ({
        label: lineLabel(l),
        stroke: COLORS[Math.floor(i / 1) % COLORS.length],
        width: 1.5,
        dash: l.direction === 'in' ? [6, 4] : undefined,
        value: (_u: uPlot, v: number | null) => (v === null ? '–' : `${v}/min`),
      }))],
      axes: [{}, { label: 'per minute', size: 50 }],
      scales: { x: { time: true } },
      legend: { live: true },
    }, data, el);
    const onResize = () => plot.current?.setSize({ width: width(), height: 240 });
    window.addEventListener('resize', onResize);
    return () => {
      window.removeEventListener('resize', onResize);
      plot.current?.destroy();
      plot.current = null;
    };
  }, [shape]);
  useEffect(() => {
    plot.current?.setData(data);
  });
  // The same numbers as text, for screen readers and for reading exact values.
  const last = o.series.buckets.length - 1;
  return (
    <figure class="chart">
      <div ref={box} aria-hidden="true" />
      <figcaption>
        Operations delivered (out, solid) and events received (in, dashed) per minute, last 3 hours.
        <details>
          <summary>As a table (last 5 minutes)</summary>
          <Table caption="Per minute, last 5 minutes">
            <thead>
              <tr><th scope="col">series</th>{[4, 3, 2, 1, 0].map((k) => <th scope="col" key={k}>{o.series.buckets[last - k] ? time(o.series.buckets[last - k]!) : ''}</th>)}</tr>
            </thead>
            <tbody>
              {o.series.lines.map((l) => (
                <tr key={lineLabel(l)}><th scope="row">{lineLabel(l)}</th>{[4, 3, 2, 1, 0].map((k) => <td key={k}>{l.values[last - k] ?? 0}</td>)}</tr>
              ))}
            </tbody>
          </Table>
        </details>
      </figcaption>
    </figure>
  );
}

function Counter({ label, value, testid, kind }: { label: string; value: string | number; testid: string; kind?: string }) {
  return (
    <div class={`counter ${kind ?? ''}`}>
      <dt>{label}</dt>
      <dd data-testid={testid}>{value}</dd>
    </div>
  );
}

function DestinationRows({ d }: { d: DestinationHealth }) {
  return (
    <>
      <tr class={`health-${d.status}`} data-testid={`dest-${d.key}`}>
        <th scope="row" rowSpan={d.in ? 2 : 1}>
          <a href={`#/events?destination=${encodeURIComponent(d.key)}`}>{d.key}</a>
          <div class="sub">{d.title}</div>
        </th>
        <td>out</td>
        <td>{d.out.perMinute}</td>
        <td>{pct(d.out.successRate)}<div class="sub">{d.out.ok} ok · {d.out.retried} retried · {d.out.failed} failed</div></td>
        <td>{ms(d.out.p50)} / {ms(d.out.p95)}</td>
        <td>{d.out.depth}</td>
        <td>{duration(d.out.oldestPendingAgeSeconds)}</td>
        <td>{d.out.dead ? <a href="#/failures">{d.out.dead}</a> : 0}</td>
        <td rowSpan={d.in ? 2 : 1}>
          <Badge kind={d.status}>{d.status === 'ok' ? 'ok' : d.status === 'warn' ? 'attention' : 'problem'}</Badge>
          {d.reasons.length ? <ul class="reasons">{d.reasons.map((r) => <li key={r}>{r}</li>)}</ul> : null}
        </td>
      </tr>
      {d.in ? (
        <tr class={`health-${d.status}`}>
          <td>in</td>
          <td>{d.in.perMinute}</td>
          <td colSpan={5}><span class="sub">{plural(d.in.lastHour, 'event')} received in the last hour</span></td>
        </tr>
      ) : null}
    </>
  );
}

export function OverviewPage() {
  const [o, setO] = useState<OverviewResponse | null>(null);
  useEffect(() => onOverview(setO), []);
  if (!o) return <section><h1>Overview</h1><p>Waiting for the first numbers…</p></section>;
  const q = o.queue;
  return (
    <section class="overview">
      <h1>Overview</h1>
      <div class={`banner ${o.status}`} role="status" aria-live="polite" data-testid="status-banner">
        {o.problems.length === 0 ? <p>Everything is running: nothing waits, nothing failed.</p> : (
          <>
            <p><strong>{o.status === 'error' ? 'Something is wrong:' : 'Worth a look:'}</strong></p>
            <ul>{o.problems.map((p) => <li key={p}>{p}</li>)}</ul>
          </>
        )}
      </div>
      <dl class="counters">
        <Counter label="Inbox waiting" value={q.inboxPending} testid="c-inbox" />
        <Counter label="Jobs pending" value={q.pending} testid="c-pending" />
        <Counter label="In flight" value={q.inFlight} testid="c-inflight" />
        <Counter label="Delivered" value={q.done} testid="c-done" />
        <Counter label="Dead letters" value={q.dead} testid="c-dead" kind={q.dead ? 'bad' : ''} />
        <Counter label="Not routed" value={q.inboxFailed} testid="c-unrouted" kind={q.inboxFailed ? 'bad' : ''} />
        <Counter label="Oldest pending" value={duration(q.oldestPendingAgeSeconds)} testid="c-oldest" />
      </dl>
      <Chart o={o} />
      <h2>Kommo accounts</h2>
      <Table caption="Kommo accounts" testid="accounts">
        <thead><tr><th scope="col">account</th><th scope="col">rate budget in use</th><th scope="col">paused (403)</th><th scope="col">Kommo pushback</th><th scope="col">state</th></tr></thead>
        <tbody>
          {o.accounts.map((a) => (
            <tr key={a.account} class={`health-${a.status}`}>
              <th scope="row">{a.account}</th>
              <td>{a.budget ? `${a.budget.inUse} / ${a.budget.limit} per second${a.budget.waiting ? `, ${a.budget.waiting} waiting` : ''}` : 'not used yet'}</td>
              <td>{a.paused ? `since ${time(a.paused.since)}: ${a.paused.reason}` : 'no'}</td>
              <td>{a.kommoBreaker ?? 'none'}</td>
              <td><Badge kind={a.status}>{a.status === 'ok' ? 'ok' : 'problem'}</Badge>{a.reasons.length ? <ul class="reasons">{a.reasons.map((r) => <li key={r}>{r}</li>)}</ul> : null}</td>
            </tr>
          ))}
        </tbody>
      </Table>
      <OperationsPanel ops={o.operations} />
      <h2>Destinations</h2>
      <Table caption="Destinations by direction" testid="destinations">
        <thead>
          <tr>
            <th scope="col">destination</th><th scope="col">direction</th><th scope="col">per minute</th><th scope="col">success (1 h)</th>
            <th scope="col">latency p50 / p95</th><th scope="col">queued</th><th scope="col">oldest pending</th><th scope="col">dead</th><th scope="col">state</th>
          </tr>
        </thead>
        <tbody>{o.destinations.map((d) => <DestinationRows key={d.key} d={d} />)}</tbody>
      </Table>
      <p class="sub">Updated {time(o.now)}. Out: operations kommo-sync delivered to the destination (Kommo: notes, tasks, contact updates). In: webhooks it received from the tool (Kommo: CRM events).</p>
    </section>
  );
}
