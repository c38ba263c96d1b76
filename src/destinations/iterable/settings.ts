/**
 * The Iterable config block (vendor keys only: the loader validates the common keys — type,
 * attributes, events, workflows, lists, leaveLists, identifyBy, webhookSecret, … — and strips them
 * before this schema runs).
 */
import { z } from 'zod';
import { duration, secret } from '../../model/index.js';

/** API roots as Iterable documents them; the client appends `/users/bulkUpdate`, `/events/trackBulk`, … */
export const API_ROOTS = {
  us: 'https://api.iterable.com/api',
  eu: 'https://api.eu.iterable.com/api',
} as const;

/** A list id: Iterable's ids are integers; YAML may give a number or a quoted number. */
const listId = z.union([z.number().int().positive(), z.string().regex(/^\d+$/, 'expected a numeric Iterable list id').transform(Number)]);

export const iterableSettings = z.object({
  /** A server-side (standard) API key of the project: sent as the `Api-Key` header. */
  apiKey: secret(),
  /** Iterable data center of the project. Left unset it is `us`, and doctor says so. */
  region: z.enum(['us', 'eu']).optional(),
  /** Overrides `region`: the API root (`https://api.iterable.com/api`); may carry a path prefix. */
  baseUrl: z.url({ protocol: /^https?$/ }).optional(),
  /**
   * The token set on the Iterable system webhook (Authorization). When set, a webhook whose
   * Authorization header does not carry it is refused (401); without it only the URL secret guards.
   */
  webhookAuthToken: secret().optional(),
  /**
   * A list whose message channel is your marketing email channel. `suppress` (an opt-out another
   * tool reported) unsubscribes the person from that list with `channelUnsubscribe: true`, which
   * unsubscribes them from the whole channel. Without it, suppress ops fail with this explanation.
   */
  suppressListId: listId.optional(),
  /**
   * Custom event names (journey milestones such as "completed onboarding") that Iterable's system
   * webhooks forward to us: each becomes a `journey.milestone` engagement (a note on the lead when
   * `engagement.notes` lists it). Matched case-insensitively. Other custom events are ignored.
   */
  milestones: z.array(z.string().trim().min(1)).default([]),
  /** A Kommo lead field holding the plan: sent as `plan` on the user and on `deal_won`. */
  planField: z.string().trim().min(1).optional(),
  /**
   * What `erasePerson` (the `erase` command) does: `delete` (DELETE /users/{email}: removes the
   * profile; a later sync may create it again) or `forget` (POST /users/forget: GDPR forget, which
   * also blocks future data; 3 per second and 1000 per day per project).
   */
  erase: z.enum(['delete', 'forget']).default('delete'),
  /** Per-request timeout, overriding the service default of 15 s (`10s`, `2500ms`, …). */
  timeout: duration.optional(),
}).strict();

export type IterableSettings = z.infer<typeof iterableSettings>;

/** The API root: `baseUrl` when set, else the region's host (US when unset). */
export function apiRoot(settings: Pick<IterableSettings, 'region' | 'baseUrl'>): string {
  return settings.baseUrl ?? API_ROOTS[settings.region ?? 'us'];
}
