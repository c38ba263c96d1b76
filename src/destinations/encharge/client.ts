/**
 * Thin Encharge calls through destinations/http.ts: URL, key and timeout, nothing else (no
 * retries: the worker owns them). The REST API takes `apiKey`, the Ingest API `writeKey`, both in
 * the `X-Encharge-Token` header (redacted in logs by http.ts's `x-…-token` rule).
 */
import { joinUrl, vendorRequest, type HttpMethod, type VendorResult } from '../http.js';
import type { DestinationContext } from '../types.js';
import type { Api, EnchargeCall } from './ops.js';
import type { EnchargeSettings } from './settings.js';

export type EnchargeContext = DestinationContext<EnchargeSettings>;

export const TOKEN_HEADER = 'x-encharge-token';

export interface RawCall {
  api: Api;
  method: HttpMethod;
  path: string;
  query?: ReadonlyArray<readonly [string, string]>;
  json?: unknown;
}

/** The full URL of a call: the API's root, the path, and the query (brackets percent-encoded). */
export function urlOf(settings: Pick<EnchargeSettings, 'baseUrl' | 'ingestUrl'>, call: Pick<RawCall, 'api' | 'path' | 'query'>): string {
  const root = call.api === 'ingest' ? settings.ingestUrl : settings.baseUrl;
  const url = joinUrl(root, call.path);
  if (!call.query?.length) return url;
  return `${url}?${new URLSearchParams(call.query.map(([k, v]) => [k, v])).toString()}`;
}

export function send(ctx: EnchargeContext, call: RawCall | EnchargeCall): Promise<VendorResult> {
  return vendorRequest({
    method: call.method,
    url: urlOf(ctx.settings, call),
    headers: { [TOKEN_HEADER]: call.api === 'ingest' ? ctx.settings.writeKey : ctx.settings.apiKey },
    ...(call.json === undefined ? {} : { json: call.json }),
    timeoutMs: ctx.settings.timeout ?? ctx.timeoutMs,
    log: ctx.log,
  });
}

/** Cheapest authenticated REST read: the account's person fields. */
export function getFields(ctx: EnchargeContext): Promise<VendorResult> {
  return send(ctx, { api: 'rest', method: 'GET', path: '/fields' });
}
