/**
 * The request loop for one Kommo account (vendor-apis/kommo.md section 2), written once:
 * - every request (retries and 401 re-tries included) takes a slot from the account limiter;
 * - 429, and 5xx or no answer except for non-idempotent POSTs, are retried a few times with
 *   exponential backoff + jitter, honouring `retry_after` (problem+json body) or `Retry-After`; a
 *   wait longer than `maxInlineWaitMs` is not slept here but handed to the caller as
 *   `KommoApiError.retryAfterMs` (the queue can wait without holding a lease);
 * - a circuit breaker per account stops calling after repeated 429s, because Kommo escalates them
 *   to a 403 block of the whole account/IP; a 403 opens it for longer;
 * - 204 No Content is an empty result; HAL pages are followed through `_links.next.href`;
 * - answers are parsed by the caller's zod schema (kommo/schemas.ts).
 */
import { parseRetryAfter } from '../destinations/http.js';
import { OAuthRefreshError, type TokenProvider } from './auth.js';
import { getAccountBreaker, getAccountLimiter, sleep, type CircuitBreaker, type RateLimiter } from './rate-limit.js';
import { pageSchema, validationErrorsSchema, type KommoValidationErrors } from './schemas.js';
import { z } from 'zod';

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

export interface RequestInfo {
  account: string;
  /** Path template without query, ids replaced by `:id` (a low-cardinality metrics label). */
  path: string;
  /** HTTP status, 0 when there was no answer. */
  status: number;
  ms: number;
}

export interface KommoTransportOptions {
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

export type Query = Array<[string, string | number]>;

export interface RequestSpec<T> {
  method: 'GET' | 'POST' | 'PATCH';
  path: string;
  query?: Query;
  /** Absolute URL (a HAL next link); wins over path + query. */
  url?: string;
  body?: unknown;
  schema: z.ZodType<T>;
  /** A 403 here means "not allowed for this user" (e.g. /users for non-admins), not an API block. */
  forbiddenIsPermission?: boolean;
  /** A deliberate check whether Kommo answers again: sent even while the breaker is open. */
  probe?: boolean;
  signal?: AbortSignal;
}

export class KommoTransport {
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

  constructor(opts: KommoTransportOptions) {
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


  /** Follows HAL `_links.next.href` until the last page; a 204 is an empty list. */
  async *pages<T>(path: string, query: Query, key: string, item: z.ZodType<T>, signal?: AbortSignal, forbiddenIsPermission = false): AsyncGenerator<T[]> {
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

  async request<T>(spec: RequestSpec<T>): Promise<T | null> {
    const url = spec.url ?? this.url(spec.path, spec.query);
    let attempt = 0;
    let reauthorized = false;
    for (;;) {
      const open = spec.probe ? { state: 'closed' as const } : this.breaker.check();
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
      const retryAfterMs = problem.retryAfterMs ?? parseRetryAfter(res.headers.get('retry-after') ?? undefined);
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
      // A 504 to a write means "too big": the caller splits the batch instead of resending it.
      if (res.status >= 500 && spec.method !== 'POST' && !(res.status === 504 && spec.method === 'PATCH')) {
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

export function asApiError(err: unknown, path: string): KommoApiError {
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

function metricPath(path: string): string {
  return path.replace(/\/\d+(?=\/|$)/g, '/:id');
}
