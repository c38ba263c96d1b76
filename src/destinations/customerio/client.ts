/**
 * Thin Track API calls through destinations/http.ts: URL, auth and timeout, nothing else (no retries:
 * the worker owns them).
 */
import { joinUrl, vendorRequest, type HttpMethod, type VendorResult } from '../http.js';
import type { DestinationContext } from '../types.js';
import { BATCH_PATH, type BatchRequest } from './ops.js';
import { TRACK_URLS, type CustomerioSettings } from './settings.js';

export type CioContext = DestinationContext<CustomerioSettings>;

/** The Track root: `baseUrl` when set, else the region's host. */
export function trackUrl(settings: Pick<CustomerioSettings, 'region' | 'baseUrl'>): string {
  return settings.baseUrl ?? TRACK_URLS[settings.region];
}

/** HTTP Basic with the site id as user name and the Track API key as password. */
export function authorization(settings: Pick<CustomerioSettings, 'siteId' | 'apiKey'>): string {
  return `Basic ${Buffer.from(`${settings.siteId}:${settings.apiKey}`).toString('base64')}`;
}

export function cioRequest(ctx: CioContext, method: HttpMethod, path: string, json?: unknown): Promise<VendorResult> {
  return vendorRequest({
    method,
    url: joinUrl(trackUrl(ctx.settings), path),
    headers: { authorization: authorization(ctx.settings) },
    json,
    timeoutMs: ctx.settings.timeout ?? ctx.timeoutMs,
    log: ctx.log,
  });
}

export function postBatch(ctx: CioContext, body: BatchRequest['body']): Promise<VendorResult> {
  return cioRequest(ctx, 'POST', BATCH_PATH, body);
}

/** Cheapest authenticated call; answers `{url, region, environment_id}` on either regional host. */
export function getRegion(ctx: CioContext): Promise<VendorResult> {
  return cioRequest(ctx, 'GET', '/api/v1/accounts/region');
}
