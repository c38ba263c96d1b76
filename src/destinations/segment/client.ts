/**
 * Thin Tracking API calls through destinations/http.ts: URL, auth and timeout, nothing else (no
 * retries: the worker owns them).
 */
import { joinUrl, vendorRequest, type VendorResult } from '../http.js';
import type { DestinationContext } from '../types.js';
import { BATCH_PATH, type BatchBody } from './ops.js';
import { segmentRoot, type RudderstackSettings, type SegmentSettings, type TrackingSettings } from './settings.js';

/** Segment: the Tracking API root (with `/v1`) from region or baseUrl, plus `/batch`. */
export function segmentBatchUrl(settings: SegmentSettings): string {
  return joinUrl(segmentRoot(settings), BATCH_PATH);
}

/** RudderStack: the data plane root, plus `/v1/batch`. */
export function rudderstackBatchUrl(settings: RudderstackSettings): string {
  return joinUrl(settings.dataPlaneUrl, `/v1${BATCH_PATH}`);
}

/**
 * HTTP Basic with the write key as user name and an empty password (the colon is kept). Both vendors
 * take it; the key is not repeated in the body, so it never sits in a payload a vendor might echo.
 */
export function authorization(writeKey: string): string {
  return `Basic ${Buffer.from(`${writeKey}:`).toString('base64')}`;
}

export function postBatch(ctx: DestinationContext<TrackingSettings>, url: string, body: BatchBody): Promise<VendorResult> {
  return vendorRequest({
    method: 'POST',
    url,
    headers: { authorization: authorization(ctx.settings.writeKey) },
    json: body,
    timeoutMs: ctx.settings.timeout ?? ctx.timeoutMs,
    log: ctx.log,
  });
}
