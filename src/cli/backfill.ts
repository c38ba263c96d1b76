/**
 * `kommo-sync backfill`: syncs the leads that existed before kommo-sync was set up. This command
 * resolves the options, asks the running service to do it (the work runs in the service's router,
 * where live events go first and Kommo's budget is shared: runtime/backfill.ts), and shows the
 * progress the service writes back; Ctrl-C pauses it, the same command resumes it. `--dry-run`
 * reads the first leads here and prints what would be sent, without queueing anything.
 */
import pino from 'pino';
import { CatalogLookupError } from '../kommo/catalog.js';
import type { LeadListFilter } from '../kommo/client.js';
import { MAX_PAGE } from '../kommo/client.js';
import { AccountRuntime } from '../runtime/account.js';
import {
  BackfillConflict,
  describeFilter,
  filterKey,
  markPaused,
  readBackfill,
  requestBackfill,
  requestPause,
  type BackfillFilter,
  type BackfillState,
} from '../runtime/backfill.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';
import { loadConfig } from './context.js';
import { UsageError } from './errors.js';

export interface BackfillOptions {
  config?: string;
  account?: string;
  since?: string;
  pipeline?: string;
  stage?: string;
  dryRun?: boolean;
  /** Dry run: how many leads to read and show (default one page, 250). */
  limit?: number;
  restart?: boolean;
  detach?: boolean;
  pause?: boolean;
  json?: boolean;
}

/** How often the progress is read from the store. */
const POLL_MS = 500;
/** No sign of a service after this long: say how the backfill gets done. */
const NO_SERVICE_HINT_MS = 10_000;
/** After Ctrl-C, how long to wait for the service to confirm the pause. */
const PAUSE_WAIT_MS = 15_000;

export async function backfill(o: BackfillOptions): Promise<void> {
  const loaded = loadConfig(o.config);
  const names = Object.keys(loaded.config.accounts);
  if (o.account !== undefined && !names.includes(o.account)) {
    throw new UsageError(`--account: no account "${o.account}" in ${loaded.file} (configured: ${names.join(', ')})`);
  }
  const accounts = o.account !== undefined ? [o.account] : names;
  let since: number | undefined;
  if (o.since !== undefined) {
    const t = Date.parse(o.since);
    if (Number.isNaN(t)) throw new UsageError(`--since: expected a date like 2026-01-31 or 2026-01-31T10:00:00Z, got "${o.since}"`);
    since = Math.floor(t / 1000);
  }
  if (o.limit !== undefined && !o.dryRun) throw new UsageError('--limit applies to --dry-run only (a backfill reads every lead that matches)');
  const store = await openStore(loaded.config.store);
  const log = pino({ level: 'silent' });
  try {
    const runtimes = new Map(accounts.map((name) => [name, new AccountRuntime(name, loaded.config.accounts[name]!, loaded.destinations[name] ?? [], loaded, store, log)]));
    const filters = new Map<string, BackfillFilter>();
    for (const [name, rt] of runtimes) filters.set(name, await resolveFilter(rt, { since, pipeline: o.pipeline, stage: o.stage }));
    if (o.dryRun) {
      await dryRun(runtimes, filters, o.limit ?? MAX_PAGE, o.json === true);
      return;
    }
    if (o.pause) {
      await pause(store, filters, o.json === true);
      return;
    }
    await run(store, filters, o);
  } finally {
    await store.close();
  }
}

/** `--pipeline` / `--stage` names -> ids, with the nearest name suggested for a typo. */
async function resolveFilter(rt: AccountRuntime, o: { since: number | undefined; pipeline: string | undefined; stage: string | undefined }): Promise<BackfillFilter> {
  const f: BackfillFilter = {};
  if (o.since !== undefined) f.since = o.since;
  if (o.pipeline === undefined && o.stage === undefined) return f;
  await rt.catalog.load();
  try {
    if (o.pipeline !== undefined) {
      const p = rt.catalog.resolvePipelineByName(o.pipeline);
      f.pipeline = { id: p.id, name: p.name };
    }
    if (o.stage !== undefined) {
      // "Stage" alone may exist in several pipelines: --pipeline says which.
      const wanted = f.pipeline && !o.stage.includes('/') ? `${f.pipeline.name} / ${o.stage}` : o.stage;
      const s = rt.catalog.resolveStageByName(wanted);
      if (f.pipeline && s.pipelineId !== f.pipeline.id) throw new CatalogLookupError(`stage "${o.stage}" is not in pipeline "${f.pipeline.name}"`);
      f.stage = { pipelineId: s.pipelineId, statusId: s.id, name: `${s.pipeline} / ${s.name}` };
      f.pipeline = { id: s.pipelineId, name: s.pipeline };
    }
  } catch (err) {
    if (err instanceof CatalogLookupError) throw new UsageError(`${o.stage !== undefined && !err.message.startsWith('pipeline') ? '--stage' : '--pipeline'}: ${err.message} (account ${rt.name})`);
    throw err;
  }
  return f;
}

// ---------------------------------------------------------------------------------------------
// The real run: request, then follow the progress

async function run(store: Store, filters: Map<string, BackfillFilter>, o: BackfillOptions): Promise<void> {
  const out = new Output(o.json === true);
  const runs: Array<{ account: string; key: string }> = [];
  for (const [account, filter] of filters) {
    let req;
    try {
      req = await requestBackfill(store, account, filter, { restart: o.restart === true });
    } catch (err) {
      if (err instanceof BackfillConflict) throw new UsageError(err.message);
      throw err;
    }
    const what = describeFilter(filter);
    if (req.alreadyDone) {
      out.say(`${account}: the backfill of ${what} finished ${ago(req.state.finishedAt ?? req.state.updatedAt)} (${fmt(req.state.leads)} leads); nothing to do. --restart sends every lead again.`, { type: 'done', account, alreadyDone: true, ...summary(req.state) });
      continue;
    }
    out.say(`${account}: ${req.resumed ? `resuming the backfill of ${what} at page ${req.state.page + 1} (${fmt(req.state.leads)} leads done)` : `backfill of ${what} requested`}`, { type: 'requested', account, resumed: req.resumed, filter: what });
    runs.push({ account, key: req.state.key });
  }
  if (runs.length === 0) return;
  if (o.detach) {
    out.say(`A running \`kommo-sync serve\` (or \`worker\`) does it; \`kommo-sync status\` shows its progress.`, { type: 'detached' });
    return;
  }

  let interrupted = false;
  const onSigint = () => {
    interrupted = true;
  };
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigint);
  const started = Date.now();
  const rates = new Map<string, Rate>();
  let hinted = false;
  try {
    for (;;) {
      const states = await Promise.all(runs.map((r) => readBackfill(store, r.account, r.key)));
      const now = Date.now();
      for (const [i, s] of states.entries()) {
        if (!s) continue;
        const rate = rates.get(s.account) ?? new Rate();
        rates.set(s.account, rate);
        rate.add(now, s.leads);
        out.progress(s, rate.perSecond(), now);
      }
      if (states.every((s) => !s || s.status === 'done' || s.status === 'failed' || s.status === 'paused')) {
        out.end();
        for (const s of states) if (s) out.finished(s);
        if (states.some((s) => s?.status === 'failed')) process.exitCode = 1;
        else if (states.some((s) => s?.status === 'paused')) process.exitCode = 130;
        else out.say('The jobs are delivered by the running service; `kommo-sync status` shows what is left.', { type: 'end' });
        return;
      }
      // Nothing moved since the request: nobody is working on it.
      if (!hinted && now - started > NO_SERVICE_HINT_MS && states.every((s) => !s || s.updatedAt < started)) {
        hinted = true;
        out.line(`No running kommo-sync service has picked the backfill up yet: it runs inside \`kommo-sync serve\` (or \`worker\`), where live events go first. Start one and it begins; this command keeps showing the progress (Ctrl-C pauses).`, { type: 'waiting', reason: 'no service' });
      }
      if (interrupted) {
        await pauseRuns(store, runs, out);
        process.exitCode = 130;
        return;
      }
      await sleep(POLL_MS);
    }
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigint);
  }
}

/** Ctrl-C: asks the service to pause after its current page and waits for it to say so. */
async function pauseRuns(store: Store, runs: Array<{ account: string; key: string }>, out: Output): Promise<void> {
  out.end();
  out.line('Pausing after the current page (Ctrl-C again to leave without waiting)...', { type: 'pausing' });
  process.once('SIGINT', () => process.exit(130));
  for (const r of runs) await requestPause(store, r.account, r.key);
  const deadline = Date.now() + PAUSE_WAIT_MS;
  for (const r of runs) {
    let s = await readBackfill(store, r.account, r.key);
    while (s && s.status === 'running' && Date.now() < deadline) {
      await sleep(200);
      s = await readBackfill(store, r.account, r.key);
    }
    // No service answered (none is running): the run is simply not active any more.
    if (s && s.status === 'running') await markPaused(store, r.account, r.key);
    const now = await readBackfill(store, r.account, r.key);
    if (now) out.finished(now);
  }
}

async function pause(store: Store, filters: Map<string, BackfillFilter>, json: boolean): Promise<void> {
  const out = new Output(json);
  const runs: Array<{ account: string; key: string }> = [];
  for (const [account, filter] of filters) {
    const key = filterKey(filter);
    const s = await readBackfill(store, account, key);
    if (!s || s.status !== 'running') {
      out.say(`${account}: no running backfill of ${describeFilter(filter)}${s ? ` (it is ${s.status})` : ''}.`, { type: 'not-running', account });
      continue;
    }
    runs.push({ account, key });
  }
  if (runs.length) await pauseRuns(store, runs, out);
}

// ---------------------------------------------------------------------------------------------
// Dry run

interface DryLead {
  id: number;
  name: string;
  email: string;
  stage: string;
  destinations: Record<string, string[]>;
  skipped: Record<string, string>;
}

async function dryRun(runtimes: Map<string, AccountRuntime>, filters: Map<string, BackfillFilter>, limit: number, json: boolean): Promise<void> {
  const result: Array<{ account: string; filter: string; leads: DryLead[]; ops: Record<string, Record<string, number>>; skipped: number; more: boolean }> = [];
  for (const [account, rt] of runtimes) {
    const f = filters.get(account)!;
    const list: LeadListFilter = {
      createdTo: Math.floor(Date.now() / 1000),
      ...(f.since !== undefined ? { updatedFrom: f.since } : {}),
      ...(f.stage ? { stage: { pipelineId: f.stage.pipelineId, statusId: f.stage.statusId } } : f.pipeline ? { pipelineId: f.pipeline.id } : {}),
    };
    const leads: DryLead[] = [];
    const ops: Record<string, Record<string, number>> = {};
    let skipped = 0;
    let more = false;
    for (let page = 1; leads.length < limit; page++) {
      const listed = await rt.client.leadsPage(list, page);
      const take = listed.slice(0, limit - leads.length);
      more = listed.length === MAX_PAGE || take.length < listed.length;
      for (const e of await rt.backfillLeads(take)) {
        const row: DryLead = { id: e.lead.id, name: e.lead.name, email: e.contact?.email ?? '', stage: `${e.stage.pipeline} / ${e.stage.name}`, destinations: {}, skipped: {} };
        for (const d of rt.destinations) {
          const plan = await d.plan(e, `dry-run:${e.lead.id}`);
          if (plan.ops.length) {
            row.destinations[d.name] = plan.ops.map((op) => op.kind);
            for (const op of plan.ops) {
              const per = (ops[d.name] ??= {});
              per[op.kind] = (per[op.kind] ?? 0) + 1;
            }
          } else {
            row.skipped[d.name] = plan.skipped ?? 'nothing to send';
          }
        }
        if (Object.keys(row.destinations).length === 0) skipped += 1;
        leads.push(row);
      }
      if (listed.length < MAX_PAGE) {
        more = take.length < listed.length;
        break;
      }
    }
    result.push({ account, filter: describeFilter(f), leads, ops, skipped, more });
  }
  if (json) {
    process.stdout.write(`${JSON.stringify({ dryRun: true, accounts: result })}\n`);
    return;
  }
  for (const r of result) {
    process.stdout.write(`account ${r.account}: dry run of the backfill of ${r.filter} (nothing is queued)\n`);
    for (const l of r.leads) {
      const who = `lead ${l.id} "${l.name}"${l.email ? ` <${l.email}>` : ''}, ${l.stage}`;
      const sends = Object.entries(l.destinations).map(([d, kinds]) => `${d}: ${kinds.join(', ')}`);
      const skips = Object.entries(l.skipped).map(([d, why]) => `${d}: nothing (${why})`);
      process.stdout.write(`  ${who}\n    ${[...sends, ...skips].join('; ') || 'no destination configured'}\n`);
    }
    process.stdout.write(`  ${fmt(r.leads.length)} lead${r.leads.length === 1 ? '' : 's'} shown${r.more ? ' (more match: --limit N shows more)' : ''}; would send:\n`);
    for (const [d, kinds] of Object.entries(r.ops)) process.stdout.write(`    ${d}: ${Object.entries(kinds).map(([k, n]) => `${fmt(n)} ${k}`).join(', ')}\n`);
    if (Object.keys(r.ops).length === 0) process.stdout.write('    nothing\n');
    if (r.skipped) process.stdout.write(`    ${fmt(r.skipped)} lead${r.skipped === 1 ? '' : 's'} with nothing to send (reasons above)\n`);
  }
}

// ---------------------------------------------------------------------------------------------
// Output: a progress bar on a terminal, plain lines otherwise, JSON lines with --json

class Output {
  private readonly tty = process.stdout.isTTY === true;
  private lastPlain = new Map<string, number>();
  private drawn = false;

  constructor(private readonly json: boolean) {}

  say(text: string, obj: Record<string, unknown>): void {
    this.end();
    if (this.json) process.stdout.write(`${JSON.stringify(obj)}\n`);
    else process.stdout.write(`${text}\n`);
  }

  line(text: string, obj: Record<string, unknown>): void {
    this.say(text, obj);
  }

  progress(s: BackfillState, perSecond: number | null, now: number): void {
    const eta = s.total !== null && perSecond ? Math.max(0, (s.total - s.leads) / perSecond) : null;
    if (this.json) {
      if (now - (this.lastPlain.get(s.account) ?? 0) < 2000) return;
      this.lastPlain.set(s.account, now);
      process.stdout.write(`${JSON.stringify({ type: 'progress', account: s.account, status: s.status, leads: s.leads, total: s.total, synced: s.synced, skipped: s.skipped, jobs: s.jobs, page: s.page, perSecond: perSecond === null ? null : Math.round(perSecond), etaSeconds: eta === null ? null : Math.round(eta), waiting: s.waiting })}\n`);
      return;
    }
    const text = progressText(s, perSecond, eta);
    if (this.tty) {
      const width = process.stdout.columns ?? 100;
      process.stdout.write(`\r${text.slice(0, width - 1).padEnd(Math.min(width - 1, text.length + 10))}`);
      this.drawn = true;
      return;
    }
    // Plain lines for logs and CI: one every 5 s.
    if (now - (this.lastPlain.get(s.account) ?? 0) < 5000) return;
    this.lastPlain.set(s.account, now);
    process.stdout.write(`${text}\n`);
  }

  /** Ends the progress line (a terminal's bar stays on screen). */
  end(): void {
    if (this.drawn) process.stdout.write('\n');
    this.drawn = false;
  }

  finished(s: BackfillState): void {
    const took = fmtDuration(((s.finishedAt ?? s.updatedAt) - s.startedAt) / 1000);
    if (s.status === 'done') {
      this.say(`${s.account}: backfill done: ${fmt(s.leads)} leads read, ${fmt(s.synced)} synced (${fmt(s.jobs)} jobs queued), ${fmt(s.skipped)} with nothing to send, in ${took}.`, { type: 'done', ...summary(s) });
    } else if (s.status === 'paused') {
      this.say(`${s.account}: backfill paused after page ${s.page} (${fmt(s.leads)}${s.total !== null ? ` of ${fmt(s.total)}` : ''} leads). Run the same command to resume.`, { type: 'paused', ...summary(s) });
    } else if (s.status === 'failed') {
      this.say(`${s.account}: backfill stopped: ${s.error ?? 'unknown error'}. Fix the cause and run the same command to resume at page ${s.page + 1}.`, { type: 'failed', error: s.error, ...summary(s) });
    }
  }
}

function progressText(s: BackfillState, perSecond: number | null, eta: number | null): string {
  if (s.total === null) return `${s.account}  counting the leads... (${s.requests} requests)${s.waiting ? `  ${s.waiting}` : ''}`;
  const total = Math.max(s.total, s.leads);
  const share = total === 0 ? 1 : Math.min(1, s.leads / total);
  const width = 24;
  const filled = Math.round(share * width);
  const bar = `${'#'.repeat(filled)}${'-'.repeat(width - filled)}`;
  const rate = perSecond === null ? '' : `  ${fmt(Math.round(perSecond))}/s`;
  const left = eta === null ? '' : `  ETA ${fmtDuration(eta)}`;
  return `${s.account}  [${bar}] ${String(Math.floor(share * 100)).padStart(3)}%  ${fmt(s.leads)}/${fmt(total)} leads${rate}${left}${s.waiting ? `  (${s.waiting})` : ''}`;
}

function summary(s: BackfillState): Record<string, unknown> {
  return { account: s.account, filter: describeFilter(s.filter), status: s.status, leads: s.leads, total: s.total, synced: s.synced, skipped: s.skipped, jobs: s.jobs, pages: s.page, kommoRequests: s.requests, seconds: Math.round(((s.finishedAt ?? s.updatedAt) - s.startedAt) / 1000) };
}

/** Leads per second over the last 10 s of samples. */
class Rate {
  private readonly samples: Array<[number, number]> = [];
  add(at: number, leads: number): void {
    this.samples.push([at, leads]);
    while (this.samples.length > 2 && at - this.samples[0]![0] > 10_000) this.samples.shift();
  }
  perSecond(): number | null {
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    if (!first || !last || last[0] - first[0] < 1000 || last[1] === first[1]) return null;
    return ((last[1] - first[1]) * 1000) / (last[0] - first[0]);
  }
}

const fmt = (n: number): string => n.toLocaleString('en-US');

function fmtDuration(seconds: number): string {
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

function ago(at: number): string {
  return `${fmtDuration((Date.now() - at) / 1000)} ago`;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
