/**
 * The dashboard's JSON API, as types: the server (admin.ts) answers these and the page
 * (src/web/app) reads them. Types only, so the browser bundle imports nothing of the server.
 */

/** A destination the dashboard shows: every enabled one of every account, plus Kommo itself. */
export interface DashboardDestination {
  /** `account/name`, the jobs' destination column (`acme/kommo` for writes into Kommo). */
  key: string;
  account: string;
  name: string;
  /** The destination's registry type, or `kommo`. */
  type: string;
  title: string;
  /** Receives the tool's webhooks (engagement coming back). */
  inbound: boolean;
}

export type Health = 'ok' | 'warn' | 'error';

export interface DestinationHealth extends DashboardDestination {
  status: Health;
  /** Why it is not ok, in words. */
  reasons: string[];
  /** Kommo (or the account) -> this destination: the delivery log and the queue. */
  out: {
    /** Operations per minute over the last 5 minutes. */
    perMinute: number;
    /** Last hour. */
    ok: number;
    retried: number;
    failed: number;
    /** ok / (ok + retried + failed) over the last hour; null without deliveries. */
    successRate: number | null;
    /** Delivery latency of the last 15 minutes (ms; one batch call per operation). */
    p50: number | null;
    p95: number | null;
    depth: number;
    dead: number;
    oldestPendingAgeSeconds: number | null;
  };
  /** This tool -> kommo-sync (its webhooks); for Kommo: the CRM events it sent. */
  in: { perMinute: number; lastHour: number } | null;
  breaker: { since: number; reason: string } | null;
}

export interface AccountHealth {
  account: string;
  status: Health;
  reasons: string[];
  paused: { since: number; reason: string } | null;
  /** This process's Kommo rate budget: requests in the current window of `limit`. */
  budget: { inUse: number; limit: number; waiting: number } | null;
  /** Kommo pushed back (429s, a 403 block): calls are held. */
  kommoBreaker: string | null;
}

export interface SeriesLine {
  /** Destination key; `direction` says which way. */
  key: string;
  direction: 'out' | 'in';
  /** One value per bucket of `OverviewResponse.series.buckets`: operations (out) or events (in). */
  values: number[];
  /** Failed and retried operations per bucket (out only). */
  failures?: number[];
}

/**
 * An account's latest backfill (`kommo-sync backfill`), as `status` shows it. Structural copy of
 * runtime/operations.ts `BackfillSummary` (http/ may not import runtime/).
 */
export interface BackfillView {
  /** The filter in words ("all leads", "leads in pipeline "Sales" updated since ..."). */
  filter: string;
  status: 'running' | 'paused' | 'done' | 'failed';
  /** Leads read so far (synced + skipped). */
  leads: number;
  /** Leads that matched when counted (null while counting). */
  total: number | null;
  synced: number;
  /** Leads with nothing to send (no contact, no email, pipeline not synced). */
  skipped: number;
  jobs: number;
  /** Why it is not moving right now, or null. */
  waiting: string | null;
  error: string | null;
  startedAt: number;
  updatedAt: number;
  finishedAt: number | null;
}

/** The reconciliation sweep's last run (runtime/sweeper.ts `SweepStats`). */
export interface ReconcileRun {
  at: number;
  /** Kommo events that run read, and how many no webhook had brought. */
  read: number;
  found: number;
  /** Found since the store was created. */
  totalFound: number;
}

/** What the long-running operations are doing, per account (runtime/operations.ts `readOperations`). */
export interface OperationsView {
  backfill: Record<string, BackfillView>;
  reconcile: Record<string, ReconcileRun | null>;
}

/** One account's long-running operations, as the overview shows them. */
export interface AccountOperations {
  account: string;
  /** The latest backfill, whatever its status; null when none was ever requested. */
  backfill: BackfillView | null;
  reconcile: {
    /** `kommo.reconcile` in ms; 0: off; null: not known to this process. */
    everyMs: number | null;
    /** The last run, or null when it never ran. */
    last: ReconcileRun | null;
  };
}

export interface OverviewResponse {
  now: number;
  status: Health;
  problems: string[];
  queue: {
    inboxPending: number;
    inboxFailed: number;
    pending: number;
    inFlight: number;
    done: number;
    dead: number;
    oldestPendingAgeSeconds: number | null;
  };
  destinations: DestinationHealth[];
  accounts: AccountHealth[];
  series: { bucketMs: number; buckets: number[]; lines: SeriesLine[] };
  /** Backfill and reconciliation per account; null when this process cannot tell. */
  operations: AccountOperations[] | null;
  /** Changes whenever something new was received, delivered or dead-lettered: lists refresh then. */
  version: string;
}

export interface JobCounts {
  total: number;
  done: number;
  pending: number;
  dead: number;
  discarded: number;
}

export interface EventRow {
  id: number;
  account: string;
  source: string;
  kind: string;
  receivedAt: number;
  state: 'pending' | 'routed' | 'failed';
  attempts: number;
  leadId: number | null;
  email: string | null;
  note: string | null;
  lastError: string | null;
  jobs: JobCounts;
  destinations: string[];
}

export interface EventsResponse {
  events: EventRow[];
  /** Cursor for the next (older) page, or null at the end. */
  next: number | null;
}

export interface DeliveryView {
  id: number;
  at: number;
  op: string;
  status: 'ok' | 'retry' | 'failed';
  httpStatus: number | null;
  latencyMs: number;
  /** The vendor's answer in short: `HTTP 400: email is invalid`. */
  answer: string;
}

export interface JobView {
  id: number;
  destination: string;
  state: 'pending' | 'leased' | 'done' | 'dead' | 'discarded';
  attempts: number;
  createdAt: number;
  runAfter: number;
  subject: string;
  lastError: string | null;
  discardReason: string | null;
  /** The operations the job carries (secrets masked). */
  ops: unknown[];
  deliveries: DeliveryView[];
}

export interface EventDetailResponse {
  event: EventRow & { dedupKey: string; payload: unknown };
  jobs: JobView[];
}

export type TimelineEntry =
  | { at: number; type: 'in'; source: string; kind: string; eventId: number; text: string; note: string | null }
  | { at: number; type: 'out'; destination: string; op: string; status: 'ok' | 'retry' | 'failed'; answer: string; jobId: number; eventId: number | null; text: string }
  | { at: number; type: 'queued'; destination: string; op: string; state: JobView['state']; jobId: number; eventId: number | null; text: string };

export interface TimelineResponse {
  account: string;
  leadId: number;
  email: string | null;
  entries: TimelineEntry[];
  /** True when the lead has more events than one timeline shows (the oldest are left out). */
  truncated: boolean;
}

export interface LeadMatch {
  account: string;
  leadId: number;
  name: string | null;
  email: string | null;
  /** Where it was found: the local log, or Kommo's search. */
  from: 'log' | 'kommo';
}

export interface DeadJobView {
  id: number;
  subject: string;
  createdAt: number;
  attempts: number;
  inboxId: number | null;
  lastError: string;
}

export interface FailureGroup {
  destination: string;
  /** The reason with its specifics (emails, ids, numbers) blanked: what the group shares. */
  reason: string;
  count: number;
  jobs: DeadJobView[];
}

export interface FailuresResponse {
  groups: FailureGroup[];
  /** Dead letters counted, in case there were more than one page holds. */
  deadTotal: number;
  unrouted: EventRow[];
}

export interface ResolvedName {
  /** What the config says, and where. */
  name: string;
  where: string;
  /** What it resolved to in Kommo (`pipeline / stage (id 142)`), or null with `error`. */
  resolved: string | null;
  error: string | null;
}

export interface ConfigResponse {
  /** The effective config, secrets masked. */
  config: unknown;
  accounts: Array<{
    account: string;
    kommo: { subdomain: string; baseUrl: string; loaded: boolean; error: string | null };
    names: ResolvedName[];
    webhooks: Array<{ source: string; title: string; url: string | null; hint: string }>;
    destinations: Array<DashboardDestination & { enabled: boolean; settings: unknown }>;
  }>;
  /** Every destination type kommo-sync knows, configured or not. */
  registry: Array<{ type: string; title: string; configured: boolean }>;
}

export interface CheckResponse {
  destination: string;
  ok: boolean;
  message: string;
  ms: number;
}

export interface SessionResponse {
  /** Send as `X-CSRF-Token` with every POST. */
  csrf: string;
  /** `token`: logged in with the admin token; `open`: loopback without a token (demo). */
  mode: 'token' | 'open';
  expiresAt: number | null;
}
