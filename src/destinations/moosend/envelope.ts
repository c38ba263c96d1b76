/**
 * Reading Moosend's answers. Every call answers `{Code, Error, Context}` and the official client
 * treats `Code != 0` as an error even under HTTP 200, so the verdict comes from the envelope first
 * and from the HTTP status only where there is no envelope. Pure, so it is tested as a table.
 */
import { classifyHttp, parseRetryAfter, vendorMessage, type AnyVendorAnswer } from '../http.js';
import type { ItemResult } from '../types.js';

/** Moosend's per-key windows are 10 s long (KB "API rate limiting"); no Retry-After is documented. */
export const RATE_WINDOW_MS = 10_000;

/** `Code` values from the official .NET wrapper (ApiCodes.cs), for readable reasons. */
export const CODE_NAMES: Readonly<Record<number, string>> = {
  0: 'SUCCESS',
  104: 'API_KEY_NOT_VALID',
  200: 'LIST_NOT_FOUND',
  202: 'SEGMENT_NOT_FOUND',
  203: 'SEGMENT_CRITERIA_NOT_FOUND',
  205: 'INVALID_FIELD_COMPARER_COMBINATION',
  206: 'DATE_RANGE_NOT_SUPPORTED',
  300: 'MEMBER_NOT_FOUND',
  400: 'CAMPAIGN_NOT_FOUND',
  401: 'CAMPAIGN_STATISTICS_NOT_FOUND',
  402: 'SENDER_NOT_FOUND',
  403: 'CANNOT_UPDATE_NON_DRAFT_CAMPAIGN',
  405: 'CAMPAIGN_IS_ARCHIVED',
  408: 'AB_TEST_CAMPAIGN_NOT_FOUND',
  410: 'CANNOT_MODIFY_SCHEDULE_SETTINGS',
  429: 'RATE-LIMITING',
  501: 'VALIDATION_ERROR',
  [-2]: 'VALIDATION_ERROR',
};

export const API_KEY_NOT_VALID = 104;
export const LIST_NOT_FOUND = 200;
export const MEMBER_NOT_FOUND = 300;
const NOT_FOUND_CODES = new Set([LIST_NOT_FOUND, 202, 203, MEMBER_NOT_FOUND, 400, 401, 402, 408]);
const INVALID_CODES = new Set([-2, 501, 205, 206, 403, 405, 410]);

export interface Envelope {
  code: number;
  error: string | null;
  context: unknown;
}

/** The envelope in a body, tolerant of a numeric string `Code` and of lower-case keys. */
export function readEnvelope(body: unknown): Envelope | undefined {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined;
  const rec = body as Record<string, unknown>;
  const rawCode = rec.Code ?? rec.code;
  const code = typeof rawCode === 'number' ? rawCode : typeof rawCode === 'string' && /^-?\d+$/.test(rawCode.trim()) ? Number(rawCode) : undefined;
  if (code === undefined) return undefined;
  const rawError = rec.Error ?? rec.error;
  return { code, error: typeof rawError === 'string' ? rawError : null, context: rec.Context ?? rec.context };
}

/**
 * Throttling, in either spelling: the KB writes `RATE-LIMITING`, help.moosend.com `RATE_LIMITING`
 * (UNCONFIRMED which the API sends), both with Code 429.
 */
export function isRateLimited(e: Envelope): boolean {
  return e.code === 429 || (e.error !== null && /rate[\s_-]?limit/i.test(e.error));
}

export interface ClassifyOptions {
  /**
   * The call removes or unsubscribes: MEMBER_NOT_FOUND means the person is already where we want
   * them (not a member), so it is success (UNCONFIRMED whether Moosend answers it there at all).
   */
  absentIsOk?: boolean;
}

/** One verdict for a whole answer; per-item nuances (ignored emails in a bulk call) are the caller's. */
export function classifyAnswer(res: AnyVendorAnswer, o: ClassifyOptions = {}): ItemResult {
  if (res.error !== undefined) return { retry: { reason: res.error } };
  const status = res.status;
  const env = readEnvelope(res.body);
  if (!env) {
    // A 2xx without an envelope is a proxy page or a wrong base URL answering, not Moosend.
    if (status >= 200 && status < 300) return { retry: { reason: `HTTP ${status} without a Moosend envelope ({Code, Error, Context})` }, httpStatus: status };
    return classifyHttp(status, res.headers, res.body);
  }
  if (env.code === 0) {
    if (status >= 200 && status < 300) return { ok: true, httpStatus: status };
    return classifyHttp(status, res.headers, res.body);
  }
  const reason = describe(env, status);
  if (isRateLimited(env)) {
    const header = parseRetryAfter(res.headers['retry-after']);
    // throttled: the window is the API key's, so the worker holds every delivery to Moosend.
    return { retry: { reason, afterMs: header ?? RATE_WINDOW_MS, throttled: true }, httpStatus: status };
  }
  if (env.code === API_KEY_NOT_VALID || status === 401 || status === 403) return { fail: { reason, code: 'auth' }, httpStatus: status };
  if (env.code === MEMBER_NOT_FOUND && o.absentIsOk) return { ok: true, httpStatus: status };
  if (status === 408 || status >= 500) return classifyHttp(status, res.headers, res.body);
  if (NOT_FOUND_CODES.has(env.code)) return { fail: { reason, code: 'not_found' }, httpStatus: status };
  if (INVALID_CODES.has(env.code)) return { fail: { reason, code: 'invalid' }, httpStatus: status };
  // An unknown code (the fixtures show -30 "Unknown Error") is more likely a passing fault than a
  // verdict on the item: retried, and dead-lettered at the job's max age, visible and replayable.
  return { retry: { reason }, httpStatus: status };
}

/** "Moosend Code 300 MEMBER_NOT_FOUND: …" plus validation messages from `Context.Messages`. */
export function describe(env: Envelope, status: number): string {
  const name = CODE_NAMES[env.code];
  const messages = validationMessages(env.context);
  const text = [env.error, ...messages].filter((m): m is string => Boolean(m) && m !== name).join('; ');
  const head = `Moosend Code ${env.code}${name ? ` ${name}` : ''}${status !== 200 ? ` (HTTP ${status})` : ''}`;
  const tail = text ? vendorMessage(text) : undefined;
  return tail ? `${head}: ${tail}` : head;
}

function validationMessages(context: unknown): string[] {
  if (typeof context !== 'object' || context === null) return [];
  const list = (context as Record<string, unknown>).Messages;
  if (!Array.isArray(list)) return [];
  return list.flatMap((m) => {
    if (typeof m === 'string') return [m];
    const text = typeof m === 'object' && m !== null ? (m as Record<string, unknown>).Message : undefined;
    return typeof text === 'string' ? [text] : [];
  });
}

/**
 * The addresses a bulk subscribe skipped: `Code` stays 0 and `Error` says e.g. "2 items with
 * invalid email address were ignored: email@email, email2@email". Lower-cased.
 */
export function ignoredEmails(error: string | null): Set<string> {
  if (!error) return new Set();
  const colon = error.indexOf(':');
  if (colon < 0) return new Set();
  return new Set(error.slice(colon + 1).split(/[,;\s]+/).map((e) => e.trim().toLowerCase()).filter(Boolean));
}

/**
 * .NET JSON dates (`/Date(1465379934028)/`, `/Date(1461777152597+0100)/`; the number is UTC ms and
 * the offset only says where it was written), ISO strings, or unix ms/seconds. undefined otherwise.
 */
export function parseMoosendDate(value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isFinite(value)) return value < 1e11 ? value * 1000 : value;
  if (typeof value !== 'string') return undefined;
  const v = value.trim();
  const net = /^\/?Date\((-?\d+)(?:[+-]\d{4})?\)\/?$/.exec(v);
  if (net) return Number(net[1]);
  if (/^\d+$/.test(v)) return parseMoosendDate(Number(v));
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : at;
}

/** The words of a result, for errors thrown by check() and the sweep. */
export function reasonOf(r: ItemResult): string {
  if ('retry' in r) return r.retry.reason;
  if ('fail' in r) return r.fail.reason;
  return 'ok';
}
