/**
 * Backfill: the leads that existed before kommo-sync was set up, synced as `lead.backfill` events
 * (the person and the list of the lead's stage; no marketing event, workflow or Kommo note unless
 * configured for that kind: see docs/operations.md).
 *
 * Who does what:
 * - `kommo-sync backfill` (cli/backfill.ts) resolves the filter, writes a request into the store
 *   (`requestBackfill`) and shows the progress the service writes back;
 * - the running service does the work, one page at a time, in its router (`Backfiller.step`, the
 *   router's `idle` work): only when no inbox event waits, and under the router's lock. So live
 *   events go first, a page read from Kommo is queued in order with the live events around it (an
 *   older read can never overwrite a newer one at a destination), and Kommo's budget is the one the
 *   live traffic uses: the same process's account limiter (the store's on PostgreSQL);
 * - each page costs 2 requests (250 leads with their contact links, then their 250 contacts) and
 *   is committed with the page cursor in one transaction: after a crash or a pause it resumes at the
 *   next page, and no page is queued twice;
 * - it does not run ahead of the destinations: a new page waits until the page before the last one
 *   is delivered, so live jobs never queue behind more than two pages of backfill.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { MAX_PAGE, type LeadListFilter } from '../kommo/client.js';
import type { KommoLead } from '../kommo/schemas.js';
import { KommoApiError } from '../kommo/transport.js';
import { kommoKeyScope } from '../kommo/webhook.js';
import type { EnrichedLead } from '../model/index.js';
import type { Metrics } from '../observability/metrics.js';
import { syncJob } from '../queue/jobs.js';
import type { AccountRouting } from '../queue/router.js';
import type { NewJob, Store } from '../store/store.js';
import { MappingError } from '../sync/mapping.js';

/** Which existing leads a backfill syncs (names resolved to ids by the CLI; names kept for display). */
export interface BackfillFilter {
  /** Only leads updated at or after this (unix seconds). */
  since?: number;
  pipeline?: { id: number; name: string };
  stage?: { pipelineId: number; statusId: number; name: string };
}

export type BackfillStatus = 'running' | 'paused' | 'done' | 'failed';

/** One backfill run, as stored (`backfill:<account>:<filter key>`). */
export interface BackfillState {
  v: 1;
  /** Random id of this run: messageIds derive from it, so a retried page sends the same ids. */
  run: string;
  account: string;
  /** Hash of the filter: one run (and one cursor) per account and filter. */
  key: string;
  filter: BackfillFilter;
  /** Leads created after the run began are not read: their webhooks bring them (unix seconds). */
  createdTo: number;
  status: BackfillStatus;
  /** Counting the leads first (for the progress bar's ETA): a search over pages; null once done. */
  count: { lo: number; loSize: number; hi: number | null } | null;
  /** Leads matching the filter when counted (approximate: Kommo changes meanwhile). */
  total: number | null;
  /** Pages done: the next one to read is page + 1. */
  page: number;
  /** The highest lead id done: a lead seen again on a later page (pages shift) is skipped. */
  lastId: number;
  leads: number;
  /** Leads that got jobs, and leads with nothing to send (no contact, no email, pipeline not synced). */
  synced: number;
  skipped: number;
  jobs: number;
  /** Kommo requests spent (counting included). */
  requests: number;
  startedAt: number;
  updatedAt: number;
  finishedAt: number | null;
  /** Why it is not moving right now (deliveries to catch up, Kommo unavailable), or null. */
  waiting: string | null;
  error: string | null;
}

export const stateKey = (account: string, key: string): string => `backfill:${account}:${key}`;
/** Which run of the account the service works on (a filter key); absent: none. */
export const activeKey = (account: string): string => `backfill-active:${account}`;
/** A pause asked for (Ctrl-C in `backfill`): the filter key of the run to pause. */
export const pauseKey = (account: string): string => `backfill-pause:${account}`;
/** The account's most recently requested run (`status` shows it, running or not). */
export const lastKey = (account: string): string => `backfill-last:${account}`;

/** The filter's identity: the same options resume the same run. */
export function filterKey(f: BackfillFilter): string {
  const canonical = JSON.stringify([f.since ?? null, f.pipeline?.id ?? null, f.stage ? [f.stage.pipelineId, f.stage.statusId] : null]);
  return createHash('sha256').update(canonical).digest('hex').slice(0, 12);
}

/** The filter in words: "all leads", "leads in Sales updated since 2026-01-01". */
export function describeFilter(f: BackfillFilter): string {
  const parts: string[] = [];
  if (f.stage) parts.push(`in stage "${f.stage.name}"`);
  else if (f.pipeline) parts.push(`in pipeline "${f.pipeline.name}"`);
  if (f.since !== undefined) parts.push(`updated since ${new Date(f.since * 1000).toISOString().replace('T00:00:00.000Z', '').replace('.000Z', 'Z')}`);
  return parts.length ? `leads ${parts.join(' ')}` : 'all leads';
}

export function parseState(raw: string | null): BackfillState | null {
  if (!raw) return null;
  try {
    const s = JSON.parse(raw) as BackfillState;
    return s && s.v === 1 && typeof s.run === 'string' ? s : null;
  } catch {
    return null;
  }
}

export async function readBackfill(store: Pick<Store, 'kvGet'>, account: string, key: string): Promise<BackfillState | null> {
  return parseState(await store.kvGet(stateKey(account, key)));
}

/** The account's most recently requested run, whatever its status (for `status`). */
export async function lastBackfill(store: Pick<Store, 'kvGet'>, account: string): Promise<BackfillState | null> {
  const key = await store.kvGet(lastKey(account));
  return key ? readBackfill(store, account, key) : null;
}

/** The run the service works on for `account`, if any. */
export async function activeBackfill(store: Pick<Store, 'kvGet'>, account: string): Promise<BackfillState | null> {
  const key = await store.kvGet(activeKey(account));
  return key ? readBackfill(store, account, key) : null;
}

/** A backfill of other leads is still running: one at a time per account. */
export class BackfillConflict extends Error {
  override name = 'BackfillConflict';
  constructor(readonly other: BackfillState) {
    super(`a backfill of ${describeFilter(other.filter)} is still running in account ${other.account} (${other.leads} leads done): wait for it, or stop it first (Ctrl-C in its \`backfill\`, or \`kommo-sync backfill --pause\` with its options)`);
  }
}

export interface BackfillRequest {
  state: BackfillState;
  /** It continues a run that was paused or interrupted. */
  resumed: boolean;
  /** This filter's run finished already; nothing was started (use `restart`). */
  alreadyDone: boolean;
}

/**
 * Asks the running service to backfill `filter` in `account`: resumes this filter's unfinished run,
 * or starts one (`restart`: a new run even if one exists, every lead sent again).
 */
export async function requestBackfill(store: Pick<Store, 'kvGet' | 'kvSet' | 'kvDelete'>, account: string, filter: BackfillFilter, opts: { restart?: boolean; now?: number } = {}): Promise<BackfillRequest> {
  const now = opts.now ?? Date.now();
  const key = filterKey(filter);
  const current = await activeBackfill(store, account);
  if (current && current.key !== key && current.status === 'running') throw new BackfillConflict(current);
  const existing = await readBackfill(store, account, key);
  if (existing && !opts.restart && existing.status === 'done') return { state: existing, resumed: false, alreadyDone: true };
  let state: BackfillState;
  let resumed = false;
  if (existing && !opts.restart) {
    state = { ...existing, status: 'running', waiting: null, error: null, updatedAt: now };
    resumed = existing.page > 0 || existing.total !== null;
  } else {
    state = {
      v: 1,
      run: `${now.toString(36)}${randomBytes(4).toString('hex')}`,
      account,
      key,
      filter,
      createdTo: Math.floor(now / 1000),
      status: 'running',
      count: { lo: 0, loSize: 0, hi: null },
      total: null,
      page: 0,
      lastId: 0,
      leads: 0,
      synced: 0,
      skipped: 0,
      jobs: 0,
      requests: 0,
      startedAt: now,
      updatedAt: now,
      finishedAt: null,
      waiting: null,
      error: null,
    };
  }
  await store.kvDelete(pauseKey(account));
  await store.kvSet(stateKey(account, key), JSON.stringify(state));
  await store.kvSet(activeKey(account), key);
  await store.kvSet(lastKey(account), key);
  return { state, resumed, alreadyDone: false };
}

/** Asks the service to pause the run of `key` after its current page (it says so in the state). */
export async function requestPause(store: Pick<Store, 'kvSet'>, account: string, key: string): Promise<void> {
  await store.kvSet(pauseKey(account), key, 3_600_000);
}

/**
 * Marks a run paused from outside the service, for when no service answered the pause (none is
 * running, or it is busy with live events). The pause request stays: a service that commits a page
 * meanwhile (writing `running` back) still pauses at its next step, and writes `paused` then.
 */
export async function markPaused(store: Pick<Store, 'kvGet' | 'kvSet'>, account: string, key: string): Promise<void> {
  const s = await readBackfill(store, account, key);
  if (s && s.status === 'running') await store.kvSet(stateKey(account, key), JSON.stringify({ ...s, status: 'paused', waiting: null, updatedAt: Date.now() }));
}

/** What the backfill needs of an account's runtime (AccountRuntime in service.ts; fakes in tests). */
export interface BackfillAccount {
  name: string;
  subdomain: string;
  /** Why the account's Kommo work is paused (refused credentials), or null. */
  paused(): string | null;
  /** One page of leads (`withContacts`: with their contact links, for the real read; not for counting). */
  listPage(filter: LeadListFilter, page: number, withContacts: boolean): Promise<KommoLead[]>;
  /** The page's leads with their contacts, as `lead.backfill` events. */
  enrich(leads: KommoLead[]): Promise<EnrichedLead[]>;
  destinations: AccountRouting['destinations'];
  remember(leads: EnrichedLead[]): Promise<void>;
}

export interface BackfillerOptions {
  store: Pick<Store, 'kvGet' | 'kvGetMany' | 'kvSet' | 'kvDelete' | 'enqueueJobs' | 'getJob'>;
  log: Logger;
  metrics?: Metrics;
  accounts: ReadonlyMap<string, BackfillAccount>;
  now?: () => number;
  /** Pages of backfill jobs per destination that may wait undelivered (default 2). */
  pagesAhead?: number;
}

/** With nothing to backfill, the store is asked again after this long (the router idles every poll). */
const IDLE_CHECK_MS = 1000;
/** While waiting, the state is rewritten this often: the CLI sees the service is alive. */
const HEARTBEAT_MS = 2000;

export class Backfiller {
  private readonly now: () => number;
  private nextCheckAt = 0;
  private turn = 0;
  /** Per account: for each recent page, the last job id per destination (flow control). */
  private readonly inflight = new Map<string, Array<Map<string, number>>>();
  /** Per account: no Kommo call before this time (after an error). */
  private readonly retryAt = new Map<string, number>();

  constructor(private readonly o: BackfillerOptions) {
    this.now = o.now ?? Date.now;
  }

  /**
   * One unit of backfill work for one account with an active run: a counting probe or a page.
   * Returns how much was done (0: nothing to do, or waiting). The router calls it when the inbox is
   * empty, under its lock.
   */
  async step(): Promise<number> {
    const now = this.now();
    if (now < this.nextCheckAt) return 0;
    const names = [...this.o.accounts.keys()];
    const active = await this.o.store.kvGetMany(names.map(activeKey));
    const runs = names.flatMap((account) => {
      const key = active.get(activeKey(account));
      return key ? [{ account, key }] : [];
    });
    if (runs.length === 0) {
      this.nextCheckAt = now + IDLE_CHECK_MS;
      return 0;
    }
    // Round-robin between accounts: each has its own Kommo budget.
    for (let i = 0; i < runs.length; i++) {
      const run = runs[(this.turn + i) % runs.length]!;
      const done = await this.stepAccount(run.account, run.key);
      if (done > 0) {
        this.turn = (this.turn + i + 1) % runs.length;
        return done;
      }
    }
    return 0;
  }

  private async stepAccount(account: string, key: string): Promise<number> {
    const { store, log } = this.o;
    const acct = this.o.accounts.get(account);
    const s = await readBackfill(store, account, key);
    if (!acct || !s) {
      await store.kvDelete(activeKey(account));
      return 0;
    }
    if ((await store.kvGet(pauseKey(account))) === key) {
      await this.save({ ...s, status: 'paused', waiting: null, updatedAt: this.now() });
      await store.kvDelete(activeKey(account));
      await store.kvDelete(pauseKey(account));
      log.info({ account, backfill: describeFilter(s.filter), page: s.page, leads: s.leads }, 'backfill paused; the same `backfill` command resumes it');
      return 0;
    }
    if (s.status !== 'running') {
      await store.kvDelete(activeKey(account));
      await store.kvDelete(pauseKey(account));
      return 0;
    }
    const paused = acct.paused();
    if (paused) return this.wait(s, `account paused: ${paused}`);
    if ((this.retryAt.get(account) ?? 0) > this.now()) return 0;
    const busy = await this.busyDestination(account);
    if (busy) return this.wait(s, `waiting for deliveries to ${busy}`);
    try {
      return s.total === null ? await this.countStep(acct, s) : await this.pageStep(acct, s);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (err instanceof MappingError) {
        // The config cannot map these leads: retrying cannot help; the user fixes it and resumes.
        await this.save({ ...s, status: 'failed', error: message, waiting: null, updatedAt: this.now() });
        await store.kvDelete(activeKey(account));
        log.error({ account, err: message }, 'backfill stopped: a mapping failed; fix the config and run the same `backfill` command to resume');
        return 0;
      }
      const afterMs = err instanceof KommoApiError && err.retryAfterMs ? err.retryAfterMs : 5000;
      this.retryAt.set(account, this.now() + afterMs);
      log.warn({ account, err: message }, 'backfill page failed; trying again shortly');
      return this.wait(s, `${message}; trying again in ${Math.ceil(afterMs / 1000)} s`);
    }
  }

  /** One probe of the page search that counts the leads (their number, for the ETA). */
  private async countStep(acct: BackfillAccount, s: BackfillState): Promise<number> {
    const c = s.count ?? { lo: 0, loSize: 0, hi: null };
    const probe = c.hi === null ? (c.lo === 0 ? 1 : c.lo * 2) : Math.floor((c.lo + c.hi) / 2);
    const n = (await acct.listPage(listFilter(s), probe, false)).length;
    const next = { ...c };
    if (n > 0) {
      next.lo = probe;
      next.loSize = n;
      if (n < MAX_PAGE) next.hi = probe + 1;
    } else {
      next.hi = probe;
    }
    const counted = next.hi !== null && next.hi - next.lo <= 1;
    const total = counted ? (next.lo === 0 ? 0 : (next.lo - 1) * MAX_PAGE + next.loSize) : null;
    await this.save({ ...s, count: counted ? null : next, total, requests: s.requests + 1, waiting: null, updatedAt: this.now() });
    return 1;
  }

  private async pageStep(acct: BackfillAccount, s: BackfillState): Promise<number> {
    const page = s.page + 1;
    const leads = await acct.listPage(listFilter(s), page, true);
    let requests = 1;
    // Pages shift when a lead joins the filter meanwhile: one already done comes round again.
    const fresh = leads.filter((l) => l.id > s.lastId);
    const enriched = fresh.length ? await acct.enrich(fresh) : [];
    if (fresh.some((l) => l._embedded.contacts.length > 0)) requests += 1;
    const jobs: NewJob[] = [];
    let synced = 0;
    const scope = kommoKeyScope(acct.subdomain);
    for (const e of enriched) {
      // messageIds derive from this key: a page queued again after a crash sends the same ids.
      const dedupKey = `${scope}:lead:${e.lead.id}:backfill:${s.run}`;
      let sent = false;
      for (const d of acct.destinations) {
        const plan = await d.plan(e, dedupKey);
        if (!plan.ops.length) continue;
        sent = true;
        jobs.push(syncJob(acct.name, d.name, `lead:${e.lead.id}`, e.contact?.email || `lead ${e.lead.id}`, plan.ops));
      }
      if (sent) synced += 1;
    }
    const skipped = enriched.length - synced;
    // A short page is the last one.
    const last = leads.length < MAX_PAGE;
    const now = this.now();
    const next: BackfillState = {
      ...s,
      page,
      lastId: Math.max(s.lastId, ...leads.map((l) => l.id)),
      leads: s.leads + fresh.length,
      synced: s.synced + synced,
      skipped: s.skipped + skipped,
      jobs: s.jobs + jobs.length,
      requests: s.requests + requests,
      updatedAt: now,
      waiting: null,
      ...(last ? { status: 'done' as const, finishedAt: now, total: s.leads + fresh.length } : {}),
    };
    // The jobs and the cursor saying they exist, in one transaction.
    const ids = await this.o.store.enqueueJobs(jobs, { kv: { key: stateKey(s.account, s.key), value: JSON.stringify(next) } });
    this.track(s.account, jobs, ids);
    this.o.metrics?.backfillLeads.inc({ account: s.account, outcome: 'synced' }, synced);
    this.o.metrics?.backfillLeads.inc({ account: s.account, outcome: 'skipped' }, skipped);
    // The email index helps match engagement to these leads; losing it on a crash costs a search.
    await acct.remember(enriched).catch((err: unknown) => this.o.log.warn({ account: s.account, err: err instanceof Error ? err.message : String(err) }, 'backfill could not update the email index'));
    if (last) {
      await this.o.store.kvDelete(activeKey(s.account));
      this.o.log.info({ account: s.account, backfill: describeFilter(s.filter), leads: next.leads, synced: next.synced, skipped: next.skipped, jobs: next.jobs, seconds: Math.round((now - s.startedAt) / 1000) }, 'backfill finished');
    }
    return Math.max(1, fresh.length);
  }

  /** Remembers the last job per destination of a page just queued. */
  private track(account: string, jobs: NewJob[], ids: number[]): void {
    const last = new Map<string, number>();
    jobs.forEach((j, i) => last.set(j.destination, Math.max(last.get(j.destination) ?? 0, ids[i] ?? 0)));
    if (last.size === 0) return;
    const list = this.inflight.get(account) ?? [];
    list.push(last);
    this.inflight.set(account, list);
  }

  /**
   * A destination still holding the jobs of an older page (its last job is pending or leased):
   * the worker claims in id order, so once that one is finished the page is (nearly) delivered.
   */
  private async busyDestination(account: string): Promise<string | null> {
    const list = this.inflight.get(account) ?? [];
    const ahead = this.o.pagesAhead ?? 2;
    while (list.length >= ahead) {
      for (const [destination, id] of list[0]!) {
        const job = await this.o.store.getJob(id);
        if (job && (job.state === 'pending' || job.state === 'leased')) return destination;
      }
      list.shift();
    }
    return null;
  }

  /** Records why the run is not moving (rewritten at most every HEARTBEAT_MS when unchanged). */
  private async wait(s: BackfillState, why: string): Promise<number> {
    const now = this.now();
    if (s.waiting !== why || now - s.updatedAt >= HEARTBEAT_MS) await this.save({ ...s, waiting: why, updatedAt: now });
    return 0;
  }

  private async save(s: BackfillState): Promise<void> {
    await this.o.store.kvSet(stateKey(s.account, s.key), JSON.stringify(s));
  }
}

function listFilter(s: BackfillState): LeadListFilter {
  return {
    createdTo: s.createdTo,
    ...(s.filter.since !== undefined ? { updatedFrom: s.filter.since } : {}),
    ...(s.filter.stage ? { stage: { pipelineId: s.filter.stage.pipelineId, statusId: s.filter.stage.statusId } } : {}),
    ...(s.filter.pipeline && !s.filter.stage ? { pipelineId: s.filter.pipeline.id } : {}),
  };
}
