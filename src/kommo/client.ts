/**
 * Typed calls to one Kommo account's REST API v4 (vendor-apis/kommo.md section 2.6): batched reads
 * by id, contact search, the account's vocabulary, and writes that answer one result per item.
 * Transport (limiter, retries, breaker, paging) is kommo/transport.ts; answers are kommo/schemas.ts.
 */
import { z } from 'zod';
import type { KommoConfig } from '../config/schema.js';
import { normalizeEmail } from '../model/index.js';
import type { Store } from '../store/store.js';
import { OAuthTokenProvider, StaticTokenProvider, type TokenProvider } from './auth.js';
import { getAccountLimiter } from './rate-limit.js';
import {
  accountInfoSchema,
  companySchema,
  contactSchema,
  customFieldSchema,
  eventSchema,
  leadSchema,
  pageSchema,
  pipelineSchema,
  userSchema,
  webhookSchema,
  writtenItemSchema,
  type KommoAccountInfo,
  type KommoCompany,
  type KommoContact,
  type KommoCustomField,
  type KommoEvent,
  type KommoLead,
  type KommoPipeline,
  type KommoUser,
  type KommoWebhook,
} from './schemas.js';
import { asApiError, KommoApiError, KommoTransport, type KommoTransportOptions, type Query, type RequestInfo } from './transport.js';

// Write inputs (typed, so nothing can send `_embedded.tags`, which REPLACES the whole tag set)

export interface CustomFieldWrite {
  /** One of fieldId / fieldCode (PHONE and EMAIL can be written by code). */
  fieldId?: number;
  fieldCode?: string;
  values: Array<{ value: string | number | boolean; enumId?: number; enumCode?: string }>;
}

export interface NoteInput {
  entityId: number;
  text: string;
}

export interface TaskInput {
  entityId: number;
  entityType: 'leads' | 'contacts' | 'companies';
  text: string;
  /** Unix seconds. */
  completeTill: number;
  responsibleUserId?: number;
  taskTypeId?: number;
}

export interface ContactPatch {
  id: number;
  name?: string;
  firstName?: string;
  lastName?: string;
  customFields?: CustomFieldWrite[];
  /** Added incrementally (`tags_to_add`); existing tags stay. */
  tagsToAdd?: string[];
  tagsToDelete?: string[];
}

export interface LeadPatch {
  id: number;
  name?: string;
  price?: number;
  pipelineId?: number;
  statusId?: number;
  responsibleUserId?: number;
  customFields?: CustomFieldWrite[];
  tagsToAdd?: string[];
  tagsToDelete?: string[];
}

/** One input item's outcome, same order as the input. */
export type WriteResult =
  | { ok: true; status: number; id: number | null; updatedAt: number | null }
  | { ok: false; error: KommoApiError };

export type KommoClientOptions = KommoTransportOptions;

/** Kommo's page size for reads (`limit` ≤ 250). */
export const MAX_PAGE = 250;
/** Events per page: the RU docs say at most 100, the EN page 250 (kommo.md); 100 is safe with both. */
export const EVENTS_PAGE = 100;

/** Which leads a listing reads (`leadsPage`): all filters optional, ANDed. */
export interface LeadListFilter {
  /** Only leads created at or before this (unix seconds): a backfill's fixed set. */
  createdTo?: number;
  /** Only leads updated at or after this (unix seconds): `backfill --since`. */
  updatedFrom?: number;
  pipelineId?: number;
  /** One stage of one pipeline (Kommo filters one stage per request). */
  stage?: { pipelineId: number; statusId: number };
}
/** Entities per write request: Kommo accepts 250 and recommends at most 50 (vendor-apis/kommo.md 2.4). */
export const WRITE_CHUNK = 50;

export class KommoClient {
  readonly account: string;
  readonly baseUrl: string;
  private readonly http: KommoTransport;

  constructor(opts: KommoClientOptions) {
    this.http = new KommoTransport(opts);
    this.account = this.http.account;
    this.baseUrl = this.http.baseUrl;
  }

  // ----- reads -----

  async getLeadsByIds(ids: readonly number[], opts: { withContacts?: boolean; withLossReason?: boolean; signal?: AbortSignal } = {}): Promise<KommoLead[]> {
    const out: KommoLead[] = [];
    const withs = [...(opts.withContacts ? ['contacts'] : []), ...(opts.withLossReason ? ['loss_reason'] : [])];
    for (const chunk of chunks(unique(ids), MAX_PAGE)) {
      const query: Query = chunk.map((id) => ['filter[id][]', id]);
      if (withs.length) query.push(['with', withs.join(',')]);
      query.push(['limit', MAX_PAGE]);
      for await (const page of this.http.pages('/api/v4/leads', query, 'leads', leadSchema, opts.signal)) out.push(...page);
    }
    return out;
  }

  async getContactsByIds(ids: readonly number[], opts: { withLeads?: boolean; signal?: AbortSignal } = {}): Promise<KommoContact[]> {
    const out: KommoContact[] = [];
    for (const chunk of chunks(unique(ids), MAX_PAGE)) {
      const query: Query = chunk.map((id) => ['filter[id][]', id]);
      if (opts.withLeads) query.push(['with', 'leads']);
      query.push(['limit', MAX_PAGE]);
      for await (const page of this.http.pages('/api/v4/contacts', query, 'contacts', contactSchema, opts.signal)) out.push(...page);
    }
    return out;
  }

  async getCompaniesByIds(ids: readonly number[], opts: { signal?: AbortSignal } = {}): Promise<KommoCompany[]> {
    const out: KommoCompany[] = [];
    for (const chunk of chunks(unique(ids), MAX_PAGE)) {
      const query: Query = [...chunk.map((id): [string, number] => ['filter[id][]', id]), ['limit', MAX_PAGE]];
      for await (const page of this.http.pages('/api/v4/companies', query, 'companies', companySchema, opts.signal)) out.push(...page);
    }
    return out;
  }

  /**
   * Contacts whose EMAIL field holds exactly `email` (trimmed, lower-cased). Kommo's `query` is a
   * fuzzy full-text search (`ann@x.com` also finds `joann@x.com`, or a contact that mentions it in
   * a note field), so its answer is only a candidate list that we filter ourselves.
   */
  async searchContactsByEmail(email: string, opts: { signal?: AbortSignal } = {}): Promise<KommoContact[]> {
    const wanted = normalizeEmail(email);
    if (!wanted) return [];
    const out: KommoContact[] = [];
    const query: Query = [['query', wanted], ['with', 'leads'], ['limit', MAX_PAGE]];
    for await (const page of this.http.pages('/api/v4/contacts', query, 'contacts', contactSchema, opts.signal)) {
      out.push(...page.filter((c) => contactEmails(c).includes(wanted)));
    }
    return out;
  }

  /**
   * Leads whose name (or any field) contains `text`: Kommo's fuzzy `query` search, one page of at
   * most `limit` (the dashboard's "find a lead by name"; one request of the account's budget).
   */
  async searchLeads(text: string, opts: { limit?: number; signal?: AbortSignal } = {}): Promise<KommoLead[]> {
    const wanted = text.trim();
    if (!wanted) return [];
    const limit = Math.max(1, Math.min(MAX_PAGE, opts.limit ?? 20));
    for await (const page of this.http.pages('/api/v4/leads', [['query', wanted], ['limit', limit]], 'leads', leadSchema, opts.signal)) return page.slice(0, limit);
    return [];
  }

  async getPipelines(opts: { signal?: AbortSignal } = {}): Promise<KommoPipeline[]> {
    const out: KommoPipeline[] = [];
    for await (const page of this.http.pages('/api/v4/leads/pipelines', [], 'pipelines', pipelineSchema, opts.signal)) out.push(...page);
    return out;
  }

  async getCustomFields(entity: 'leads' | 'contacts' | 'companies', opts: { signal?: AbortSignal } = {}): Promise<KommoCustomField[]> {
    const out: KommoCustomField[] = [];
    const path = `/api/v4/${entity}/custom_fields`;
    for await (const page of this.http.pages(path, [['limit', MAX_PAGE]], 'custom_fields', customFieldSchema, opts.signal)) out.push(...page);
    return out;
  }

  /** All users, or null when the token's user is not an admin (Kommo answers 403 then). */
  async getUsers(opts: { signal?: AbortSignal } = {}): Promise<KommoUser[] | null> {
    const out: KommoUser[] = [];
    try {
      for await (const page of this.http.pages('/api/v4/users', [['limit', MAX_PAGE]], 'users', userSchema, opts.signal, true)) out.push(...page);
    } catch (err) {
      if (err instanceof KommoApiError && err.status === 403) return null;
      throw err;
    }
    return out;
  }

  /**
   * The account's webhook subscriptions (admin only: null on 403). Kommo turns a webhook off after
   * many failed deliveries and says so only here (`disabled`), so doctor reads it.
   */
  async getWebhooks(opts: { signal?: AbortSignal } = {}): Promise<KommoWebhook[] | null> {
    const out: KommoWebhook[] = [];
    try {
      for await (const page of this.http.pages('/api/v4/webhooks', [], 'webhooks', webhookSchema, opts.signal, true)) out.push(...page);
    } catch (err) {
      if (err instanceof KommoApiError && err.status === 403) return null;
      throw err;
    }
    return out;
  }

  /**
   * Subscribes `destination` to the account's webhook `settings` (admin only). Posting a destination
   * that exists updates it (UNCONFIRMED for Kommo, kommo.md 1.1; the simulator does so).
   */
  async addWebhook(destination: string, settings: readonly string[], opts: { signal?: AbortSignal } = {}): Promise<KommoWebhook> {
    const res = await this.http.request({ method: 'POST', path: '/api/v4/webhooks', body: { destination, settings: [...settings] }, schema: webhookSchema, signal: opts.signal });
    if (!res) throw new KommoApiError({ status: 204, detail: 'Kommo answered the webhook subscription with no content', path: '/api/v4/webhooks' });
    return res;
  }

  /** The account's settings. `probe`: sent even while the breaker is open (is Kommo answering again?). */
  async getAccount(opts: { signal?: AbortSignal; probe?: boolean } = {}): Promise<KommoAccountInfo> {
    const res = await this.http.request({ method: 'GET', path: '/api/v4/account', schema: accountInfoSchema, signal: opts.signal, probe: opts.probe ?? false });
    if (!res) throw new KommoApiError({ status: 204, detail: 'account endpoint answered with no content', path: '/api/v4/account' });
    return res;
  }

  /**
   * Leads changed since `fromUnix` (seconds), oldest change first, page by page (250 each), with
   * their contact links. An async generator, so a backfill streams and can checkpoint per page.
   */
  async *listLeadsUpdatedSince(fromUnix: number, pipelineId?: number, opts: { signal?: AbortSignal } = {}): AsyncGenerator<KommoLead[]> {
    const query: Query = [
      ['filter[updated_at][from]', Math.floor(fromUnix)],
      ['order[updated_at]', 'asc'],
      ['with', 'contacts'],
      ['limit', MAX_PAGE],
    ];
    if (pipelineId !== undefined) query.push(['filter[pipeline_id][]', pipelineId]);
    yield* this.http.pages('/api/v4/leads', query, 'leads', leadSchema, opts.signal);
  }

  /**
   * Page `page` (from 1) of the leads matching `filter`, by id ascending, 250 per page with their
   * contact links and loss reason; [] past the last page (Kommo answers 204). Ordered by id, an
   * update to a lead does not move it between pages (ordered by `updated_at` it would, and the
   * lead after it would be skipped).
   */
  async leadsPage(filter: LeadListFilter, page: number, opts: { signal?: AbortSignal; withContacts?: boolean } = {}): Promise<KommoLead[]> {
    const query: Query = [['order[id]', 'asc'], ['limit', MAX_PAGE], ['page', page]];
    if (opts.withContacts !== false) query.push(['with', 'contacts,loss_reason']);
    if (filter.createdTo !== undefined) query.push(['filter[created_at][to]', Math.floor(filter.createdTo)]);
    if (filter.updatedFrom !== undefined) query.push(['filter[updated_at][from]', Math.floor(filter.updatedFrom)]);
    if (filter.stage) {
      query.push(['filter[statuses][0][pipeline_id]', filter.stage.pipelineId], ['filter[statuses][0][status_id]', filter.stage.statusId]);
    } else if (filter.pipelineId !== undefined) {
      query.push(['filter[pipeline_id][]', filter.pipelineId]);
    }
    const res = await this.http.request({ method: 'GET', path: '/api/v4/leads', query, schema: pageSchema('leads', leadSchema), signal: opts.signal });
    return (res?._embedded.leads ?? []) as KommoLead[];
  }

  /**
   * The account's event log: events of `types` created in [from, to] (unix seconds), page by page
   * (100 each: kommo.md says to stay at or below 100). The order Kommo returns is unconfirmed:
   * callers must not rely on it.
   */
  async *events(q: { types: readonly string[]; from: number; to?: number; entity?: string }, opts: { signal?: AbortSignal } = {}): AsyncGenerator<KommoEvent[]> {
    const query: Query = [['filter[type]', q.types.join(',')], ['filter[created_at][from]', Math.floor(q.from)], ['limit', EVENTS_PAGE]];
    if (q.to !== undefined) query.push(['filter[created_at][to]', Math.floor(q.to)]);
    if (q.entity) query.push(['filter[entity]', q.entity]);
    yield* this.http.pages('/api/v4/events', query, 'events', eventSchema, opts.signal);
  }

  // ----- writes (arrays; chunked to 250 per request; one result per input item) -----

  addNotes(notes: readonly NoteInput[], entity: 'leads' | 'contacts' | 'companies' = 'leads', opts: { signal?: AbortSignal } = {}): Promise<WriteResult[]> {
    return this.writeAll('POST', `/api/v4/${entity}/notes`, 'notes', notes.map((n) => ({
      entity_id: n.entityId,
      note_type: 'common',
      params: { text: n.text },
    })), opts.signal);
  }

  addTasks(tasks: readonly TaskInput[], opts: { signal?: AbortSignal } = {}): Promise<WriteResult[]> {
    return this.writeAll('POST', '/api/v4/tasks', 'tasks', tasks.map((t) => ({
      entity_id: t.entityId,
      entity_type: t.entityType,
      text: t.text,
      complete_till: Math.floor(t.completeTill),
      ...(t.responsibleUserId !== undefined ? { responsible_user_id: t.responsibleUserId } : {}),
      ...(t.taskTypeId !== undefined ? { task_type_id: t.taskTypeId } : {}),
    })), opts.signal);
  }

  patchContacts(patches: readonly ContactPatch[], opts: { signal?: AbortSignal } = {}): Promise<WriteResult[]> {
    return this.writeAll('PATCH', '/api/v4/contacts', 'contacts', patches.map((p) => ({
      id: p.id,
      ...(p.name !== undefined ? { name: p.name } : {}),
      ...(p.firstName !== undefined ? { first_name: p.firstName } : {}),
      ...(p.lastName !== undefined ? { last_name: p.lastName } : {}),
      ...writeFieldsAndTags(p),
    })), opts.signal);
  }

  patchLeads(patches: readonly LeadPatch[], opts: { signal?: AbortSignal } = {}): Promise<WriteResult[]> {
    return this.writeAll('PATCH', '/api/v4/leads', 'leads', patches.map((p) => ({
      id: p.id,
      ...(p.name !== undefined ? { name: p.name } : {}),
      ...(p.price !== undefined ? { price: p.price } : {}),
      ...(p.pipelineId !== undefined ? { pipeline_id: p.pipelineId } : {}),
      ...(p.statusId !== undefined ? { status_id: p.statusId } : {}),
      ...(p.responsibleUserId !== undefined ? { responsible_user_id: p.responsibleUserId } : {}),
      ...writeFieldsAndTags(p),
    })), opts.signal);
  }

  /**
   * Sends `items` in chunks of 50 (Kommo takes 250 but recommends at most 50 per write) and maps
   * every answer back to its item by `request_id` (the item's index in its chunk).
   * - A 400 with `validation-errors` fails only the items it names; the rest of that chunk is sent
   *   again without them, because Kommo validates a batch as a whole and stores nothing from a
   *   batch it rejected.
   * - A 504 means the batch was too big for Kommo to finish in time: the chunk is split in halves
   *   and each is sent on its own (a single item that still times out is a retryable failure).
   */
  private async writeAll(method: 'POST' | 'PATCH', path: string, key: string, items: Array<Record<string, unknown>>, signal?: AbortSignal): Promise<WriteResult[]> {
    const results: WriteResult[] = new Array<WriteResult>(items.length);
    const schema = z.looseObject({ _embedded: z.looseObject({ [key]: z.array(writtenItemSchema) }).nullish() });
    // Chunks still to send, in order; a split puts its halves at the front.
    const todo: number[][] = [];
    for (let start = 0; start < items.length; start += WRITE_CHUNK) todo.push(range(start, Math.min(items.length, start + WRITE_CHUNK)));
    while (todo.length > 0) {
      let pending = todo.shift()!;
      // Each round either settles every pending item, fails at least one, or splits (so it ends).
      while (pending.length > 0) {
        const body = pending.map((idx, i) => ({ ...items[idx], request_id: String(i) }));
        try {
          const res = await this.http.request({ method, path, body, schema, signal });
          const written = res?._embedded?.[key] ?? [];
          pending.forEach((idx, i) => {
            const w = written.find((x) => x.request_id != null && String(x.request_id) === String(i)) ?? written[i];
            results[idx] = { ok: true, status: 200, id: w?.id ?? null, updatedAt: w?.updated_at ?? null };
          });
          pending = [];
        } catch (err) {
          const apiErr = asApiError(err, path);
          if (apiErr.status === 504 && pending.length > 1) {
            const half = Math.ceil(pending.length / 2);
            todo.unshift(pending.slice(0, half), pending.slice(half));
            pending = [];
            continue;
          }
          const named = new Map((apiErr.validationErrors ?? []).map((v) => [v.request_id, v]));
          const failedNow = pending.filter((_, i) => named.has(String(i)));
          if (apiErr.status !== 400 || failedNow.length === 0) {
            for (const idx of pending) results[idx] = { ok: false, error: apiErr };
            pending = [];
            continue;
          }
          pending.forEach((idx, i) => {
            const v = named.get(String(i));
            if (!v) return;
            const detail = v.errors.map((e) => [e.path, e.code, e.detail].filter(Boolean).join(' ')).join('; ') || 'validation failed';
            results[idx] = { ok: false, error: new KommoApiError({ status: 400, detail, path, validationErrors: [v] }) };
          });
          pending = pending.filter((_, i) => !named.has(String(i)));
        }
      }
    }
    return results;
  }

}

export interface CreateClientDeps {
  /** Needed for OAuth (token pair) and for a shared rate limit. */
  store?: Store;
  /** Share the rate budget with other processes through the store (PostgreSQL deployments). */
  sharedRateLimit?: boolean;
  onRequest?: (info: RequestInfo) => void;
}

/** The usual way to get an account's client: auth, limiter and breaker wired from its config block. */
export function createKommoClient(account: string, cfg: KommoConfig, deps: CreateClientDeps = {}): KommoClient {
  const baseUrl = cfg.baseUrl ?? `https://${cfg.subdomain}.kommo.com`;
  const limiter = getAccountLimiter(account, cfg.rateLimit, deps.store, deps.sharedRateLimit ?? false);
  let auth: TokenProvider;
  if (cfg.oauth) {
    if (!deps.store) throw new Error(`account "${account}": OAuth needs a store to keep the rotating refresh token`);
    auth = new OAuthTokenProvider({
      account,
      baseUrl,
      clientId: cfg.oauth.clientId,
      clientSecret: cfg.oauth.clientSecret,
      refreshToken: cfg.oauth.refreshToken,
      redirectUri: cfg.oauth.redirectUri,
      store: deps.store,
      limiter,
      timeoutMs: cfg.timeout,
    });
  } else if (cfg.accessToken) {
    auth = new StaticTokenProvider(cfg.accessToken);
  } else {
    throw new Error(`account "${account}": set kommo.accessToken or kommo.oauth`);
  }
  return new KommoClient({
    account,
    baseUrl,
    auth,
    limiter,
    timeoutMs: cfg.timeout,
    ...(deps.onRequest ? { onRequest: deps.onRequest } : {}),
  });
}

/** Normalized values of a contact's EMAIL field (by code; the standard field always has it). */
export function contactEmails(c: Pick<KommoContact, 'custom_fields_values'>): string[] {
  const out: string[] = [];
  for (const f of c.custom_fields_values ?? []) {
    if (f.field_code !== 'EMAIL') continue;
    for (const v of f.values) if (typeof v.value === 'string') out.push(normalizeEmail(v.value));
  }
  return out;
}

function writeFieldsAndTags(p: { customFields?: CustomFieldWrite[]; tagsToAdd?: string[]; tagsToDelete?: string[] }): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (p.customFields?.length) {
    out['custom_fields_values'] = p.customFields.map((f) => ({
      ...(f.fieldId !== undefined ? { field_id: f.fieldId } : { field_code: f.fieldCode }),
      values: f.values.map((v) => ({
        value: v.value,
        ...(v.enumId !== undefined ? { enum_id: v.enumId } : {}),
        ...(v.enumCode !== undefined ? { enum_code: v.enumCode } : {}),
      })),
    }));
  }
  if (p.tagsToAdd?.length) out['tags_to_add'] = p.tagsToAdd.map((name) => ({ name }));
  if (p.tagsToDelete?.length) out['tags_to_delete'] = p.tagsToDelete.map((name) => ({ name }));
  return out;
}

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

function unique(ids: readonly number[]): number[] {
  return [...new Set(ids)];
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}
