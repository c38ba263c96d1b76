/**
 * The config blocks of `type: segment` and `type: rudderstack` (vendor keys only: the loader
 * validates the common keys — attributes, events, identifyBy, … — and strips them first).
 */
import { z } from 'zod';
import { duration, secret } from '../../model/index.js';

/**
 * Tracking API roots as Segment documents them; the client appends `/batch`. An EU workspace's events
 * sent to the US root are answered 200 and never appear, so the region is worth stating.
 */
export const SEGMENT_HOSTS = {
  us: 'https://api.segment.io/v1',
  eu: 'https://events.eu1.segmentapis.com/v1',
} as const;

/** Keys both variants share. */
const shared = {
  /** The source's write key: the Basic-auth user name (the password stays empty). */
  writeKey: secret(),
  /** Send `group` calls (the person's company, with its traits); off: they are answered ok unsent. */
  group: z.boolean().default(true),
  /** Per-request timeout, overriding the service default of 15 s (`10s`, `2500ms`, …). */
  timeout: duration.optional(),
};

export const segmentSettings = z.object({
  ...shared,
  /** Where the workspace lives. Optional on purpose: `doctor` warns when it is left unset. */
  region: z.enum(['us', 'eu']).optional(),
  /** Overrides `region`: the Tracking API root (`https://api.segment.io/v1`), may carry a path prefix. */
  baseUrl: z.url({ protocol: /^https?$/ }).optional(),
}).strict();

export const rudderstackSettings = z.object({
  ...shared,
  /** The workspace's data plane root (no global host exists); the client appends `/v1/batch`. */
  dataPlaneUrl: z.url({ protocol: /^https?$/ }),
}).strict();

export type SegmentSettings = z.infer<typeof segmentSettings>;
export type RudderstackSettings = z.infer<typeof rudderstackSettings>;
/** What the shared connector code reads of either block. */
export type TrackingSettings = SegmentSettings | RudderstackSettings;

/** The Segment Tracking API root: `baseUrl` when set, else the region's (US when unset). */
export function segmentRoot(settings: Pick<SegmentSettings, 'region' | 'baseUrl'>): string {
  return settings.baseUrl ?? SEGMENT_HOSTS[settings.region ?? 'us'];
}

/** Segment's answers when a config works but probably loses data. */
export function segmentWarnings(settings: SegmentSettings): string[] {
  if (settings.baseUrl) {
    return settings.region ? [`baseUrl overrides region "${settings.region}": events go to ${settings.baseUrl}`] : [];
  }
  if (settings.region) return [];
  return [
    'region is not set, so events go to the US host (api.segment.io). If the workspace lives in the EU, ' +
    'Segment answers 200 there and the events never appear: set region: eu (or region: us to silence this).',
  ];
}

/** RudderStack: a data plane URL that will 404, or that sends the write key in clear text. */
export function rudderstackWarnings(settings: RudderstackSettings): string[] {
  const out: string[] = [];
  const url = new URL(settings.dataPlaneUrl);
  if (/\/v1(\/(batch|identify|track|group))?\/?$/.test(url.pathname)) {
    out.push(`dataPlaneUrl ends with ${url.pathname}: give the data plane root; kommo-sync appends /v1/batch itself`);
  }
  if (url.protocol === 'http:' && !['localhost', '127.0.0.1', '[::1]'].includes(url.hostname)) {
    out.push('dataPlaneUrl uses http://: the write key travels in clear text; use https://');
  }
  return out;
}
