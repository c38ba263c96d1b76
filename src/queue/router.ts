/**
 * The router: takes inbox events in order, turns each into jobs for destinations, and marks the
 * events routed in the same transaction as the job inserts. CRM events are enriched in batches (the
 * Kommo loader coalesces the lookups of a whole claimed batch into a few filter[id][] requests);
 * engagement events are matched to a lead and become Kommo writes.
 */
import type { Logger } from 'pino';
import type { Metrics } from '../observability/metrics.js';
import type { InboxEvent, InboxFacts, NewJob, Store } from '../store/store.js';
import type { SyncOp } from '../destinations/types.js';
import type { KommoOp } from '../model/index.js';
import type { EnrichedLead } from '../model/index.js';
import { MappingError } from '../sync/mapping.js';
import type { SentTo } from '../sync/outbound.js';
import type { CrmEvent, EngagementEvent, InboundEvent } from '../model/index.js';
import { kommoJob, syncJob } from './jobs.js';
import { Pacer } from './pacer.js';

/** What the router needs from one account's runtime (built in service.ts; faked in unit tests). */
export interface AccountRouting {
  name: string;
  /** Per event: true when it reports a write kommo-sync itself made (no sync loops). One store query per batch. */
  echoes(events: CrmEvent[]): Promise<boolean[]>;
  /**
   * Batched enrichment: one result per event, null when Kommo no longer has the lead.
   * `receivedAt` is the stored intake time: a stable event time when Kommo sent no updated_at.
   */
  enrich(items: Array<{ event: CrmEvent; receivedAt: number }>): Promise<Array<EnrichedLead | null>>;
  destinations: Array<{
    name: string;
    plan(e: EnrichedLead, dedupKey: string): Promise<{ ops: SyncOp[]; skipped?: string }>;
  }>;
  /** Note text to write on the lead after a sync, or null (not configured for this kind). */
  crmNote(e: EnrichedLead, sentTo: SentTo[]): Promise<string | null>;
  /**
   * For each engagement event, in order: finds its lead and plans the Kommo writes (none when no
   * lead matches) and what other destinations get (a suppress when the person opted out). The
   * lookups of the whole batch share their Kommo reads. Throws when Kommo cannot be read (the
   * batch is retried); an event whose plan fails alone gets `{ error }`.
   */
  engagement(events: EngagementEvent[]): Promise<Array<EngagementRouting | { error: unknown }>>;
  /** Keeps the email -> lead index fresh from what enrichment read (one write per batch). */
  remember(leads: EnrichedLead[]): Promise<void>;
}

export interface EngagementRouting {
  /** The matched Kommo lead, or null when no lead has this email. */
  leadId: number | null;
  kommo: KommoOp[];
  sync: Array<{ destination: string; ops: SyncOp[] }>;
}

export interface RouterOptions {
  store: Store;
  log: Logger;
  metrics?: Metrics;
  accounts: Map<string, AccountRouting>;
  batch: number;
  leaseMs: number;
  pollMs: number;
  /**
   * After a partial batch, wait this long before claiming again (new webhooks do not cut it short):
   * a burst then lands in few large batches, i.e. few filter[id][] requests to Kommo. A lone event
   * is still routed at once; only the next claim waits.
   */
  lingerMs: number;
  /**
   * Ids per enrichment read (Kommo's filter[id][] page, 250). Under a steady flow a claim is cut
   * to whole pages and a remainder younger than `lingerMs` goes back for the next round, so a few
   * leftover ids never cost a read of their own. 0 turns this off.
   */
  pageSize?: number;
  /** Called after jobs were enqueued (wakes the in-process worker). */
  onJobs?: () => void;
  /** Accounts whose events are left in the inbox for now (paused: Kommo refused their credentials). */
  pausedAccounts?: () => readonly string[];
  /**
   * Work for when no inbox event waits (the backfill's next page), run under the router's lock so
   * what it queues is ordered with routed events. Returns how much it did; 0 lets the router idle.
   */
  idle?: () => Promise<number>;
  /**
   * Several processes route from one store (PostgreSQL): the linger is kept in the store, so the
   * routers taking turns still route bursts in big batches instead of each claiming a small one
   * right after another's.
   */
  sharedLinger?: boolean;
}

/**
 * Thrown by an account's runtime when Kommo refused its credentials: the account is paused, and its
 * events go back to the inbox uncounted (they wait for the account to resume).
 */
export class AccountPausedError extends Error {
  constructor(readonly account: string, message: string) {
    super(message);
  }
}

/** When some router last routed a partial batch (sharedLinger). */
const ROUTED_AT_KEY = 'router:partial-batch-at';

/** Inbox events claimed per store call; a batch is claimed in several of these. */
const CLAIM_CHUNK = 100;

/** Errors from Kommo or the network: the event stays in the inbox and is routed again later. */
const MAX_INBOX_ATTEMPTS = 20;

/** Mapping evaluation errors are permanent (the config or the data is wrong); the rest may pass. */
function isPermanent(err: unknown): boolean {
  return err instanceof MappingError;
}

export class Router {
  private running = false;
  private loopDone: Promise<void> | null = null;
  private readonly pacer = new Pacer();

  constructor(private readonly o: RouterOptions) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loopDone = this.loop();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.pacer.interrupt();
    await this.loopDone;
  }

  wake(): void {
    this.pacer.wake();
  }

  private async loop(): Promise<void> {
    while (this.running) {
      let n = { claimed: 0, idle: 0 };
      try {
        n = await this.o.store.withLock('kommo-sync:router', () => this.routeBatch());
      } catch (err) {
        this.o.log.error({ err }, 'router could not read the inbox; retrying');
      }
      if (!this.running) break;
      // Idle work that progressed goes on at once; the inbox is still looked at first each round.
      if (n.claimed === 0 && n.idle === 0) await this.pacer.pause(this.o.pollMs, true);
      else if (n.claimed > 0 && n.claimed < this.o.batch && this.o.lingerMs > 0) await this.pacer.pause(this.o.lingerMs, false);
    }
  }

  /**
   * Routes one claimed batch (or, with nothing in the inbox, does one unit of idle work). Returns how
   * many inbox events were claimed, plus the idle work done.
   * Routers of several processes take turns (a store-wide lock): job ids then follow inbox order,
   * which is what keeps one lead's events in order. Routing is cheap and batched; Kommo's rate limit,
   * not this lock, is what bounds throughput.
   */
  async routeOnce(): Promise<number> {
    const n = await this.o.store.withLock('kommo-sync:router', () => this.routeBatch());
    return n.claimed + n.idle;
  }

  private async routeBatch(): Promise<{ claimed: number; idle: number }> {
    const { store, log } = this.o;
    const rows = await this.claim();
    if (rows.length === 0) return { claimed: 0, idle: this.o.idle ? await this.idleWork(this.o.idle) : 0 };
    if (this.o.sharedLinger && rows.length < this.o.batch && this.o.lingerMs > 0) {
      const now = Date.now();
      const last = Number(await store.kvGet(ROUTED_AT_KEY));
      const oldest = Math.max(...rows.map((r) => now - r.receivedAt));
      // Another process routed a moment ago and these events are all fresh: let them gather.
      if (Number.isFinite(last) && now - last < this.o.lingerMs && oldest < this.o.lingerMs) {
        // Live events wait to gather: no idle work (backfill) meanwhile.
        await store.releaseInbox(rows.map((r) => r.id));
        return { claimed: 0, idle: 0 };
      }
      await store.kvSet(ROUTED_AT_KEY, String(now));
    }
    const byAccount = new Map<string, InboxEvent[]>();
    for (const r of rows) {
      if (typeof r.payload !== 'object' || r.payload === null) {
        // Only a damaged store gets here; one bad row must not stop the router for good.
        await store.failInbox(r.id, 'the stored event has no payload');
        continue;
      }
      const list = byAccount.get(r.account);
      if (list) list.push(r);
      else byAccount.set(r.account, [r]);
    }

    const routed: number[] = [];
    const jobs: NewJob[] = [];
    // What routing learned per event (lead, email, why nothing came of it): the dashboard's search.
    const facts: InboxFacts[] = [];
    // Accounts are routed side by side: each waits only on its own Kommo budget, so one account's
    // burst does not hold another's events back. Within an account, events keep their order.
    await Promise.all([...byAccount].map(async ([accountName, events]) => {
      const account = this.o.accounts.get(accountName);
      if (!account) {
        for (const e of events) await store.failInbox(e.id, `account "${accountName}" is no longer in the configuration`);
        return;
      }
      const crm = events.filter((e) => (e.payload as InboundEvent).type === 'crm');
      const engagement = events.filter((e) => (e.payload as InboundEvent).type === 'engagement');
      const own = { routed: [] as number[], jobs: [] as NewJob[], facts: [] as InboxFacts[] };
      await this.routeCrm(account, crm, own.routed, own.jobs, own.facts);
      await this.routeEngagement(account, engagement, own.routed, own.jobs, own.facts);
      routed.push(...own.routed);
      jobs.push(...own.jobs);
      facts.push(...own.facts);
    }));
    if (routed.length) {
      await store.routeInbox(routed, jobs, facts);
      if (jobs.length) this.o.onJobs?.();
      log.debug({ events: routed.length, jobs: jobs.length }, 'routed');
    }
    return { claimed: rows.length, idle: 0 };
  }

  /** Idle work must not stop routing: its failure is logged and the router idles as usual. */
  private async idleWork(idle: () => Promise<number>): Promise<number> {
    try {
      const n = await idle();
      if (n > 0) this.o.onJobs?.();
      return n;
    } catch (err) {
      this.o.log.error({ err: err instanceof Error ? err.message : String(err) }, 'router idle work (backfill) failed; retrying');
      return 0;
    }
  }

  /**
   * Claims up to a batch in chunks, letting the event loop run between them: claiming and parsing
   * 500 stored events at once held intake's webhooks back for several milliseconds.
   */
  private async claim(): Promise<InboxEvent[]> {
    const rows: InboxEvent[] = [];
    // Fair across accounts when there are several: each chunk takes at most half a chunk per
    // account, so one account's backlog cannot fill the claim while another's events wait behind
    // it; a short chunk then does not mean the inbox is empty, only an empty one does.
    const fair = this.o.accounts.size > 1;
    while (rows.length < this.o.batch) {
      const want = Math.min(CLAIM_CHUNK, this.o.batch - rows.length);
      const chunk = await this.o.store.claimInbox(want, this.o.leaseMs, Date.now(), this.o.pausedAccounts?.() ?? [], fair ? Math.max(1, Math.ceil(want / 2)) : undefined);
      for (const r of chunk) rows.push(r);
      if (fair ? chunk.length === 0 : chunk.length < want) break;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    return this.alignToPages(rows);
  }


  /** Whole pages only, when the rest is young enough to wait one more round (see `pageSize`). */
  private async alignToPages(rows: InboxEvent[]): Promise<InboxEvent[]> {
    const page = this.o.pageSize ?? 0;
    if (page <= 0 || rows.length <= page || rows.length >= this.o.batch) return rows;
    const keep = rows.length - (rows.length % page);
    if (keep === rows.length) return rows;
    const rest = rows.slice(keep);
    if (Date.now() - Math.min(...rest.map((r) => r.receivedAt)) >= this.o.lingerMs) return rows;
    await this.o.store.releaseInbox(rest.map((r) => r.id));
    return rows.slice(0, keep);
  }

  private async routeCrm(account: AccountRouting, rows: InboxEvent[], routed: number[], jobs: NewJob[], facts: InboxFacts[]): Promise<void> {
    const live: InboxEvent[] = [];
    const echoes = rows.length ? await account.echoes(rows.map((r) => r.payload as CrmEvent)) : [];
    const leadOf = (row: InboxEvent) => {
      const ev = row.payload as CrmEvent;
      return ev.entityType === 'lead' ? ev.entityId : null;
    };
    rows.forEach((row, i) => {
      if (echoes[i]) {
        this.o.metrics?.echoesDropped.inc({ account: account.name });
        routed.push(row.id);
        facts.push({ id: row.id, leadId: leadOf(row) });
      } else live.push(row);
    });
    if (!live.length) return;
    let enriched: Array<EnrichedLead | null>;
    try {
      enriched = await account.enrich(live.map((r) => ({ event: r.payload as CrmEvent, receivedAt: r.receivedAt })));
    } catch (err) {
      await this.transientFailure(live, err);
      return;
    }
    const seen: EnrichedLead[] = [];
    const gone: number[] = [];
    for (let i = 0; i < live.length; i++) {
      const row = live[i]!;
      const e = enriched[i];
      if (!e) {
        routed.push(row.id);
        gone.push((row.payload as CrmEvent).entityId);
        const ev = row.payload as CrmEvent;
        facts.push({ id: row.id, leadId: leadOf(row), note: ev.kind === 'lead.deleted' ? null : `${ev.entityType} ${ev.entityId} no longer exists in Kommo (or has no lead)` });
        continue;
      }
      try {
        const skipped: string[] = [];
        const made = await this.crmJobs(account, row, e, skipped);
        jobs.push(...made);
        routed.push(row.id);
        seen.push(e);
        facts.push({ id: row.id, leadId: e.lead.id, email: e.contact?.email || null, note: made.length === 0 && skipped.length ? skipped.join('; ') : null });
      } catch (err) {
        await this.permanentFailure(row, err);
      }
    }
    // One line per batch: a mass delete in Kommo must not turn into a flood of log lines.
    if (gone.length) this.o.log.info({ account: account.name, events: gone.length, leads: gone.slice(0, 20) }, 'leads no longer exist in Kommo; nothing to sync');
    await account.remember(seen);
  }

  private async crmJobs(account: AccountRouting, row: InboxEvent, e: EnrichedLead, skipped: string[] = []): Promise<NewJob[]> {
    const jobs: NewJob[] = [];
    const orderingKey = `lead:${e.lead.id}`;
    const sentTo: SentTo[] = [];
    for (const d of account.destinations) {
      const plan = await d.plan(e, row.dedupKey);
      if (plan.skipped) {
        this.o.log.debug({ destination: d.name, lead: e.lead.id, reason: plan.skipped }, 'not synced');
        skipped.push(`${d.name}: ${plan.skipped}`);
      }
      if (!plan.ops.length) continue;
      sentTo.push({ name: d.name, ops: plan.ops });
      jobs.push(syncJob(account.name, d.name, orderingKey, e.contact?.email || `lead ${e.lead.id}`, plan.ops, row.id));
    }
    const note = await account.crmNote(e, sentTo);
    if (note) jobs.push(kommoJob(account.name, orderingKey, `lead ${e.lead.id}`, { kind: 'addNote', leadId: e.lead.id, text: note }, row.id));
    return jobs;
  }

  private async routeEngagement(account: AccountRouting, rows: InboxEvent[], routed: number[], jobs: NewJob[], facts: InboxFacts[]): Promise<void> {
    const failed: Array<[InboxEvent, unknown]> = [];
    if (!rows.length) return;
    let all: Array<EngagementRouting | { error: unknown }>;
    try {
      all = await account.engagement(rows.map((r) => r.payload as EngagementEvent));
    } catch (err) {
      await this.transientFailure(rows, err);
      return;
    }
    rows.forEach((row, i) => {
      const ev = row.payload as EngagementEvent;
      const planned = all[i];
      if (!planned || 'error' in planned) {
        failed.push([row, planned?.error ?? new Error('no plan for this event')]);
        return;
      }
      routed.push(row.id);
      const unmatched = planned.leadId === null && ev.kind !== 'vendor.other';
      if (unmatched) {
        this.o.log.info({ account: account.name, source: ev.source, kind: ev.kind }, 'no Kommo lead matches this email; engagement not recorded in Kommo');
      }
      facts.push({ id: row.id, leadId: planned.leadId, email: ev.email, note: unmatched ? 'no Kommo lead has this email; not recorded in Kommo' : null });
      // The person's other jobs share the key, so a suppress runs after anything queued before it.
      const orderingKey = planned.leadId === null ? `email:${ev.email}` : `lead:${planned.leadId}`;
      // One job per Kommo write: notes and tasks are not idempotent, so a retry of one write (say the
      // contact update) must not send a note that already went through again.
      for (const op of planned.kommo) jobs.push(kommoJob(account.name, orderingKey, ev.email, op, row.id));
      for (const s of planned.sync) jobs.push(syncJob(account.name, s.destination, orderingKey, ev.email, s.ops, row.id));
    });
    for (const [row, err] of failed) await this.permanentFailure(row, err);
  }

  /** A mistake in the event or the config, not in the weather: retrying cannot help. */
  private async permanentFailure(row: InboxEvent, err: unknown): Promise<void> {
    const reason = err instanceof Error ? err.message : String(err);
    if (!isPermanent(err)) {
      await this.transientFailure([row], err);
      return;
    }
    this.o.log.error({ inbox: row.id, kind: row.kind, reason }, 'event cannot be routed; kept in the inbox as failed');
    await this.o.store.failInbox(row.id, reason);
  }

  private async transientFailure(rows: InboxEvent[], err: unknown): Promise<void> {
    if (err instanceof AccountPausedError) {
      // Not the events' fault: give them back uncounted; claims skip the account while it is paused.
      await this.o.store.releaseInbox(rows.map((r) => r.id));
      return;
    }
    const reason = err instanceof Error ? err.message : String(err);
    for (const row of rows) {
      if (row.attempts >= MAX_INBOX_ATTEMPTS) await this.o.store.failInbox(row.id, `gave up routing after ${row.attempts} attempts: ${reason}`);
    }
    this.o.log.warn({ events: rows.length, reason }, 'could not route now (Kommo unavailable?); events stay in the inbox and are retried when their lease expires');
  }
}
