/**
 * The one HTTP helper every destination uses: fetch with a timeout, a parsed body, a default
 * classification into ItemResult, and redaction. Destinations never retry or sleep here (the worker
 * owns that); a network failure or timeout comes back as a result the caller classifies as retry.
 *
 * Credentials never reach a log line or an error message: headers and URLs are redacted before they
 * are logged, and every credential found in the request (auth headers, their decoded Basic parts,
 * secret-looking query parameters) is scrubbed from error texts and from error response bodies, in
 * case a vendor echoes the key back.
 */
import type { Logger } from 'pino';
import type { ItemResult } from './types.js';
import { isRecord } from '../model/json.js';

type HeaderValue = string | string[] | undefined;

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface VendorRequest {
  method: HttpMethod;
  url: string;
  headers?: Record<string, string>;
  /** Serialized as JSON with `Content-Type: application/json`. Give `json` or `body`, not both. */
  json?: unknown;
  /** Sent as is (form bodies, pre-serialized payloads). */
  body?: string | URLSearchParams;
  timeoutMs: number;
  log: Logger;
}

/** A vendor answer: `body` is parsed JSON when it parses, else the text; undefined when empty. */
export interface VendorResponse {
  status: number;
  /** Lower-cased names. */
  headers: Record<string, string>;
  body: unknown;
  ms: number;
  error?: undefined;
}

/** No HTTP answer at all (timeout, DNS, refused, reset): always worth a retry. */
export interface VendorNetworkError {
  status: 0;
  headers: Record<string, string>;
  body: undefined;
  ms: number;
  /** What went wrong, already scrubbed of credentials. */
  error: string;
}

export type VendorResult = VendorResponse | VendorNetworkError;

/** What classification reads of a result: a VendorResult, or a literal in table tests. */
export interface AnyVendorAnswer {
  status: number;
  headers: Record<string, string>;
  body: unknown;
  error?: string | undefined;
}

const USER_AGENT = 'kommo-sync';
const REDACTED = '[redacted]';
/** Vendor messages end up in the delivery log and dead-letter list: keep them readable. */
const MAX_MESSAGE_CHARS = 300;
/** Shorter values are not scrubbed from texts: masking every "1" or "us" would garble messages. */
const MIN_SCRUB_CHARS = 4;

const SENSITIVE_HEADER_RE = /^(authorization|proxy-authorization|api-key|x-api-key|cookie|set-cookie|x-.+-(token|key|secret))$/i;
const SENSITIVE_QUERY_RE = /key|token|secret|password|passwd|signature|auth/i;

export async function vendorRequest(req: VendorRequest): Promise<VendorResult> {
  const headers = new Headers({ 'user-agent': USER_AGENT, accept: 'application/json' });
  for (const [name, value] of Object.entries(req.headers ?? {})) headers.set(name, value);
  let body: string | URLSearchParams | undefined = req.body;
  if (req.json !== undefined) {
    body = JSON.stringify(req.json);
    if (!headers.has('content-type')) headers.set('content-type', 'application/json');
  }
  const scrub = scrubberFor(req.url, headers);
  const logged = { method: req.method, url: redactUrl(req.url), headers: redactHeaders(Object.fromEntries(headers)) };
  const started = performance.now();
  try {
    // Redirects are not followed: fetch drops the Authorization header on a cross-origin one, so a
    // vendor moving us to another region's host would see an unauthenticated request. The 3xx is
    // reported instead, naming where it points (set the region or baseUrl to that host).
    const res = await fetch(req.url, { method: req.method, headers, body, signal: AbortSignal.timeout(req.timeoutMs), redirect: 'manual' });
    let text = await res.text();
    if (!res.ok) text = scrub(text);
    const ms = Math.round(performance.now() - started);
    req.log.debug({ ...logged, status: res.status, ms }, 'vendor request');
    return { status: res.status, headers: lowerCaseHeaders(res.headers), body: parseBody(text), ms };
  } catch (err) {
    const ms = Math.round(performance.now() - started);
    const error = scrub(describeFetchError(err, req.timeoutMs));
    req.log.warn({ ...logged, ms, error }, 'vendor request failed');
    return { status: 0, headers: {}, body: undefined, ms, error };
  }
}

/** Network failures are retried; HTTP answers go through `classifyHttp`. */
export function classifyResult(res: AnyVendorAnswer): ItemResult {
  if (res.error !== undefined) return { retry: { reason: res.error } };
  return classifyHttp(res.status, res.headers, res.body);
}

/**
 * The default reading of an HTTP answer; destinations override it only where the vendor differs
 * (207 partials, errors inside a 200 body).
 */
export function classifyHttp(status: number, headers: Record<string, string>, body: unknown): ItemResult {
  if (status >= 200 && status < 300) return { ok: true, httpStatus: status };
  const message = vendorMessage(body);
  const reason = `HTTP ${status}${message ? `: ${message}` : ''}`;
  if (status === 408 || status === 429 || status >= 500) {
    const afterMs = parseRetryAfter(headerValue(headers, 'retry-after'));
    return { retry: afterMs === undefined ? { reason } : { reason, afterMs }, httpStatus: status };
  }
  if (status === 401 || status === 403) return { fail: { reason, code: 'auth' }, httpStatus: status };
  if (status === 404) return { fail: { reason, code: 'not_found' }, httpStatus: status };
  if (status >= 400) return { fail: { reason, code: 'invalid' }, httpStatus: status };
  // Redirects are not followed (see vendorRequest): a 3xx means the base URL or region is wrong.
  const location = headerValue(headers, 'location');
  if (status >= 300 && status < 400 && location) {
    return { fail: { reason: `HTTP ${status}: the API redirects to ${redactUrl(location)}; set the destination's region or baseUrl to that host (redirects are not followed: they would drop the credentials)`, code: 'rejected' }, httpStatus: status };
  }
  return { fail: { reason: `unexpected ${reason}`, code: 'rejected' }, httpStatus: status };
}

/** `Retry-After` as delay-seconds or an HTTP date, in ms from `now`; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | undefined, now: number = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^\d+(\.\d+)?$/.test(v)) return Math.round(Number(v) * 1000);
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/**
 * The human part of a vendor error body, whatever shape the vendor uses: `{meta:{error}}`,
 * `{meta:{errors:[]}}`, `{errors:[{message}]}`, `{message}`, `{msg}`, `{error}`, `{Error}` or text.
 */
export function vendorMessage(body: unknown): string | undefined {
  const found = messageOf(body);
  if (!found) return undefined;
  const oneLine = found.replace(/\s+/g, ' ').trim();
  return oneLine.length > MAX_MESSAGE_CHARS ? `${oneLine.slice(0, MAX_MESSAGE_CHARS)}…` : oneLine || undefined;
}

function messageOf(body: unknown): string | undefined {
  if (typeof body === 'string') return body;
  if (Array.isArray(body)) {
    const parts = body.map(messageOf).filter((m): m is string => Boolean(m));
    return parts.length ? parts.join('; ') : undefined;
  }
  if (!isRecord(body)) return undefined;
  for (const key of ['meta', 'errors', 'error', 'Error', 'message', 'msg', 'detail', 'description']) {
    const m = key in body ? messageOf(body[key]) : undefined;
    if (m) return m;
  }
  return undefined;
}

/** `http://127.0.0.1:4010/cio` + `/api/v1/x` -> `http://127.0.0.1:4010/cio/api/v1/x` (a base path is kept). */
export function joinUrl(base: string, path: string): string {
  return `${base.replace(/\/+$/, '')}/${path.replace(/^\/+/, '')}`;
}

/** Copy of `headers` safe to log: credential headers keep only their scheme (`Basic [redacted]`). */
export function redactHeaders(headers: Record<string, HeaderValue>): Record<string, HeaderValue> {
  const out: Record<string, HeaderValue> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (!SENSITIVE_HEADER_RE.test(name) || value === undefined) {
      out[name] = value;
      continue;
    }
    const first: string = Array.isArray(value) ? (value[0] ?? '') : value;
    const scheme = /^(Basic|Bearer|Token)\s/i.exec(first)?.[1];
    out[name] = scheme ? `${scheme} ${REDACTED}` : REDACTED;
  }
  return out;
}

/** URL safe to log: user info and secret-looking query values (`apikey=`, `token=`, …) masked. */
export function redactUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return REDACTED;
  }
  if (u.username) u.username = 'redacted';
  if (u.password) u.password = 'redacted';
  for (const name of [...u.searchParams.keys()]) {
    if (SENSITIVE_QUERY_RE.test(name)) u.searchParams.set(name, 'redacted');
  }
  return u.toString();
}

/** Every credential the request carries, as a function that masks them in any text. */
function scrubberFor(url: string, headers: Headers): (text: string) => string {
  const secrets = new Set<string>();
  headers.forEach((value, name) => {
    if (!SENSITIVE_HEADER_RE.test(name)) return;
    secrets.add(value);
    const [scheme, token] = value.split(/\s+/, 2);
    if (!token) return;
    secrets.add(token);
    if (scheme?.toLowerCase() === 'basic') {
      // The decoded `user:password` pair and each half are credentials too (site id, API key).
      const decoded = Buffer.from(token, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      secrets.add(decoded);
      if (colon >= 0) secrets.add(decoded.slice(0, colon)).add(decoded.slice(colon + 1));
    }
  });
  try {
    const u = new URL(url);
    secrets.add(decodeURIComponent(u.username));
    secrets.add(decodeURIComponent(u.password));
    u.searchParams.forEach((value, name) => {
      if (SENSITIVE_QUERY_RE.test(name)) secrets.add(value);
    });
  } catch {
    // An unparsable URL fails in fetch; its text is never logged (redactUrl masks it whole).
  }
  // Longest first, so a whole `user:password` is masked before its halves.
  const list = [...secrets].filter((s) => s.length >= MIN_SCRUB_CHARS).sort((a, b) => b.length - a.length);
  return (text) => list.reduce((t, s) => t.split(s).join(REDACTED), text);
}

function describeFetchError(err: unknown, timeoutMs: number): string {
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) {
    return `timed out after ${timeoutMs} ms`;
  }
  // undici says only "fetch failed"; the cause has the useful part (ECONNREFUSED, ENOTFOUND, …).
  const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : '';
  return `network error: ${err instanceof Error ? err.message : String(err)}${cause}`;
}

function parseBody(text: string): unknown {
  if (text === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    // Not every vendor labels JSON correctly, and some answer in text (RudderStack's `OK`).
    return text;
  }
}

function lowerCaseHeaders(headers: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  headers.forEach((value, name) => {
    out[name.toLowerCase()] = value;
  });
  return out;
}

function headerValue(headers: Record<string, string>, name: string): string | undefined {
  if (name in headers) return headers[name];
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name);
  return key === undefined ? undefined : headers[key];
}
