/**
 * Thin Moosend API v3 calls through destinations/http.ts: URL, the `apikey` query parameter,
 * timeout, nothing else (no retries: the worker owns them). The key travels in the URL, which
 * http.ts logs only redacted; Moosend answers errors with HTTP 200, whose bodies http.ts does not
 * scrub, so envelope messages are scrubbed of the key here.
 */
import { joinUrl, vendorRequest, type HttpMethod, type VendorResult } from '../http.js';
import type { DestinationContext } from '../types.js';
import type { MoosendSettings } from './settings.js';

export type MoosendContext = DestinationContext<MoosendSettings>;

/** The documented paths (MS-APIB), JSON format. */
export const paths = {
  subscribe: (list: string) => `/subscribers/${encodeURIComponent(list)}/subscribe.json`,
  subscribeMany: (list: string) => `/subscribers/${encodeURIComponent(list)}/subscribe_many.json`,
  remove: (list: string) => `/subscribers/${encodeURIComponent(list)}/remove.json`,
  removeMany: (list: string) => `/subscribers/${encodeURIComponent(list)}/remove_many.json`,
  unsubscribeAccount: () => '/subscribers/unsubscribe.json',
  listsPage: (page: number, pageSize: number) => `/lists/${page}/${pageSize}.json`,
  members: (list: string, status: 'Subscribed' | 'Unsubscribed' | 'Bounced' | 'Removed') => `/lists/${encodeURIComponent(list)}/subscribers/${status}.json`,
} as const;

export function moosendUrl(settings: Pick<MoosendSettings, 'baseUrl' | 'apiKey'>, path: string, query: Record<string, string | number> = {}): string {
  const url = new URL(joinUrl(settings.baseUrl, path));
  url.searchParams.set('apikey', settings.apiKey);
  for (const [k, v] of Object.entries(query)) url.searchParams.set(k, String(v));
  return url.toString();
}

export async function moosendRequest(ctx: MoosendContext, method: HttpMethod, path: string, o: { query?: Record<string, string | number>; json?: unknown } = {}): Promise<VendorResult> {
  const res = await vendorRequest({
    method,
    url: moosendUrl(ctx.settings, path, o.query),
    json: o.json,
    timeoutMs: ctx.settings.timeout ?? ctx.timeoutMs,
    log: ctx.log,
  });
  return res.error === undefined ? { ...res, body: scrubKey(res.body, ctx.settings.apiKey) } : res;
}

/** The body with every occurrence of the API key masked (strings anywhere in it). */
export function scrubKey(body: unknown, apiKey: string): unknown {
  // Shorter keys would mask ordinary words; Moosend keys are GUIDs.
  if (apiKey.length < 8) return body;
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') return v.includes(apiKey) ? v.split(apiKey).join('[redacted]') : v;
    if (Array.isArray(v)) return v.map(walk);
    if (typeof v === 'object' && v !== null) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  return walk(body);
}
