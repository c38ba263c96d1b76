/**
 * Typed calls to one Kommo account's REST API v4 (vendor-apis/kommo.md section 2).
 *
 * Everything Kommo-specific about transport lives here, once:
 * - every request (retries and 401 re-tries included) takes a slot from the account limiter;
 * - 429, and 5xx or no answer except for non-idempotent POSTs, are retried a few times with
 *   exponential backoff + jitter, honouring `retry_after` (problem+json body) or `Retry-After`; a
 *   wait longer than `maxInlineWaitMs` is not slept here but handed to the caller as
 *   `KommoApiError.retryAfterMs` (the queue can wait without holding a lease);
 * - a circuit breaker per account stops calling after repeated 429s, because Kommo escalates them
 *   to a 403 block of the whole account/IP; a 403 opens it for longer;
 * - 204 No Content is an empty result; HAL pages are followed through `_links.next.href`;
 * - responses are parsed by zod schemas at this edge, so callers get types, not `unknown`.
 */
import { z } from 'zod';
import { OAuthRefreshError, OAuthTokenProvider, StaticTokenProvider, type TokenProvider } from './auth.js';
import type { KommoConfig } from '../config/schema.js';
import type { Store } from '../store/store.js';
import {
  getAccountBreaker,
  getAccountLimiter,
  sleep,
  type CircuitBreaker,
  type RateLimiter,
} from './rate-limit.js';

// ---------------------------------------------------------------------------------------------
// Response schemas (v4 shapes; loose, so fields Kommo adds later pass through)
// ---------------------------------------------------------------------------------------------

const int = z.number().int();
const nullableInt = int.nullish().transform((v) => v ?? null);

export const tagSchema = z.looseObject({ id: int, name: z.string() });

const customFieldValueItemSchema = z.looseObject({
  value: z.unknown(),
  enum_id: int.nullish(),
  enum_code: z.string().nullish(),
});

export const customFieldValueSchema = z.looseObject({
  field_id: int,
  field_name: z.string().nullish(),
  field_code: z.string().nullish(),
  field_type: z.string().nullish(),
  values: z.array(customFieldValueItemSchema).nullish().transform((v) => v ?? []),
});
export type KommoCustomFieldValue = z.infer<typeof customFieldValueSchema>;

const customFieldsValues = z.array(customFieldValueSchema).nullish().transform((v) => v ?? null);
const tagsList = z.array(tagSchema).nullish().transform((v) => v ?? []);

export const leadSchema = z.looseObject({
  id: int,
  name: z.string().nullish().transform((v) => v ?? ''),
  price: z.number().nullish().transform((v) => v ?? 0),
  status_id: int,
  pipeline_id: int,
  responsible_user_id: int.nullish().transform((v) => v ?? 0),
  created_at: int,
  updated_at: int,
  closed_at: nullableInt,
  custom_fields_values: customFieldsValues,
  is_deleted: z.boolean().nullish().transform((v) => v ?? false),
  _embedded: z
    .looseObject({
      tags: tagsList,
      contacts: z.array(z.looseObject({ id: int, is_main: z.boolean().nullish() })).nullish().transform((v) => v ?? []),
      companies: z.array(z.looseObject({ id: int })).nullish().transform((v) => v ?? []),
    })
    .nullish()
    .transform((v) => v ?? { tags: [], contacts: [], companies: [] }),
});
export type KommoLead = z.infer<typeof leadSchema>;

export const contactSchema = z.looseObject({
  id: int,
  name: z.string().nullish().transform((v) => v ?? ''),
  first_name: z.string().nullish().transform((v) => v ?? ''),
  last_name: z.string().nullish().transform((v) => v ?? ''),
  responsible_user_id: int.nullish().transform((v) => v ?? 0),
  created_at: int.nullish(),
  updated_at: int.nullish(),
  custom_fields_values: customFieldsValues,
  _embedded: z
    .looseObject({
      tags: tagsList,
      companies: z.array(z.looseObject({ id: int })).nullish().transform((v) => v ?? []),
      leads: z.array(z.looseObject({ id: int })).nullish().transform((v) => v ?? []),
    })
    .nullish()
    .transform((v) => v ?? { tags: [], companies: [], leads: [] }),
});
export type KommoContact = z.infer<typeof contactSchema>;

export const companySchema = z.looseObject({
  id: int,
  name: z.string().nullish().transform((v) => v ?? ''),
  custom_fields_values: customFieldsValues,
});
export type KommoCompany = z.infer<typeof companySchema>;

export const statusSchema = z.looseObject({
  id: int,
  name: z.string(),
  sort: int.nullish(),
  pipeline_id: int.nullish(),
  /** 1 = "Incoming leads", 0 = regular (142/143 included). */
  type: int.nullish().transform((v) => v ?? 0),
});
export const pipelineSchema = z.looseObject({
  id: int,
  name: z.string(),
  sort: int.nullish(),
  is_main: z.boolean().nullish(),
  is_archive: z.boolean().nullish(),
  _embedded: z.looseObject({ statuses: z.array(statusSchema).nullish().transform((v) => v ?? []) }).nullish()
    .transform((v) => v ?? { statuses: [] }),
});
export type KommoPipeline = z.infer<typeof pipelineSchema>;

export const customFieldSchema = z.looseObject({
  id: int,
  name: z.string(),
  code: z.string().nullish().transform((v) => v ?? null),
  type: z.string(),
  sort: int.nullish(),
  enums: z.array(z.looseObject({ id: int, value: z.string(), sort: int.nullish() })).nullish().transform((v) => v ?? null),
});
export type KommoCustomField = z.infer<typeof customFieldSchema>;

export const userSchema = z.looseObject({
  id: int,
  name: z.string().nullish().transform((v) => v ?? ''),
  email: z.string().nullish().transform((v) => v ?? ''),
});
export type KommoUser = z.infer<typeof userSchema>;

export const webhookSchema = z.looseObject({
  destination: z.string(),
  disabled: z.boolean().nullish().transform((v) => v ?? false),
  settings: z.array(z.string()).nullish().transform((v) => v ?? []),
});
export type KommoWebhook = z.infer<typeof webhookSchema>;

export const accountInfoSchema = z.looseObject({
  id: int,
  name: z.string(),
  subdomain: z.string(),
  current_user_id: int.nullish(),
  country: z.string().nullish(),
  currency: z.string().nullish(),
});
export type KommoAccountInfo = z.infer<typeof accountInfoSchema>;

const pageLinks = z
  .looseObject({ next: z.looseObject({ href: z.string() }).nullish() })
  .nullish();

function pageSchema<T extends z.ZodType>(key: string, item: T) {
  return z.looseObject({
    _links: pageLinks,
    _embedded: z.looseObject({ [key]: z.array(item) }),
  });
}

/** What a write answers per created/updated item. */
const writtenItemSchema = z.looseObject({
  id: int,
  request_id: z.union([z.string(), z.number()]).nullish(),
  updated_at: int.nullish(),
});

const validationErrorsSchema = z.array(
  z.looseObject({
    request_id: z.union([z.string(), z.number()]).transform(String),
    errors: z.array(z.looseObject({ code: z.string().nullish(), path: z.string().nullish(), detail: z.string().nullish() }))
      .nullish().transform((v) => v ?? []),
  }),
);
export type KommoValidationErrors = z.infer<typeof validationErrorsSchema>;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

export class KommoApiError extends Error {
  override name = 'KommoApiError';
  /** HTTP status; 0 when Kommo did not answer (network error, timeout). */
  readonly status: number;
  /** When to try again (from retry_after / Retry-After, or the breaker's remaining cool-down). */
  readonly retryAfterMs?: number;
  readonly detail: string;
  /** Request path without the query string. */
  readonly path: string;
  /** Kommo's per-item `validation-errors` of a 400 (request_id -> errors). */
  readonly validationErrors?: KommoValidationErrors;

  constructor(init: { status: number; detail: string; path: string; retryAfterMs?: number; validationErrors?: KommoValidationErrors }) {
    super(`Kommo ${init.path}: ${init.status || 'no response'} ${init.detail}`);
    this.status = init.status;
    this.detail = init.detail;
    this.path = init.path;
    if (init.retryAfterMs !== undefined) this.retryAfterMs = init.retryAfterMs;
    if (init.validationErrors) this.validationErrors = init.validationErrors;
  }

  /** Worth trying again later: rate limited, Kommo-side failure, no answer, or a lifting block. */
  get retryable(): boolean {
    return this.status === 0 || this.status === 429 || this.status === 403 || this.status >= 500;
  }
}

// ---------------------------------------------------------------------------------------------
// Write inputs (typed, so nothing can send `_embedded.tags`, which REPLACES the whole tag set)
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

export interface RequestInfo {
  account: string;
  /** Path template without query, ids replaced by `:id` (a low-cardinality metrics label). */
  path: string;
  /** HTTP status, 0 when there was no answer. */
  status: number;
  ms: number;
}

export interface KommoClientOptions {
  /** Our account name (config key), used for limiter/breaker identity and metrics. */
  account: string;
  /** Account root, e.g. https://acme.kommo.com; may carry a path prefix. */
  baseUrl: string;
  auth: TokenProvider;
  /** Default: the process-wide limiter of `account` at 7 rps. */
  limiter?: RateLimiter;
  /** Default: the process-wide breaker of `account`. */
  breaker?: CircuitBreaker;
  /** Per request attempt (default 15 s). */
  timeoutMs?: number;
  /** Attempts per request for 429/5xx/no answer (default 4). */
  maxTries?: number;
  /** First backoff step (default 500 ms; then 1 s, 2 s, ... plus jitter). */
  backoffBaseMs?: number;
  /** Longer retry_after waits are returned to the caller instead of slept here (default 10 s). */
  maxInlineWaitMs?: number;
  onRequest?: (info: RequestInfo) => void;
}

type Query = Array<[string, string | number]>;

interface RequestSpec<T> {
  method: 'GET' | 'POST' | 'PATCH';
  path: string;
  query?: Query;
  /** Absolute URL (a HAL next link); wins over path + query. */
  url?: string;
  body?: unknown;
  schema: z.ZodType<T>;
  /** A 403 here means "not allowed for this user" (e.g. /users for non-admins), not an API block. */
  forbiddenIsPermission?: boolean;
  signal?: AbortSignal;
}

export const MAX_PAGE = 250;

export class KommoClient {
  readonly account: string;
  readonly baseUrl: string;
  private readonly auth: TokenProvider;
  private readonly limiter: RateLimiter;
  private readonly breaker: CircuitBreaker;
  private readonly timeoutMs: number;
  private readonly maxTries: number;
  private readonly backoffBaseMs: number;
  private readonly maxInlineWaitMs: number;
  private readonly onRequest: ((info: RequestInfo) => void) | undefined;

  constructor(opts: KommoClientOptions) {
    this.account = opts.account;
    this.baseUrl = opts.baseUrl.replace(/\/+$/, '');
    this.auth = opts.auth;
    this.limiter = opts.limiter ?? getAccountLimiter(opts.account, 7);
    this.breaker = opts.breaker ?? getAccountBreaker(opts.account);
    this.timeoutMs = opts.timeoutMs ?? 15_000;
    this.maxTries = opts.maxTries ?? 4;
    this.backoffBaseMs = opts.backoffBaseMs ?? 500;
    this.maxInlineWaitMs = opts.maxInlineWaitMs ?? 10_000;
    this.onRequest = opts.onRequest;
  }

  // ----- reads -----

  async getLeadsByIds(ids: readonly number[], opts: { withContacts?: boolean; signal?: AbortSignal } = {}): Promise<KommoLead[]> {
    const out: KommoLead[] = [];
    for (const chunk of chunks(unique(ids), MAX_PAGE)) {
      const query: Query = chunk.map((id) => ['filter[id][]', id]);
      if (opts.withContacts) query.push(['with', 'contacts']);
      query.push(['limit', MAX_PAGE]);
      for await (const page of this.pages('/api/v4/leads', query, 'leads', leadSchema, opts.signal)) out.push(...page);
    }
    return out;
  }

  async getContactsByIds(ids: readonly number[], opts: { withLeads?: boolean; signal?: AbortSignal } = {}): Promise<KommoContact[]> {
    const out: KommoContact[] = [];
    for (const chunk of chunks(unique(ids), MAX_PAGE)) {
      const query: Query = chunk.map((id) => ['filter[id][]', id]);
      if (opts.withLeads) query.push(['with', 'leads']);
      query.push(['limit', MAX_PAGE]);
      for await (const page of this.pages('/api/v4/contacts', query, 'contacts', contactSchema, opts.signal)) out.push(...page);
    }
    return out;
  }

  async getCompaniesByIds(ids: readonly number[], opts: { signal?: AbortSignal } = {}): Promise<KommoCompany[]> {
    const out: KommoCompany[] = [];
    for (const chunk of chunks(unique(ids), MAX_PAGE)) {
      const query: Query = [...chunk.map((id): [string, number] => ['filter[id][]', id]), ['limit', MAX_PAGE]];
      for await (const page of this.pages('/api/v4/companies', query, 'companies', companySchema, opts.signal)) out.push(...page);
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
    for await (const page of this.pages('/api/v4/contacts', query, 'contacts', contactSchema, opts.signal)) {
      out.push(...page.filter((c) => contactEmails(c).includes(wanted)));
    }
    return out;
  }

  async getPipelines(opts: { signal?: AbortSignal } = {}): Promise<KommoPipeline[]> {
    const out: KommoPipeline[] = [];
    for await (const page of this.pages('/api/v4/leads/pipelines', [], 'pipelines', pipelineSchema, opts.signal)) out.push(...page);
    return out;
  }

  async getCustomFields(entity: 'leads' | 'contacts' | 'companies', opts: { signal?: AbortSignal } = {}): Promise<KommoCustomField[]> {
    const out: KommoCustomField[] = [];
    const path = `/api/v4/${entity}/custom_fields`;
    for await (const page of this.pages(path, [['limit', MAX_PAGE]], 'custom_fields', customFieldSchema, opts.signal)) out.push(...page);
    return out;
  }

  /** All users, or null when the token's user is not an admin (Kommo answers 403 then). */
  async getUsers(opts: { signal?: AbortSignal } = {}): Promise<KommoUser[] | null> {
    const out: KommoUser[] = [];
    try {
      for await (const page of this.pages('/api/v4/users', [['limit', MAX_PAGE]], 'users', userSchema, opts.signal, true)) out.push(...page);
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
      for await (const page of this.pages('/api/v4/webhooks', [], 'webhooks', webhookSchema, opts.signal, true)) out.push(...page);
    } catch (err) {
      if (err instanceof KommoApiError && err.status === 403) return null;
      throw err;
    }
    return out;
  }

  async getAccount(opts: { signal?: AbortSignal } = {}): Promise<KommoAccountInfo> {
    const res = await this.request({ method: 'GET', path: '/api/v4/account', schema: accountInfoSchema, signal: opts.signal });
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
    yield* this.pages('/api/v4/leads', query, 'leads', leadSchema, opts.signal);
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
   * Sends `items` in chunks of 250 and maps every answer back to its item by `request_id` (we set
   * it to the item's index in the chunk). A 400 with `validation-errors` fails only the items it
   * names; the rest of that chunk is sent again without them, because Kommo validates a batch as a
   * whole and stores nothing from a batch it rejected.
   */
  private async writeAll(method: 'POST' | 'PATCH', path: string, key: string, items: Array<Record<string, unknown>>, signal?: AbortSignal): Promise<WriteResult[]> {
    const results: WriteResult[] = new Array<WriteResult>(items.length);
    const schema = z.looseObject({ _embedded: z.looseObject({ [key]: z.array(writtenItemSchema) }).nullish() });
    for (let start = 0; start < items.length; start += MAX_PAGE) {
      let pending = range(start, Math.min(items.length, start + MAX_PAGE));
      // Each round either settles every pending item or fails at least one (so it ends).
      while (pending.length > 0) {
        const body = pending.map((idx, i) => ({ ...items[idx], request_id: String(i) }));
        try {
          const res = await this.request({ method, path, body, schema, signal });
          const written = res?._embedded?.[key] ?? [];
          pending.forEach((idx, i) => {
            const w = written.find((x) => x.request_id != null && String(x.request_id) === String(i)) ?? written[i];
            results[idx] = { ok: true, status: 200, id: w?.id ?? null, updatedAt: w?.updated_at ?? null };
          });
          pending = [];
        } catch (err) {
          const apiErr = asApiError(err, path);
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

  // ----- transport -----

  /** Follows HAL `_links.next.href` until the last page; a 204 is an empty list. */
  private async *pages<T>(path: string, query: Query, key: string, item: z.ZodType<T>, signal?: AbortSignal, forbiddenIsPermission = false): AsyncGenerator<T[]> {
    const schema = pageSchema(key, item);
    let url: string | undefined;
    const seen = new Set<string>();
    for (;;) {
      const res = await this.request({ method: 'GET', path, query, url, schema, signal, forbiddenIsPermission });
      if (!res) return;
      const items = (res._embedded[key] ?? []) as T[];
      if (items.length > 0) yield items;
      const next = res._links?.next?.href;
      if (!next || items.length === 0) return;
      url = this.sameOrigin(next);
      if (seen.has(url)) return; // a server that links a page to itself must not loop us forever
      seen.add(url);
    }
  }

  /**
   * The bearer token must only ever go to the account's own host: a next link pointing elsewhere
   * (or to Kommo's public host while we talk to a proxy/simulator) is re-rooted onto baseUrl.
   */
  private sameOrigin(href: string): string {
    const base = new URL(this.baseUrl);
    const next = new URL(href, this.baseUrl + '/');
    if (next.origin === base.origin) return next.toString();
    const at = next.pathname.indexOf('/api/');
    const rest = at >= 0 ? next.pathname.slice(at) : next.pathname;
    return `${this.baseUrl}${rest}${next.search}`;
  }

  private async request<T>(spec: RequestSpec<T>): Promise<T | null> {
    const url = spec.url ?? this.url(spec.path, spec.query);
    let attempt = 0;
    let reauthorized = false;
    for (;;) {
      const open = this.breaker.check();
      if (open.state === 'open') {
        throw new KommoApiError({ status: open.status, retryAfterMs: open.retryAfterMs, detail: open.detail, path: spec.path });
      }
      let token: string;
      try {
        token = await this.auth.token(spec.signal);
      } catch (err) {
        throw asApiError(err, spec.path);
      }
      const release = await this.limiter.acquire(spec.signal);
      attempt += 1;

      const started = performance.now();
      let res: Response;
      let text: string;
      try {
        const timeout = AbortSignal.timeout(this.timeoutMs);
        res = await fetch(url, {
          method: spec.method,
          headers: {
            authorization: `Bearer ${token}`,
            accept: 'application/hal+json, application/json',
            ...(spec.body !== undefined ? { 'content-type': 'application/json' } : {}),
          },
          body: spec.body !== undefined ? JSON.stringify(spec.body) : null,
          signal: spec.signal ? AbortSignal.any([spec.signal, timeout]) : timeout,
        });
        // Kommo has certainly seen the request now: its rate window can start counting from here.
        release();
        // Inside the try: a body cut short by the timeout is a failed request, not an empty list.
        text = await res.text();
      } catch (err) {
        release();
        this.report(spec.path, 0, started);
        if (spec.signal?.aborted) throw spec.signal.reason;
        const detail = err instanceof Error && err.name === 'TimeoutError'
          ? `no answer within ${this.timeoutMs} ms`
          : `request failed: ${err instanceof Error ? err.message : String(err)}`;
        const error = new KommoApiError({ status: 0, detail, path: spec.path });
        if (spec.method === 'POST') throw error; // may have been applied: see below
        await this.backoffOrThrow(error, attempt, undefined, spec.signal);
        continue;
      }
      this.report(spec.path, res.status, started);

      if (res.ok) {
        this.breaker.recordSuccess();
        if (res.status === 204 || text.trim() === '') return null;
        return this.parse(spec, text, res.status);
      }

      const problem = parseProblem(text);
      const detail = problem.detail ?? (res.statusText || `HTTP ${res.status}`);
      if (res.status === 401) {
        if (!reauthorized) {
          reauthorized = true;
          const fresh = await this.auth.unauthorized(token, spec.signal).catch((err: unknown) => {
            throw asApiError(err, spec.path);
          });
          if (fresh) continue;
        }
        throw new KommoApiError({ status: 401, detail: `unauthorized: ${detail} (check the access token or re-authorize the integration)`, path: spec.path });
      }
      if (res.status === 403) {
        if (spec.forbiddenIsPermission) throw new KommoApiError({ status: 403, detail, path: spec.path });
        const cooldown = this.breaker.record403();
        throw new KommoApiError({
          status: 403,
          retryAfterMs: cooldown,
          detail: `Kommo blocked API access (403): ${detail}. Usually too many requests from this account or IP; calls pause for ${Math.round(cooldown / 1000)} s`,
          path: spec.path,
        });
      }
      const retryAfterMs = problem.retryAfterMs ?? parseRetryAfterHeader(res.headers.get('retry-after'));
      if (res.status === 429) {
        const opened = this.breaker.record429();
        const error = new KommoApiError({
          status: 429,
          detail,
          path: spec.path,
          retryAfterMs: Math.max(opened, retryAfterMs ?? 0) || undefined,
        });
        if (opened > 0) throw error;
        await this.backoffOrThrow(error, attempt, retryAfterMs, spec.signal);
        continue;
      }
      const error = new KommoApiError({
        status: res.status,
        detail,
        path: spec.path,
        ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
        ...(problem.validationErrors ? { validationErrors: problem.validationErrors } : {}),
      });
      // A POST (notes, tasks) that failed with 5xx may still have been stored; retrying it here
      // would multiply the duplicate. The worker's retry is the only one (PATCH is idempotent).
      if (res.status >= 500 && spec.method !== 'POST') {
        await this.backoffOrThrow(error, attempt, retryAfterMs, spec.signal);
        continue;
      }
      throw error;
    }
  }

  /** Sleeps before the next attempt, or throws `error` when out of tries or asked to wait too long. */
  private async backoffOrThrow(error: KommoApiError, attempt: number, retryAfterMs: number | undefined, signal?: AbortSignal): Promise<void> {
    if (attempt >= this.maxTries) throw error;
    if (retryAfterMs !== undefined && retryAfterMs > this.maxInlineWaitMs) throw error;
    const exp = this.backoffBaseMs * 2 ** (attempt - 1);
    // "Equal jitter": half fixed, half random, so concurrent callers spread out but still back off.
    const jittered = exp / 2 + Math.random() * (exp / 2);
    await sleep(Math.max(retryAfterMs ?? 0, jittered), signal);
  }

  private parse<T>(spec: RequestSpec<T>, text: string, status: number): T {
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new KommoApiError({ status, detail: 'answer is not JSON', path: spec.path });
    }
    const parsed = spec.schema.safeParse(body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const where = issue ? `${issue.path.join('.')}: ${issue.message}` : 'unknown';
      throw new KommoApiError({ status, detail: `unexpected answer shape (${where})`, path: spec.path });
    }
    return parsed.data;
  }

  private url(path: string, query: Query = []): string {
    const qs = new URLSearchParams(query.map(([k, v]): [string, string] => [k, String(v)])).toString();
    return `${this.baseUrl}${path}${qs ? `?${qs}` : ''}`;
  }

  private report(path: string, status: number, started: number): void {
    if (!this.onRequest) return;
    try {
      this.onRequest({ account: this.account, path: metricPath(path), status, ms: performance.now() - started });
    } catch {
      // a metrics hook must never break a request
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Construction from config
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

export function normalizeEmail(email: string): string {
  return email.trim().toLowerCase();
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

function asApiError(err: unknown, path: string): KommoApiError {
  if (err instanceof KommoApiError) return err;
  if (err instanceof OAuthRefreshError) {
    // A refused refresh is an auth failure for the caller; a token endpoint that is down is not.
    const status = err.status === 400 || err.status === 401 || err.status === 403 ? 401 : err.status;
    return new KommoApiError({ status, detail: err.message, path });
  }
  return new KommoApiError({ status: 0, detail: err instanceof Error ? err.message : String(err), path });
}

interface Problem {
  detail?: string;
  retryAfterMs?: number;
  validationErrors?: KommoValidationErrors;
}

const problemSchema = z.looseObject({
  title: z.string().nullish(),
  detail: z.string().nullish(),
  retry_after: z.union([z.number(), z.string()]).nullish(),
  'validation-errors': z.unknown().optional(),
});

function parseProblem(text: string): Problem {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    // Block pages and proxies answer with HTML: keep a short, single-line excerpt.
    const excerpt = text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 200);
    return excerpt ? { detail: excerpt } : {};
  }
  const p = problemSchema.safeParse(body);
  if (!p.success) return {};
  const out: Problem = {};
  const detail = [p.data.title, p.data.detail].filter((s): s is string => typeof s === 'string' && s !== '').join(': ');
  if (detail) out.detail = detail;
  const ra = Number(p.data.retry_after);
  // Kommo's problem+json `retry_after` is in seconds (its example: 300).
  if (p.data.retry_after != null && Number.isFinite(ra) && ra >= 0) out.retryAfterMs = ra * 1000;
  const ve = validationErrorsSchema.safeParse(p.data['validation-errors']);
  if (ve.success) out.validationErrors = ve.data;
  return out;
}

/** `Retry-After`: delta-seconds or an HTTP date. */
export function parseRetryAfterHeader(value: string | null): number | undefined {
  if (!value) return undefined;
  const secs = Number(value);
  if (Number.isFinite(secs) && secs >= 0) return secs * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

function metricPath(path: string): string {
  return path.replace(/\/\d+(?=\/|$)/g, '/:id');
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
