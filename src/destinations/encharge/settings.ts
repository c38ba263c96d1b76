/**
 * The Encharge config block (vendor keys only: the loader validates the common keys — type,
 * attributes, events, signals, identifyBy, webhookSecret, … — and strips them before this runs).
 */
import { z } from 'zod';
import { duration, secret } from '../../model/index.js';

/** Roots as Encharge documents them; the client appends `/people`, `/tags`, … and `/` (Ingest). */
export const REST_URL = 'https://api.encharge.io/v1';
export const INGEST_URL = 'https://ingest.encharge.io/v1';

/** What `doctor --fix` subscribes when `webhookEvents` is not set. */
export const DEFAULT_WEBHOOK_EVENTS = ['unsubscribedUser'] as const;

const httpUrl = z.url({ protocol: /^https?$/ });

/**
 * An Encharge event type as `POST /event-subscriptions` takes it: `unsubscribedUser`,
 * `added-tag-<tag>`, `removed-tag-<tag>`, … (no spaces: it travels in our URL's query too).
 */
const eventType = z.string().trim().min(1).regex(/^\S+$/, 'expected an Encharge event type such as "unsubscribedUser" or "added-tag-clicked-pricing"');

export const enchargeSettings = z.object({
  /** REST API key (people, tags, fields, event subscriptions), sent as `X-Encharge-Token`. */
  apiKey: secret(),
  /** Ingest API write key (events): a different key from `apiKey`. */
  writeKey: secret(),
  /** REST root, may carry a path prefix (simulators). */
  baseUrl: httpUrl.default(REST_URL),
  /** Ingest root; events are POSTed to `<ingestUrl>/`. */
  ingestUrl: httpUrl.default(INGEST_URL),
  /**
   * Encharge event types `doctor --fix` subscribes our webhook URL to, besides `added-tag-<tag>` for
   * each tag of the common `signals.tags` (subscribed without being listed here).
   */
  webhookEvents: z.array(eventType).min(1).default([...DEFAULT_WEBHOOK_EVENTS]),
  /** Per-request timeout, overriding the service default of 15 s (`10s`, `2500ms`, …). */
  timeout: duration.optional(),
}).strict();

export type EnchargeSettings = z.infer<typeof enchargeSettings>;
