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
  /** Where the workspace's data lives; EU traffic sent to the US host works but crosses US servers. */
  region: z.enum(['us', 'eu']).default('us'),
  /** Overrides `region`: the Track root (`https://track.customer.io`), may carry a path prefix. */
  baseUrl: z.url({ protocol: /^https?$/ }).optional(),
  /** Reporting-webhook signing key; without it only the secret URL path protects inbound webhooks. */
  webhookSigningKey: secret().optional(),
  /** Per-request timeout, overriding the service default (`10s`, `2500ms`, …). */
  timeout: duration.optional(),
}).strict();

export type CustomerioSettings = z.infer<typeof customerioSettings>;
