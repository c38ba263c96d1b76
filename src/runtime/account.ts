/**
 * One Kommo account at run time: its Kommo client (auth, rate limit, breaker), loader, catalog,
 * echo marks, compiled mappings and rules, and its delivery targets. It implements what the router
 * needs (AccountRouting) and hands the worker one target per destination plus one for Kommo writes.
 */
import type { Logger } from 'pino';
import type { LoadedConfig } from '../config/load.js';
import { ConfigError } from '../config/load.js';
import type { AccountConfig, DestinationConfig } from '../config/schema.js';
import { getDestination } from '../destinations/index.js';
import type { Destination, DestinationContext } from '../destinations/types.js';
import { KommoCatalog, type FieldEntity } from '../kommo/catalog.js';
import { createKommoClient, type KommoClient, type LeadListFilter } from '../kommo/client.js';
import { deliverKommoOps } from '../kommo/deliver.js';
import { getAccountLimiter } from '../kommo/rate-limit.js';
import { StoreEchoMarks } from '../kommo/echo.js';
import { KommoLoader, loadParties, mainContactId } from '../kommo/loader.js';
import type { KommoOp } from '../model/index.js';
import type { Metrics } from '../observability/metrics.js';
import { destinationKey, KOMMO_OPS_V1, SYNC_OPS_V1 } from '../queue/jobs.js';
import { AccountPausedError, type AccountRouting, type EngagementRouting } from '../queue/router.js';
import { credentialFingerprint, type AccountPauses } from './pauses.js';
import { KommoApiError } from '../kommo/transport.js';
import type { KommoLead } from '../kommo/schemas.js';
import type { SweepSource } from './sweeper.js';
import { kommoReconcileSource } from './reconcile.js';
import type { DeliveryTarget } from '../queue/worker.js';
import type { ScrubCounts, Store } from '../store/store.js';
import { enrichLead } from '../sync/enrich.js';
import type { EnrichedLead } from '../model/index.js';
import type { CrmEvent, EngagementEvent } from '../model/index.js';
import { compileEngagementRules, findLeadForEmail, OPT_OUT_KINDS, planEngagement, WON_STATUS, LOST_STATUS, type EngagementRules, type LeadMatch, type LeadRow } from '../sync/inbound.js';
import { fieldNamesReferenced, MappingError, type CompiledExpr, type CompiledTemplate } from '../sync/mapping.js';
import { compileCrmNotes, compileDestinationMapping, crmNoteText, personId, planOutbound, type CompiledCrmNotes, type CompiledMapping, type SentTo } from '../sync/outbound.js';

interface ActiveDestination {
  cfg: DestinationConfig;
  dest: Destination;
  mapping: CompiledMapping;
  ctx: DestinationContext<unknown>;
}

const USERS_TTL_MS = 10 * 60_000;

export class AccountRuntime implements AccountRouting {
  readonly client: KommoClient;
  readonly catalog: KommoCatalog;
  readonly destinations: Array<{ name: string; plan: AccountRouting['destinations'][number]['plan'] }>;
  readonly active: ActiveDestination[];
  private readonly loader: KommoLoader;
  /** Whether enrichment reads companies too (a mapping or a destination uses them). */
  private readonly withCompanies: boolean;
  private readonly echo: StoreEchoMarks;
  private readonly notes: CompiledCrmNotes | null;
  private rules: EngagementRules | null = null;
  private users: { at: number; map: Map<number, { name: string; email: string | null }> | null } | null = null;
  /** The Kommo account's currency, read once at start (null when it could not be read). */
  private currency: string | null = null;
  /** Set by the service: where a refused-credentials pause is recorded and read. */
  pauses: AccountPauses | null = null;
  private ready: Promise<void> | null = null;

  constructor(
    readonly name: string,
    readonly cfg: AccountConfig,
    destinations: DestinationConfig[],
    private readonly loaded: LoadedConfig,
    private readonly store: Store,
    private readonly log: Logger,
    metrics?: Metrics,
  ) {
    this.client = createKommoClient(name, cfg.kommo, {
      store,
      sharedRateLimit: store.kind === 'postgres',
      onRequest: (i) => {
        metrics?.kommoRequests.inc({ account: name, status: String(i.status) });
        if (i.status === 429) metrics?.kommoRateLimited.inc({ account: name });
      },
    });
    this.catalog = new KommoCatalog(this.client, { stages: cfg.stages });
    this.echo = new StoreEchoMarks(store, name);
    const base = ['accounts', name];
    const issues: string[] = [];
    // Mapping mistakes are config mistakes: collect them all, then fail like the loader does.
    const compile = <T>(fn: () => T): T | null => {
      try {
        return fn();
      } catch (err) {
        if (err instanceof MappingError) {
          issues.push(err.message);
          return null;
        }
        throw err;
      }
    };
    this.notes = cfg.crmNotes ? compile(() => compileCrmNotes(cfg.crmNotes!, (sub) => loaded.where([...base, 'crmNotes', ...sub.split('.')]))) : null;
    const compiled = destinations.filter((d) => d.common.enabled).map((d): ActiveDestination | null => {
      const dest = getDestination(d.type)!;
      const where = (sub: string) => loaded.where([...base, 'destinations', d.name, ...sub.split('.')]);
      const mapping = compile(() => compileDestinationMapping(d.common, where, typeof dest.defaults === 'function' ? dest.defaults(d.settings) : dest.defaults));
      return mapping && {
        cfg: d,
        dest,
        mapping,
        ctx: {
          name: d.name,
          settings: d.settings,
          identifyBy: d.common.identifyBy,
          log: log.child({ account: name, destination: d.name }),
          timeoutMs: 15_000,
          lists: d.common.lists ?? {},
          signalTags: d.common.signals?.tags ?? [],
        },
      };
    });
    if (issues.length) throw new ConfigError(issues);
    this.active = compiled.filter((a) => a !== null);
    // Company names cost one more request per batch: read them only when a mapping asks for them
    // (the user's or a destination's default, e.g. Iterable's `company`); traits only when a destination groups.
    const readsCompany = (source: string) => source.includes('company');
    const wantsCompanies = Boolean(this.notes && readsCompany(this.notes.text.source)) || this.active.some((a) => a.dest.supports.groupAccount
      || [...a.mapping.attributes, ...Object.values(a.mapping.properties).flat()].some(({ expr }) => readsCompany(expr.source)));
    this.withCompanies = wantsCompanies;
    this.loader = new KommoLoader(this.client, { withCompanies: wantsCompanies });
    this.destinations = this.active.map((a) => ({
      name: a.cfg.name,
      plan: (e: EnrichedLead, dedupKey: string) => planOutbound(e, a.mapping, { supports: a.dest.supports, dedupKey, destinationName: a.cfg.name, optedOut: this.optedOut(e) }),
    }));
  }

  /**
   * Loads stages and fields from Kommo, checks every name the config uses, compiles the engagement
   * rules. Config mistakes throw ConfigError; an unreachable Kommo is retried on first use.
   */
  init(): Promise<void> {
    this.ready ??= this.loadCatalog().catch((err: unknown) => {
      this.ready = null;
      throw err;
    });
    return this.ready;
  }

  private async loadCatalog(): Promise<void> {
    await this.catalog.load();
    this.currency = await this.client.getAccount().then((a) => a.currency ?? null, (err: unknown) => {
      this.log.warn({ account: this.name, err: (err as Error).message }, 'could not read the Kommo account; `account.currency` is null');
      return null;
    });
    const issues = this.catalog.configErrors().map((m) => `${this.loaded.where(['accounts', this.name, 'stages'])}: ${m}`);
    for (const a of this.active) {
      for (const stageName of Object.keys(a.mapping.lists)) {
        try {
          this.catalog.resolveStageByName(stageName);
        } catch (err) {
          issues.push(`${this.loaded.where(['accounts', this.name, 'destinations', a.cfg.name, 'lists', stageName])}: ${(err as Error).message}`);
        }
      }
    }
    // `pipelines:` of a destination names Kommo pipelines: a typo would silently sync nothing there.
    for (const a of this.active) {
      (a.cfg.common.pipelines ?? []).forEach((p, i) => {
        try {
          this.catalog.resolvePipelineByName(p);
        } catch (err) {
          issues.push(`${this.loaded.where(['accounts', this.name, 'destinations', a.cfg.name, 'pipelines', i])}: ${(err as Error).message}`);
        }
      });
    }
    const checkFields = (expr: CompiledExpr | CompiledTemplate) => {
      for (const ref of fieldNamesReferenced(expr)) {
        try {
          this.catalog.field(`${ref.entity === 'company' ? 'companie' : ref.entity}s` as FieldEntity, ref.name);
        } catch (err) {
          issues.push(`${expr.where}: ${(err as Error).message}`);
        }
      }
    };
    for (const a of this.active) {
      // The `*` properties are compiled into every kind's set: check each expression once.
      const exprs = new Map<string, CompiledExpr>();
      for (const { expr } of [...a.mapping.attributes, ...a.mapping.traits, ...Object.values(a.mapping.properties).flat()]) exprs.set(`${expr.where}\0${expr.source}`, expr);
      for (const expr of exprs.values()) checkFields(expr);
    }
    if (this.notes) checkFields(this.notes.text);
    try {
      this.rules = compileEngagementRules(this.cfg.engagement, {
        contactField: (n) => {
          const f = this.catalog.field('contacts', n);
          return f.code ? { fieldId: f.id, fieldCode: f.code } : { fieldId: f.id };
        },
        stage: (n) => {
          const s = this.catalog.resolveStageByName(n);
          return { pipelineId: s.pipelineId, statusId: s.id };
        },
      }, (sub) => this.loaded.where(['accounts', this.name, 'engagement', ...sub.split('.')]),
      this.active.flatMap((a) => (a.cfg.common.signals
        ? [{ source: a.cfg.name, cfg: a.cfg.common.signals, where: (sub: string) => this.loaded.where(['accounts', this.name, 'destinations', a.cfg.name, 'signals', ...sub.split('.')]) }]
        : [])));
    } catch (err) {
      if (err instanceof MappingError) issues.push(err.message);
      else throw err;
    }
    if (issues.length) throw new ConfigError(issues);
  }

  async echoes(events: CrmEvent[]): Promise<boolean[]> {
    const checked: Array<{ at: number; entity: 'lead' | 'contact'; id: number; updatedAt: number }> = [];
    events.forEach((e, at) => {
      if (e.updatedAt !== undefined && e.entityType !== 'company') checked.push({ at, entity: e.entityType, id: e.entityId, updatedAt: e.updatedAt });
    });
    const result = events.map(() => false);
    const found = await this.echo.echoes(checked);
    checked.forEach((c, i) => {
      result[c.at] = found[i] ?? false;
    });
    return result;
  }

  /** The contact carries the unsubscribe rule's opt-out value (e.g. "Email opt-in" = false). */
  private optedOut(e: EnrichedLead): boolean {
    const rule = this.cfg.engagement.unsubscribe;
    if (!rule?.contactField || !e.contact) return false;
    // The config may name the field by name in any case, by code or by id (as everywhere else);
    // the contact's values are keyed by Kommo's own name and code.
    let keys = [rule.contactField];
    try {
      const f = this.catalog.field('contacts', rule.contactField);
      keys = f.code ? [f.name, f.code] : [f.name];
    } catch {
      // Not loaded or unknown: start-up already reported it; the literal key is all we have.
    }
    const v = keys.map((k) => e.contact!.fields[k]).find((x) => x !== undefined && x !== null);
    return v !== undefined && v !== null && String(v).trim().toLowerCase() === String(rule.value).trim().toLowerCase();
  }

  /** Fingerprint of the configured Kommo credentials: a pause ends when they change. */
  get credential(): string {
    const k = this.cfg.kommo;
    return credentialFingerprint([k.accessToken, k.oauth?.clientId, k.oauth?.refreshToken]);
  }

  /**
   * Runs Kommo work for the router; a refusal of the credentials (401 after one OAuth refresh,
   * 403) pauses the account instead of burning the events' attempts.
   */
  private async guarded<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof KommoApiError && (err.status === 401 || err.status === 403) && this.pauses) {
        await this.pauses.pause(this.name, err.status, err.detail);
        throw new AccountPausedError(this.name, err.message);
      }
      throw err;
    }
  }

  enrich(items: Array<{ event: CrmEvent; receivedAt: number }>): Promise<Array<EnrichedLead | null>> {
    return this.guarded(() => this.enrichNow(items));
  }

  private async enrichNow(items: Array<{ event: CrmEvent; receivedAt: number }>): Promise<Array<EnrichedLead | null>> {
    await this.init();
    const users = await this.userMap();
    // All loads start before any is awaited, so the loader coalesces them into filter[id][] batches.
    // Promise.all, not one await per load: when Kommo (or the store's rate limiter) fails, every
    // load rejects, and a rejection nobody awaits would take the process down.
    const loadedAll = await Promise.all(items.map(({ event }) => (event.entityType === 'lead' ? this.loader.loadLead(event.entityId) : this.leadOfContact(event))));
    const results: Array<EnrichedLead | null> = [];
    for (let i = 0; i < items.length; i++) {
      const loaded = loadedAll[i]!;
      const { event, receivedAt } = items[i]!;
      results.push(loaded && !(event.kind === 'lead.deleted') ? await enrichLead(event, receivedAt, loaded, { account: { name: this.name, subdomain: this.cfg.kommo.subdomain, currency: this.currency }, catalog: this.catalog, users }) : null);
    }
    return results;
  }

  /** Backfill: one page of existing leads; refused credentials pause the account like any Kommo work. */
  backfillPage(filter: LeadListFilter, page: number, withContacts: boolean): Promise<KommoLead[]> {
    return this.guarded(() => this.client.leadsPage(filter, page, { withContacts }));
  }

  /**
   * Backfill: leads a listing read (with their contact links) as enriched `lead.backfill` events.
   * Their contacts (and companies) cost one request per 250 leads; the leads are not read again.
   */
  backfillLeads(leads: readonly KommoLead[]): Promise<EnrichedLead[]> {
    return this.guarded(async () => {
      await this.init();
      const users = await this.userMap();
      const loaded = await loadParties(this.client, leads, { withCompanies: this.withCompanies });
      const now = Date.now();
      const out: EnrichedLead[] = [];
      for (const l of loaded) {
        const event: CrmEvent = { type: 'crm', kind: 'lead.backfill', entityId: l.lead.id, entityType: 'lead', updatedAt: l.lead.updated_at, entity: {} };
        out.push(await enrichLead(event, now, l, { account: { name: this.name, subdomain: this.cfg.kommo.subdomain, currency: this.currency }, catalog: this.catalog, users }));
      }
      return out;
    });
  }

  /**
   * GDPR erasure of what kommo-sync itself keeps about `email` in this account: the email -> lead
   * index, hot-lead counters and cooldown marks, the opt-out echo marks kept per destination, and
   * the person's history in the log (Store.scrubPerson). Returns what that last step removed.
   */
  async forgetPerson(email: string): Promise<ScrubCounts> {
    await this.store.forgetEmail(this.name, email);
    for (const a of this.active) await this.store.kvDelete(optOutEchoKey(this.name, a.cfg.name, email));
    return this.store.scrubPerson(this.name, email);
  }

  /** A contact change is synced as its most recent lead's person (the model is lead-centred). */
  private async leadOfContact(event: CrmEvent) {
    const linked = event.entity.linked_leads_id;
    const ids = linked && typeof linked === 'object' ? Object.keys(linked).map(Number).filter(Number.isFinite) : [];
    if (ids.length === 0) return null;
    return this.loader.loadLead(Math.max(...ids));
  }

  async crmNote(e: EnrichedLead, sentTo: SentTo[]): Promise<string | null> {
    if (!this.notes) return null;
    // With destinations configured, an event that went to none of them is not worth a note.
    if (sentTo.length === 0 && this.active.length > 0) return null;
    return crmNoteText(this.notes, e, sentTo);
  }

  async remember(leads: EnrichedLead[]): Promise<void> {
    await this.store.indexEmails(leads.filter((e) => e.contact?.email).map((e) => ({ account: this.name, email: e.contact!.email, leadId: e.lead.id, updatedAt: e.lead.updatedAt })));
  }

  engagement(events: EngagementEvent[]): Promise<Array<EngagementRouting | { error: unknown }>> {
    return this.guarded(() => this.engagementNow(events));
  }

  /**
   * Matches a batch of engagement events to leads with as few Kommo reads as possible: the email
   * index (filled by every CRM event) names the leads, and all of them are read in one
   * `filter[id][]` request per 250; only emails the index does not know are searched, once each.
   * Then the rules run one event at a time, in order (hot-lead counting depends on it).
   */
  private async engagementNow(events: EngagementEvent[]): Promise<Array<EngagementRouting | { error: unknown }>> {
    await this.init();
    const emails = [...new Set(events.map((e) => e.email))];
    const indexed = new Map(await Promise.all(emails.map(async (email) => [email, await this.store.leadsByEmail(this.name, email)] as const)));
    const rows = new Map<number, LeadRow>();
    const read = new Set<number>();
    const getLeads = async (ids: number[]): Promise<LeadRow[]> => {
      const missing = ids.filter((id) => !read.has(id));
      if (missing.length) {
        for (const id of missing) read.add(id);
        for (const l of await this.client.getLeadsByIds(missing, { withContacts: true })) rows.set(l.id, leadRow(l));
      }
      return ids.flatMap((id) => rows.get(id) ?? []);
    };
    await getLeads([...new Set([...indexed.values()].flat())]);
    const deps = {
      indexed: async (email: string) => indexed.get(email) ?? [],
      searchContacts: async (email: string) => (await this.client.searchContactsByEmail(email)).map((c) => ({ id: c.id, leadIds: c._embedded.leads.map((l) => l.id) })),
      getLeads,
      remember: (email: string, leadId: number, updatedAt: number) => this.store.indexEmail(this.name, email, leadId, updatedAt),
    };
    const matches = new Map<string, LeadMatch | null>();
    const out: Array<EngagementRouting | { error: unknown }> = [];
    for (const ev of events) {
      // Kept for the record, with no rule to apply: not worth a Kommo search.
      if (ev.kind === 'vendor.other') {
        out.push({ leadId: null, kommo: [], sync: [] });
        continue;
      }
      if (!matches.has(ev.email)) matches.set(ev.email, await findLeadForEmail(ev.email, deps));
      const match = matches.get(ev.email) ?? null;
      try {
        // Our own suppress, reported back by the tool we sent it to: already handled everywhere.
        if (OPT_OUT_KINDS.has(ev.kind) && (await this.store.kvGet(optOutEchoKey(this.name, ev.source, ev.email))) !== null) {
          out.push({ leadId: null, kommo: [], sync: [] });
          continue;
        }
        const sync = await this.optOutElsewhere(ev, match?.contactId ?? null);
        if (!match) {
          out.push({ leadId: null, kommo: [], sync });
          continue;
        }
        const kommo = await planEngagement(ev, match, this.rules!, {
          // Lead ids are unique per Kommo account only: scope the counters by account.
          hitCounter: (key, at, windowMs) => this.store.hitCounter(`${this.name}:${key}`, at, windowMs),
          tryMark: (key, now, ttlMs) => this.store.tryMark(`${this.name}:${key}`, now, ttlMs),
        }, Date.now());
        out.push({ leadId: match.leadId, kommo, sync });
      } catch (error) {
        out.push({ error });
      }
    }
    return out;
  }

  /**
   * Unified opt-out: a person who unsubscribed (or complained) in one tool is suppressed in every
   * other destination that can suppress, so no other tool keeps emailing them.
   */
  private async optOutElsewhere(ev: EngagementEvent, contactId: number | null): Promise<EngagementRouting['sync']> {
    if (!OPT_OUT_KINDS.has(ev.kind) || !this.rules?.propagateOptOut) return [];
    const targets = this.active
      .filter((a) => a.cfg.name !== ev.source && a.dest.supports.suppress)
      // A destination keyed by Kommo contact id cannot be told who this is without the contact.
      .filter((a) => a.cfg.common.identifyBy === 'email' || contactId !== null);
    // A tool may report the suppress we send it as an opt-out of its own (a webhook, a sweep): mark
    // it, so that echo is recognised instead of noting and propagating the same opt-out again.
    for (const a of targets) await this.store.kvSet(optOutEchoKey(this.name, a.cfg.name, ev.email), ev.source, OPT_OUT_ECHO_MS);
    return targets.map((a) => ({
      destination: a.cfg.name,
      ops: [{ kind: 'suppress' as const, person: contactId === null ? { email: ev.email } : { email: ev.email, id: personId(contactId) } }],
    }));
  }

  /**
   * Sweeps: Kommo's event log for missed webhooks (`kommo.reconcile`), and this account's
   * destinations that have one (engagement no webhook reports).
   */
  sweepSources(): SweepSource[] {
    const kommo: SweepSource[] = [];
    if (this.cfg.kommo.reconcile > 0) {
      const source = kommoReconcileSource({
        account: this.name,
        subdomain: this.cfg.kommo.subdomain,
        intervalMs: this.cfg.kommo.reconcile,
        client: this.client,
        store: this.store,
        pipelineOfStatus: (id) => this.catalog.pipelineOfStatus(id),
      });
      // The catalog tells stage ids' pipelines; it may not be loaded yet when Kommo was away at start.
      kommo.push({ ...source, run: async (cursor) => this.guarded(async () => {
        // A paused account waits for its credentials like everything else; the cursor stays.
        if (this.pauses?.reason(this.name)) return { events: [], cursor };
        await this.init();
        return source.run(cursor);
      }) });
    }
    return [...kommo, ...this.active.flatMap((a) => {
      const sweep = a.dest.sweep;
      if (!sweep) return [];
      const perSecond = a.dest.limits.perSecond;
      const limiter = perSecond ? getAccountLimiter(`dest:${destinationKey(this.name, a.cfg.name)}`, perSecond, this.store, this.store.kind === 'postgres') : null;
      return [{
        account: this.name,
        name: a.cfg.name,
        intervalMs: sweep.intervalMs(a.cfg.settings),
        // The sweep spends the same vendor budget as deliveries: one slot per run.
        run: async (cursor: string | null) => {
          const release = await limiter?.acquire();
          try {
            return await sweep.run(a.ctx, cursor);
          } finally {
            release?.();
          }
        },
      }];
    })];
  }

  /** Delivery targets for the worker: every enabled destination, plus Kommo itself. */
  targets(batchSize: number): DeliveryTarget[] {
    const out: DeliveryTarget[] = this.active.map((a) => {
      const key = destinationKey(this.name, a.cfg.name);
      const perSecond = a.dest.limits.perSecond;
      // A vendor's documented rate limit is one budget for all our processes (shared on PostgreSQL),
      // spent per delivery call: a call is one batch request for the vendors that batch.
      const limiter = perSecond ? getAccountLimiter(`dest:${key}`, perSecond, this.store, this.store.kind === 'postgres') : null;
      return {
        key,
        account: this.name,
        maxBatch: Math.min(batchSize, a.dest.limits.maxBatch),
        jobType: SYNC_OPS_V1,
        deliver: async (ops) => {
          const release = await limiter?.acquire();
          try {
            return await a.dest.deliver(a.ctx, ops);
          } finally {
            release?.();
          }
        },
      };
    });
    out.push({
      key: destinationKey(this.name, 'kommo'),
      account: this.name,
      // Kommo takes up to 250 items per write and recommends 50; the client sends 50 per request,
      // and claiming up to 250 lets one round write notes, tasks and contacts together.
      maxBatch: Math.min(batchSize, 250),
      jobType: KOMMO_OPS_V1,
      paused: () => this.pauses?.reason(this.name) ?? null,
      deliver: async (ops) => {
        const results = await deliverKommoOps(this.client, ops, this.echo);
        const refused = results.find((r) => r.httpStatus === 401 || r.httpStatus === 403);
        if (!refused || !this.pauses) return results;
        await this.pauses.pause(this.name, refused.httpStatus!, 'fail' in refused ? refused.fail.reason : 'retry' in refused ? refused.retry.reason : 'refused');
        // Those jobs wait for the account to resume: a retry, never a dead letter.
        return results.map((r) => (r.httpStatus === 401 || r.httpStatus === 403) && 'fail' in r ? { retry: { reason: r.fail.reason }, httpStatus: r.httpStatus } : r);
      },
    });
    return out;
  }

  private async userMap(): Promise<Map<number, { name: string; email: string | null }> | null> {
    if (!this.cfg.kommo.readUsers) return null;
    if (this.users && Date.now() - this.users.at < USERS_TTL_MS) return this.users.map;
    try {
      const users = await this.client.getUsers();
      this.users = { at: Date.now(), map: users ? new Map(users.map((u) => [u.id, { name: u.name, email: u.email ?? null }])) : null };
      if (!users) this.log.info({ account: this.name }, 'the Kommo token may not read users (not an admin); `responsible` is sent as the user id');
    } catch (err) {
      this.log.warn({ account: this.name, err: (err as Error).message }, 'could not read Kommo users; `responsible` falls back to ids');
      this.users = { at: Date.now(), map: null };
    }
    return this.users.map;
  }
}

/** How long an opt-out a tool reports for a person we suppressed there counts as our own echo. */
const OPT_OUT_ECHO_MS = 7 * 24 * 3_600_000;

function optOutEchoKey(account: string, destination: string, email: string): string {
  return `optout-echo:${account}:${destination}:${email}`;
}

/** What engagement matching needs of a Kommo lead. */
function leadRow(l: KommoLead): LeadRow {
  return {
    id: l.id,
    statusId: l.status_id,
    pipelineId: l.pipeline_id,
    updatedAt: l.updated_at * 1000,
    responsibleUserId: l.responsible_user_id,
    closed: l.status_id === WON_STATUS || l.status_id === LOST_STATUS,
    mainContactId: mainContactId(l),
  };
}
