/**
 * The contract every marketing-tool destination implements (one folder each, one registry line in
 * index.ts). Destinations translate SyncOps into vendor requests and classify each result; they never
 * sleep or retry: the worker owns backoff, Retry-After, dead letters and replay.
 */
import type { FastifyPluginAsync } from 'fastify';
import type { Logger } from 'pino';
import type { z } from 'zod';
import type { EngagementEvent } from '../sync/events.js';

/** Attribute values we send: what every vendor accepts. */
export type AttrValue = string | number | boolean | null;
export type Attributes = Record<string, AttrValue>;

/** Who an operation is about. `email` is always set for people; `id` is the Kommo contact/lead key. */
export interface PersonRef {
  email: string;
  /** Stable id (default: `kommo-contact-<id>`), used when a destination identifies by id. */
  id?: string;
}

/** Timestamps in SyncOps are unix milliseconds; connectors convert to what their vendor wants. */
export type SyncOp =
  | { kind: 'upsertPerson'; person: PersonRef; attributes: Attributes; timestamp: number }
  | { kind: 'trackEvent'; person: PersonRef; name: string; properties: Attributes; timestamp: number; messageId: string }
  | { kind: 'triggerWorkflow'; person: PersonRef; workflowId: string; data: Attributes; messageId: string }
  | { kind: 'addToList'; person: PersonRef; listId: string; attributes: Attributes }
  | { kind: 'removeFromList'; person: PersonRef; listId: string }
  | { kind: 'groupAccount'; person: PersonRef; groupId: string; traits: Attributes; timestamp: number; messageId: string }
  | { kind: 'suppress'; person: PersonRef }
  | { kind: 'erasePerson'; person: PersonRef };

export type SyncOpKind = SyncOp['kind'];

export type FailCode = 'auth' | 'invalid' | 'not_found' | 'rejected';

export type ItemResult =
  | { ok: true; httpStatus?: number }
  | { retry: { reason: string; afterMs?: number }; httpStatus?: number }
  | { fail: { reason: string; code: FailCode }; httpStatus?: number };

export interface DestinationContext<S> {
  /** The destination's configured name (`cio`), its settings (validated), and a child logger. */
  name: string;
  settings: S;
  log: Logger;
  /** Per-request timeout for vendor calls. */
  timeoutMs: number;
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

export interface Destination<S extends z.ZodType = z.ZodType> {
  /** Folder name = config `type` = registry key = metrics label. */
  type: string;
  /** Human name for logs and the dashboard. */
  title: string;
  /** Zod schema of its config block. Secret keys are listed in `secrets` (masked everywhere). */
  settings: S;
  secrets: readonly string[];
  limits: { perSecond?: number; maxBatch: number; maxBatchBytes?: number };
  supports: Partial<Record<SyncOpKind, true>>;
  /** Cheap authenticated call: doctor and the dashboard's "test connection". Throws a clear Error. */
  check(ctx: DestinationContext<z.infer<S>>): Promise<void>;
  /** One result per op, same order. Batch endpoints inside; never throws for vendor errors. */
  deliver(ctx: DestinationContext<z.infer<S>>, ops: SyncOp[]): Promise<ItemResult[]>;
  inbound?: {
    /** Throws InboundRejected (401 for a bad signature/token or stale timestamp). */
    verify(req: InboundRequest, settings: z.infer<S>): void;
    /** Throws InboundRejected(400) for a body it cannot read. Unknown metrics -> []. */
    parse(req: InboundRequest, sourceName: string): InboundParsed[];
  };
  /** A faithful fake of the vendor API (see its README), mounted by tests and the demo. */
  simulator: DestinationSimulatorFactory;
}

/** What a simulator records: tests assert on it, the demo prints it. */
export interface SimulatedRequest {
  at: number;
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
  status: number;
}

export interface DestinationSimulator {
  plugin: FastifyPluginAsync;
  requests: SimulatedRequest[];
  /** Credentials the simulator accepts, as a config block for this destination (secrets included). */
  settingsFor(baseUrl: string): Record<string, unknown>;
  /** Make the next `n` requests fail with `status` (and optional Retry-After seconds): conformance. */
  failNext(n: number, status: number, retryAfterSec?: number): void;
  /**
   * Sends the vendor's engagement webhook (signed as the vendor would) to `url` for `email`.
   * Returns the HTTP status our service answered.
   */
  sendEngagement?(url: string, kind: 'opened' | 'clicked' | 'unsubscribed' | 'bounced', email: string, extra?: { subject?: string; link?: string; eventId?: string; timestamp?: number }): Promise<number>;
  reset(): void;
}

export type DestinationSimulatorFactory = (opts?: { perSecond?: number }) => DestinationSimulator;
