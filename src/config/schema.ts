/**
 * The configuration schema (kommo-sync.yaml). docs/configuration.md documents every key.
 * Destination blocks are validated in two steps: the common keys here, then the destination's own
 * settings schema from the registry (see config/load.ts), so adding a vendor touches no file here.
 */
import { z } from 'zod';
import { crmEventKind, duration, engagementKind, secret } from '../model/index.js';

/**
 * What belongs at a key, in a user's words: config errors say it when the key is missing or empty
 * (`required: the account subdomain, e.g. "acme"`) instead of only a type name. A registry, not
 * `.describe()`: that returns a copy, which would lose the secret() mark.
 */
export const configHints = z.registry<{ hint: string }>();
function hint<T extends z.ZodType>(schema: T, text: string): T {
  configHints.add(schema, { hint: text });
  return schema;
}

const oauth = hint(z.object({
  clientId: hint(z.string().min(1), 'the OAuth integration id (Kommo: the integration\'s "Keys and scopes")'),
  clientSecret: hint(secret(), 'the OAuth integration secret key, e.g. ${KOMMO_CLIENT_SECRET}'),
  /** The first refresh token; later ones are rotated and kept in the store. */
  refreshToken: hint(secret(), 'the first refresh token, e.g. ${KOMMO_REFRESH_TOKEN}'),
  redirectUri: hint(z.string().url(), 'the integration\'s redirect URI, e.g. https://sync.example.com/oauth'),
}).strict(), 'clientId, clientSecret, refreshToken and redirectUri of a Kommo OAuth integration');

const SUBDOMAIN = 'the account subdomain, e.g. "acme" for acme.kommo.com';
export const kommoSchema = hint(z.object({
  subdomain: hint(z.string().regex(/^[a-z0-9-]+$/i, `expected ${SUBDOMAIN}`), SUBDOMAIN),
  /** Root the API paths are appended to; default https://<subdomain>.kommo.com. */
  baseUrl: z.string().url().optional(),
  accessToken: secret().optional(),
  oauth: oauth.optional(),
  /** Long random string in the webhook URL path (Kommo does not sign its webhooks). */
  webhookSecret: hint(secret({ min: 16, message: 'must be at least 16 characters (it is the only proof a webhook came from Kommo)' }), 'a long random string for the Kommo webhook URL, e.g. ${KOMMO_WEBHOOK_SECRET} (make one with `openssl rand -hex 24`)'),
  /** Requests per second to this account's API, shared by everything in kommo-sync. Kommo allows 7. */
  rateLimit: z.number().positive().max(50).default(7),
  /** Read user names for `responsible` (needs an admin token; falls back to ids on 403). */
  readUsers: z.boolean().default(true),
  timeout: duration.default(15_000),
  /**
   * How often Kommo's events API is read for lead additions and stage changes whose webhook never
   * arrived (Kommo does not always retry a failed delivery); 0 turns it off.
   */
  reconcile: duration.prefault('10m'),
}).strict().refine((k) => Boolean(k.accessToken) !== Boolean(k.oauth), {
  message: 'set exactly one of accessToken (long-lived token) or oauth {clientId, clientSecret, refreshToken, redirectUri}',
}), 'the Kommo connection: subdomain, accessToken (or oauth) and webhookSecret');

/** Keys every destination block understands; everything else belongs to the destination's settings. */
export const destinationCommonKeys = ['type', 'enabled', 'attributes', 'events', 'properties', 'traits', 'on', 'workflows', 'lists', 'leaveLists', 'identifyBy', 'webhookSecret', 'pipelines', 'signals'] as const;

const eventAction = z.object({
  /** Event name to send (overrides `events`). */
  event: z.string().min(1).optional(),
  /** Vendor workflow / journey / campaign to start. */
  workflowId: z.union([z.string(), z.number()]).transform(String).optional(),
  addToList: z.union([z.string(), z.number()]).transform(String).optional(),
  removeFromList: z.union([z.string(), z.number()]).transform(String).optional(),
}).strict();

export const destinationCommon = z.object({
  type: z.string().min(1).optional(),
  enabled: z.boolean().default(true),
  /** destination attribute name -> mapping expression over the enriched lead (see docs/mapping.md); null drops a default. */
  attributes: z.record(z.string(), z.string().nullable()).optional(),
  /** CRM event kind -> event name sent to the destination. */
  events: z.partialRecord(crmEventKind, z.string().min(1)).optional(),
  /** Event properties: `*` (every event) or a CRM event kind -> { name: expression }; null drops a default. */
  properties: z.partialRecord(z.union([crmEventKind, z.literal('*')]), z.record(z.string(), z.string().nullable())).optional(),
  /** Company traits (for destinations that group people by account): name -> expression. */
  traits: z.record(z.string(), z.string().nullable()).optional(),
  /** CRM event kind -> extra actions (workflow, list moves). */
  on: z.partialRecord(crmEventKind, eventAction).optional(),
  /** CRM event kind -> workflow (journey, automation) id to start: short for `on.<kind>.workflowId`. */
  workflows: z.partialRecord(crmEventKind, z.union([z.string(), z.number()]).transform(String)).optional(),
  /** Stage name (or key) -> list id: entering the stage subscribes the person to its list. */
  lists: z.record(z.string(), z.union([z.string(), z.number()]).transform(String)).optional(),
  /** `remove` (default): leaving a stage unsubscribes from its list; `keep`: lists only grow. */
  leaveLists: z.enum(['remove', 'keep']).optional(),
  /** How people are keyed at the vendor. */
  identifyBy: z.enum(['email', 'id']).default('email'),
  /** Secret path segment of this destination's inbound webhook URL. */
  webhookSecret: secret({ min: 16 }).optional(),
  /** Only leads of these pipelines (names) are synced here; default all. */
  pipelines: z.array(z.string()).optional(),
  /**
   * Intent signals from this tool's webhooks: a tag it adds, or an open or click of one of these
   * emails (matched by name, case-insensitively), becomes a task for the lead's responsible user.
   */
  signals: z.object({
    tags: z.array(z.string().min(1)).default([]),
    emails: z.array(z.string().min(1)).default([]),
    task: z.object({
      text: z.string().default('Intent signal: {{signal}} ({{email}}). Follow up now.'),
      due: duration.prefault('2h'),
      typeId: z.number().int().default(1),
    }).strict().prefault({}),
    /** At most one signal task per lead in this period, whichever tool signalled. */
    cooldown: duration.prefault('24h'),
  }).strict().optional(),
});
export type DestinationCommon = z.infer<typeof destinationCommon>;

const hotLead = z.object({
  on: engagementKind.default('email.opened'),
  count: z.number().int().min(1).default(3),
  within: duration.prefault('48h'),
  cooldown: duration.prefault('24h'),
  task: z.object({
    text: z.string().default('Hot lead: {{count}} email opens in {{within}}. Call them.'),
    due: duration.prefault('8h'),
    /** Kommo task type id: 1 = follow-up call, 2 = meeting. */
    typeId: z.number().int().default(1),
  }).strict().default({ text: 'Hot lead: {{count}} email opens in {{within}}. Call them.', due: 8 * 3_600_000, typeId: 1 }),
}).strict();

const unsubscribe = z.object({
  /** Contact custom field (name or code) to set, e.g. "Email opt-in". */
  contactField: z.string().optional(),
  value: z.union([z.boolean(), z.string(), z.number()]).default(false),
  tag: z.string().optional(),
  note: z.boolean().default(true),
  task: z.object({ text: hint(z.string(), 'the task text (a template, e.g. "{{email}} unsubscribed: call them")'), due: duration.prefault('24h') }).strict().optional(),
  /** Stage name to move the lead to. */
  moveToStage: z.string().optional(),
  /**
   * An unsubscribe or spam complaint reported by one tool suppresses the person in every other
   * destination that can suppress, so no other tool keeps emailing them.
   */
  propagate: z.boolean().default(true),
}).strict();

export const engagementSchema = z.object({
  /** Engagement kinds that write a note on the lead. */
  notes: z.array(engagementKind).default(['email.clicked', 'email.unsubscribed', 'email.bounced']),
  hotLead: hotLead.optional(),
  unsubscribe: unsubscribe.optional(),
  bounce: z.object({ tag: z.string().default('Email Bounced'), note: z.boolean().default(true) }).strict().optional(),
}).strict();

export const crmNotesSchema = z.object({
  /** CRM events after which a note is written on the lead (a visible sync log inside Kommo). */
  // A backfill is not something that happened to the lead: it never writes a note (one per lead of
  // the account would bury the leads' history).
  on: hint(z.array(crmEventKind.exclude(['lead.backfill'], { error: 'lead.backfill never writes a note (a backfill would add one to every lead)' })).min(1), 'a list of CRM event kinds that get a note, e.g. [lead.stage_changed, lead.won]'),
  /** Template; `{{ expr }}` are mapping expressions over the enriched lead plus `destinations` and `sent` (docs/mapping.md). */
  text: z.string().default('kommo-sync: {{event.kind}} ({{stage.name}}) queued for {{sent}}'),
}).strict();

export const accountSchema = z.object({
  kommo: kommoSchema,
  /** Stage name (or "Pipeline / Stage") -> key used in mappings and list config. */
  stages: z.record(z.string(), z.string().regex(/^[a-z0-9_.-]+$/i, 'expected a key like "proposal_sent"')).default({}),
  destinations: z.record(z.string().regex(/^[a-z0-9_-]+$/i, 'expected a name of letters, digits, _ or -'), z.record(z.string(), z.unknown())).default({}),
  engagement: engagementSchema.default({ notes: ['email.clicked', 'email.unsubscribed', 'email.bounced'] }),
  crmNotes: crmNotesSchema.optional(),
}).strict();

export const serverSchema = z.object({
  port: z.number().int().min(0).max(65535).default(8080),
  host: z.string().default('0.0.0.0'),
  /** Largest webhook body accepted (bytes). */
  bodyLimit: z.number().int().positive().default(5 * 1024 * 1024),
  /** Required for the dashboard and /api/* unless bound to loopback. Prefer KOMMO_SYNC_ADMIN_TOKEN. */
  adminToken: secret().optional(),
  /** Optional Bearer token for /metrics. */
  metricsToken: secret().optional(),
  /** Public base URL, for the webhook URLs `doctor` prints. */
  publicUrl: z.string().url().optional(),
}).strict();

export const workerSchema = z.object({
  /** Jobs claimed per destination per round (also capped by the destination's batch size). */
  batchSize: z.number().int().min(1).max(1000).default(250),
  /**
   * A claim (job or inbox event) is another process's after this long without a heartbeat. Claims
   * are renewed while a delivery runs, so this bounds how long a crashed process's work waits on
   * PostgreSQL (on SQLite, `serve` takes its claims back at start).
   */
  lease: duration.prefault('30s'),
  /** Jobs still failing after this long go to the dead-letter list. */
  maxAge: duration.prefault('72h'),
  /** A cap on tries besides maxAge; the default lets maxAge (72 h at 10 min apart) decide. */
  maxAttempts: z.number().int().min(1).default(500),
  /** Done jobs, routed inbox events and delivery logs older than this are deleted (hourly). */
  retention: duration.prefault('14d'),
  /** Idle polling interval. */
  poll: duration.prefault('200ms'),
  /** While Kommo refuses an account's credentials, how often one cheap call checks whether it answers again. */
  pauseRecheck: duration.prefault('15m'),
  backoff: z.object({
    base: duration.prefault('1s'),
    factor: z.number().min(1).default(4),
    max: duration.prefault('10m'),
  }).strict().default({ base: 1000, factor: 4, max: 600_000 }),
  /** Inbox events routed per round (enrichment is batched over them). */
  routeBatch: z.number().int().min(1).max(5000).default(500),
  /** After a partial batch the router waits this long, so bursts are enriched in big batches. */
  routeLinger: duration.prefault('1s'),
  /** On SIGTERM/SIGINT, how long deliveries in flight may take to finish before the process exits anyway. */
  shutdownTimeout: duration.prefault('10s'),
}).strict();

const ACCOUNTS = 'a map of your name for each Kommo account to its settings, e.g. `acme: { kommo: { subdomain: acme, accessToken: ${KOMMO_TOKEN}, webhookSecret: ${KOMMO_WEBHOOK_SECRET} } }`';
export const configSchema = z.object({
  store: z.string().default('sqlite:./data/kommo-sync.db'),
  server: serverSchema.prefault({}),
  worker: workerSchema.prefault({}),
  log: z.object({
    level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
    /** Human-readable lines instead of JSON (default: when stdout is a terminal). */
    pretty: z.boolean().optional(),
  }).strict().default({ level: 'info' }),
  accounts: hint(z.record(z.string().regex(/^[a-z0-9_-]+$/i, 'expected a name of letters, digits, _ or -'), accountSchema)
    .refine((a) => Object.keys(a).length > 0, `at least one account is required: ${ACCOUNTS}`), ACCOUNTS),
}).strict();

export type Config = z.infer<typeof configSchema>;
export type AccountConfig = z.infer<typeof accountSchema>;
export type KommoConfig = z.infer<typeof kommoSchema>;
export type EngagementConfig = z.infer<typeof engagementSchema>;
export type WorkerConfig = z.infer<typeof workerSchema>;

/** A destination block after both validation steps. */
export interface DestinationConfig {
  name: string;
  type: string;
  common: DestinationCommon;
  /** Validated by the destination's own schema. */
  settings: unknown;
}
