/**
 * Thin Iterable API calls through destinations/http.ts: URL, the `Api-Key` header and the timeout,
 * nothing else (no retries: the worker owns them).
 */
import { joinUrl, vendorRequest, type HttpMethod, type VendorResult } from '../http.js';
import type { DestinationContext } from '../types.js';
import type { PlannedRequest } from './ops.js';
import { apiRoot, type IterableSettings } from './settings.js';

export type IterableContext = DestinationContext<IterableSettings>;

/** A harmless address for `check()`: looking it up proves the key without touching real users. */
export const CHECK_EMAIL = 'kommo-sync-check@example.com';

export function iterableRequest(ctx: IterableContext, method: HttpMethod, path: string, json?: unknown): Promise<VendorResult> {
  return vendorRequest({
    method,
    url: joinUrl(apiRoot(ctx.settings), path),
    headers: { 'api-key': ctx.settings.apiKey },
    json,
    timeoutMs: ctx.settings.timeout ?? ctx.timeoutMs,
    log: ctx.log,
  });
}

export function send(ctx: IterableContext, req: PlannedRequest): Promise<VendorResult> {
  return iterableRequest(ctx, req.method, req.path, req.body);
}

/** Cheapest authenticated call (100 requests/s): answers `{}` for an unknown user. */
export function getUserByEmail(ctx: IterableContext, email: string): Promise<VendorResult> {
  return iterableRequest(ctx, 'GET', `/users/getByEmail?email=${encodeURIComponent(email)}`);
}
