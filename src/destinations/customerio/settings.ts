/**
 * The Customer.io config block (vendor keys only: the loader validates the common keys — type,
 * attributes, events, identifyBy, webhookSecret, … — and strips them before this schema runs).
 */
import { z } from 'zod';
import { duration, secret } from '../../model/index.js';

/** Track API roots as Customer.io documents them; the client appends `/api/v1/...` and `/api/v2/...`. */
export const TRACK_URLS = {
  us: 'https://track.customer.io',
  eu: 'https://track-eu.customer.io',
} as const;

export const customerioSettings = z.object({
  /** Track API site id (the Basic-auth user name). */
  siteId: secret(),
  /** Track API key (the Basic-auth password), not an App API key. */
  apiKey: secret(),
  /**
   * Where the workspace's data lives. Customer.io redirects traffic sent to the other region's host;
   * kommo-sync does not follow redirects (they would drop the credentials), so this must match.
   */
  region: z.enum(['us', 'eu']).default('us'),
  /** Overrides `region`: the Track root (`https://track.customer.io`), may carry a path prefix. */
  baseUrl: z.url({ protocol: /^https?$/ }).optional(),
  /** Reporting-webhook signing key; without it only the secret URL path protects inbound webhooks. */
  webhookSigningKey: secret().optional(),
  /** Per-request timeout, overriding the service default of 15 s (`10s`, `2500ms`, …). */
  timeout: duration.optional(),
}).strict();

export type CustomerioSettings = z.infer<typeof customerioSettings>;

/**
 * What is wrong when the account's own region (from `/api/v1/accounts/region`) is not the one
 * configured, or null. With `baseUrl` set the user chose the host (a proxy, a simulator): no check.
 */
export function regionMismatch(settings: Pick<CustomerioSettings, 'region' | 'baseUrl'>, accountRegion: string | undefined): string | null {
  if (settings.baseUrl || !accountRegion) return null;
  const region = accountRegion.toLowerCase();
  if (region === settings.region) return null;
  return `the Customer.io account is in the "${region}" region but region is "${settings.region}": set region: ${region} ` +
    '(Customer.io would redirect every request, and kommo-sync does not follow redirects, which would drop the credentials)';
}
