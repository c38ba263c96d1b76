/**
 * The contract every marketing-tool destination implements (one folder each, one registry line in
 * index.ts). Destinations translate SyncOps into vendor requests and classify each result; they never
 * sleep or retry: the worker owns backoff, Retry-After, dead letters and replay.
 *
 * What a destination declares is read by the core, so nothing outside its folder names it:
 * - `settings` marks its secrets with `secret()` (model/settings.ts): log redaction, config errors,
 *   `status`, the admin API and the conformance suite find them there;
 * - `inbound.auth` says how its webhooks are verified (which header, which setting);
 * - `defaults` gives its naming conventions (attribute, event and property names);
 * - `simulator` is a fake of the vendor with the same neutral view for every vendor (the test kit).
 */
import type { FastifyPluginAsync } from 'fastify';
import type { Logger } from 'pino';
import type { z } from 'zod';
import type { CrmEventKind, EngagementEvent, ItemResult, SyncOp, SyncOpKind } from '../model/index.js';

export type { Attributes, AttrValue, FailCode, ItemResult, PersonRef, SyncOp, SyncOpKind } from '../model/index.js';

/** How people are keyed at the vendor (the common `identifyBy` key). */
export type IdentifyBy = 'email' | 'id';

export interface DestinationContext<S> {
  /** The destination's configured name (`cio`), its settings (validated), and a child logger. */
  name: string;
  settings: S;
  /** `email` (default) or `id` (`kommo-contact-<id>`): the common `identifyBy` key. */
  identifyBy: IdentifyBy;
  log: Logger;
  /** Per-request timeout for vendor calls. */
  timeoutMs: number;
  /**
   * The common `lists` key as configured (stage name, "Pipeline / Stage" or stage key -> list id).
   * Vendors that keep people per list need every mapped list where no op names one: a suppress,
   * a sweep of the lists' unsubscribes, doctor's check that each list exists. Absent in contexts
   * built without a config (tests, the conformance suite).
   */
  lists?: Readonly<Record<string, string>>;
  /**
   * The common `signals.tags`: tags this tool adds that are intent signals. A vendor that posts a
   * tag only to a subscription for it (Encharge's `added-tag-<tag>`) registers those too.
   */
  signalTags?: readonly string[];
}

/** Raw inbound webhook as the HTTP layer hands it over: bytes untouched, for signature checks. */
export interface InboundRequest {
  rawBody: Buffer;
  headers: Record<string, string | string[] | undefined>;
  query: Record<string, string | undefined>;
  now: number;
}

/** Thrown by inbound.verify/parse: becomes a 4xx with this code and message. */
export class InboundRejected extends Error {
  constructor(
    readonly status: 400 | 401 | 415,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface InboundParsed {
  dedupKey: string;
  event: EngagementEvent;
}

/**
 * How a vendor proves a webhook is its own, on top of the secret path segment every webhook URL
 * carries (`webhookSecret`). `setting` names the settings key holding the shared secret; when that
 * setting is not configured, only the path secret protects the webhook.
 */
export type InboundAuth =
  | { kind: 'path-secret' }
  | { kind: 'hmac'; header: string; timestampHeader?: string; setting: string }
  | { kind: 'header-token'; header: string; setting: string };

/**
 * A destination's naming conventions, used where the user's config says nothing. Attributes and
 * properties are mapping expressions over the enriched lead (docs/mapping.md); `null` drops a core
 * default. Event names per CRM event kind.
 */
export interface MappingDefaults {
  attributes?: Readonly<Record<string, string | null>>;
  events?: Partial<Record<CrmEventKind, string>>;
  /** `*` applies to every event; a kind adds to (or, with null, removes from) it. */
  properties?: Partial<Record<CrmEventKind | '*', Readonly<Record<string, string | null>>>>;
  /** Group traits (groupAccount), expressions over the enriched lead. */
  traits?: Readonly<Record<string, string | null>>;
  /** Extra actions per CRM event kind (workflows to start, lists), as the common `on` key. */
  on?: Partial<Record<CrmEventKind, { event?: string; workflowId?: string; addToList?: string; removeFromList?: string }>>;
  /** Default for the common `leaveLists` key. */
  leaveLists?: 'remove' | 'keep';
}

export interface Destination<S extends z.ZodType = z.ZodType> {
  /** Folder name = config `type` = registry key = metrics label. */
  type: string;
  /** Human name for logs and the dashboard. */
  title: string;
  /** Zod schema of its config block; secrets are marked with `secret()`. */
  settings: S;
  limits: { perSecond?: number; maxBatch: number; maxBatchBytes?: number };
  supports: Partial<Record<SyncOpKind, true>>;
  /**
   * What it cannot do, said plainly (shown by `erase` and the docs when an op is unsupported), e.g.
   * `{ erasePerson: 'the tracking API cannot delete; file a deletion request in the workspace' }`.
   */
  unsupportedReasons?: Partial<Record<SyncOpKind, string>>;
  /**
   * Naming conventions and actions where the user's config says nothing; a function when they
   * depend on the destination's own settings (e.g. a vendor key naming automations per event).
   */
  // Method syntax (bivariant): a destination's function takes its own typed settings and still fits
  // the registry's Destination<ZodType>.
  defaults?: MappingDefaults | { f(settings: z.infer<S>): MappingDefaults }['f'];
  /** Config that works but is probably wrong (doctor prints these), e.g. a region left to default. */
  configWarnings?(settings: z.infer<S>): string[];
  /**
   * Set (to the reason) when the vendor cannot tell a wrong credential: it accepts any key with a
   * success and drops the data later (Segment's stateless tracking API). check() then proves only
   * that the vendor answers; doctor says so instead of "credentials accepted", and the conformance
   * suite expects a wrong key to be accepted and nothing applied, as the vendor does.
   */
  credentialsUnverifiable?: string;
  /** Cheap authenticated call: doctor and the dashboard's "test connection". Throws a clear Error. */
  check(ctx: DestinationContext<z.infer<S>>): Promise<void>;
  /** One result per op, same order. Batch endpoints inside; never throws for vendor errors. */
  deliver(ctx: DestinationContext<z.infer<S>>, ops: SyncOp[]): Promise<ItemResult[]>;
  inbound?: {
    auth: InboundAuth;
    /** Throws InboundRejected (401 for a bad signature/token or stale timestamp). */
    verify(req: InboundRequest, settings: z.infer<S>): void;
    /**
     * Throws InboundRejected(400) for a body it cannot read. Events it has no rule for: stored as
     * `vendor.other` (or []); never an error. `settings` are the destination's (e.g. which custom
     * event names are milestones).
     */
    parse(req: InboundRequest, sourceName: string, settings: z.infer<S>): InboundParsed[];
  };
  /**
   * Engagement the vendor reports by no webhook (or not reliably): read periodically by one process
   * (a store-wide lock), its events stored in the inbox like a webhook's, with the same dedup keys
   * so whichever path sees an event first wins. One run should cost few requests.
   */
  sweep?: {
    /** How often, from the settings; 0 turns it off. */
    intervalMs(settings: z.infer<S>): number;
    /** Reads what happened after `cursor` (null: the first run); returns the events and the next cursor. */
    run(ctx: DestinationContext<z.infer<S>>, cursor: string | null): Promise<{ events: InboundParsed[]; cursor: string | null }>;
  };
  /**
   * Where the vendor's API can list and create its webhook subscriptions: `doctor` checks that ours
   * is registered, `doctor --fix` registers it.
   */
  webhookRegistration?: {
    /** The URLs the vendor posts this account's events to now. */
    list(ctx: DestinationContext<z.infer<S>>): Promise<string[]>;
    register(ctx: DestinationContext<z.infer<S>>, url: string): Promise<void>;
  };
  /** A faithful fake of the vendor API (see its README), mounted by tests, benches and the demo. */
  simulator: DestinationSimulatorFactory;
}

// ---------------------------------------------------------------------------------------------
// The vendor test kit: every simulator offers this same neutral view.

/** What a simulator records per HTTP request: tests assert on it, the demo prints it. */
export interface SimulatedRequest {
  at: number;
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
  status: number;
}

/**
 * One item the vendor applied or refused, in the neutral vocabulary: tests, the demo and
 * `bench/burst` count these instead of reading each vendor's payloads.
 */
export interface SimulatedItem {
  at: number;
  kind: SyncOpKind;
  /** The person's email (lower-cased) or id, as the request named them. */
  person: string;
  /** Event name, list id, workflow id or group id, when the kind has one. */
  target?: string;
  /** The vendor applied it; false when it refused the item (`reason`). */
  ok: boolean;
  reason?: string;
  /** Accepted but not applied again: the vendor had seen this event id / message id before. */
  duplicate?: boolean;
}

export interface SimulatorFaults {
  /** The next `n` requests fail with `status` (and `Retry-After: retryAfterSec` when given). */
  failNext(n: number, status: number, retryAfterSec?: number): void;
  /**
   * Until called with null: every request fails with `status`, or (`'timeout'`) is never answered
   * until the client gives up.
   */
  outage(mode: { status: number } | 'timeout' | null): void;
  /**
   * Every answer waits `ms` after the vendor applied the request (null: no wait). A client that
   * dies meanwhile never sees the answer: what a crash between sending and hearing back looks like.
   */
  latency(ms: number | null): void;
}

export interface DestinationSimulator {
  plugin: FastifyPluginAsync;
  requests: SimulatedRequest[];
  items: SimulatedItem[];
  faults: SimulatorFaults;
  /** Credentials the simulator accepts, as a config block for this destination (secrets included). */
  settingsFor(baseUrl: string): Record<string, unknown>;
  /**
   * What the vendor holds now about one person (email lower-cased, or id): their fields, in the
   * vendor's own names; undefined when it does not know them (or deleted them).
   */
  fieldsOf(key: string): Readonly<Record<string, unknown>> | undefined;
  /**
   * Common config keys the demo and integration worlds add to the block, so the vendor has
   * something to do with the simulated pipeline (e.g. `lists` naming the simulator's list ids
   * per stage: "Qualified", "Demo scheduled", "Proposal sent", "Negotiation").
   */
  demoConfig?(): Record<string, unknown>;
  /**
   * Sends the vendor's engagement webhook (signed as the vendor would) to `url` for `email`.
   * Returns the HTTP status our service answered.
   */
  sendEngagement?(url: string, kind: EngagementSample, email: string, extra?: EngagementExtra): Promise<number>;
  reset(): void;
}

/** The engagement every inbound simulator can send: the conformance suite and the demo use them. */
export type EngagementSample = 'opened' | 'clicked' | 'unsubscribed' | 'bounced';
export interface EngagementExtra {
  subject?: string;
  link?: string;
  eventId?: string;
  /** When it happened, unix ms (default now). */
  timestamp?: number;
  /** A machine open (privacy proxy, prefetch) where the vendor reports one. */
  machine?: boolean;
}

export type DestinationSimulatorFactory = (opts?: { perSecond?: number }) => DestinationSimulator;
