/**
 * Kommo -> marketing tool: one enriched CRM event becomes the SyncOps for one destination. Pure: the
 * router calls it per destination and queues the result; retries and replays reuse the queued ops.
 */
import type { AccountConfig, DestinationCommon } from '../config/schema.js';
import type { MappingDefaults } from '../destinations/types.js';
import { crmEventKind, describeSyncOp, deterministicUlid, type Attributes, type AttrValue, type CrmEventKind, type EnrichedLead, type PersonRef, type StageInfo, type SyncOp, type SyncOpKind } from '../model/index.js';
import {
  compileExpression,
  compileTemplate,
  LEAD_ROOTS,
  whereOf,
  type CompiledExpr,
  type CompiledTemplate,
  type MappingValue,
  type Where,
} from './mapping.js';

/** Sent to every destination unless the user's `attributes` override a name (they add to these). */
export const DEFAULT_ATTRIBUTES: Readonly<Record<string, string>> = {
  kommo_lead_id: 'lead.id',
  kommo_stage: 'stage.key',
  kommo_stage_name: 'stage.name',
  kommo_stage_id: 'stage.id',
  kommo_pipeline: 'stage.pipeline',
  deal_value: 'lead.price',
  responsible: 'responsible.name ? responsible.name : $string(responsible.id)',
  first_name: 'contact.firstName',
  last_name: 'contact.lastName',
};

/** Event names used when `events` does not name one. lead.won/lost fall back to the stage change name. */
export const DEFAULT_EVENTS: Partial<Record<CrmEventKind, string>> = {
  'lead.created': 'kommo_lead_created',
  'lead.stage_changed': 'kommo_stage_changed',
};

/**
 * Event properties (and workflow data), by event kind; `*` is every event. A destination's
 * `defaults.properties` and the user's `properties:` add to these, and `null` removes one. A value
 * that evaluates to nothing (no previous stage, no loss reason) is left out.
 */
export const DEFAULT_PROPERTIES: Readonly<Partial<Record<CrmEventKind | '*', Readonly<Record<string, string | null>>>>> = {
  '*': {
    stage: 'stage.key',
    stage_id: 'stage.id',
    stage_name: 'stage.name',
    pipeline: 'pipeline.name',
    lead_id: 'lead.id',
    deal_value: 'lead.price',
    currency: 'account.currency',
    previous_stage: 'previousStage.key',
    previous_stage_id: 'previousStage.id',
    previous_stage_name: 'previousStage.name',
  },
  'lead.won': { won_at: 'lead.wonAt ? $fromMillis(lead.wonAt)' },
  'lead.lost': { loss_reason: 'lead.lossReason', lost_at: 'lead.lostAt ? $fromMillis(lead.lostAt)' },
  'lead.responsible_changed': { owner: 'responsible.name', owner_email: 'responsible.email' },
};

/** Traits of the company a person belongs to (groupAccount). */
export const DEFAULT_TRAITS: Readonly<Record<string, string | null>> = { name: 'company.name' };

type EventAction = NonNullable<NonNullable<DestinationCommon['on']>[CrmEventKind]>;

type CompiledSet = ReadonlyArray<{ name: string; expr: CompiledExpr }>;

export interface CompiledMapping {
  attributes: CompiledSet;
  /** Event properties per CRM kind (the `*` set merged in). */
  properties: Partial<Record<CrmEventKind, CompiledSet>>;
  traits: CompiledSet;
  /** The event name per kind, defaults and won/lost fallbacks resolved; no entry = no event. */
  eventNames: Partial<Record<CrmEventKind, string>>;
  /**
   * The names among `eventNames` that are templates (`deal_moved_to_{{stage.key}}`), compiled;
   * a plain name has no entry and is sent as written.
   */
  eventTemplates: Partial<Record<CrmEventKind, CompiledTemplate>>;
  on: Partial<Record<CrmEventKind, EventAction>>;
  /** Stage name, "Pipeline / Stage" or stage key -> list id. */
  lists: Readonly<Record<string, string>>;
  /** What happens in the previous stage's list when the lead moves on. */
  leaveLists: 'remove' | 'keep';
  identifyBy: 'email' | 'id';
  /** Pipeline names synced to this destination; undefined = all. */
  pipelines?: readonly string[];
}

const CRM_KINDS = crmEventKind.options;

/** Kinds that mean "this person's data may have changed": they upsert the person. */
const PERSON_KINDS: ReadonlySet<CrmEventKind> = new Set<CrmEventKind>([
  'lead.created', 'lead.updated', 'lead.stage_changed', 'lead.won', 'lead.lost', 'lead.responsible_changed', 'contact.updated', 'lead.backfill',
]);
/**
 * Kinds after which the lead sits in a (new) stage: list membership follows the stage. A backfilled
 * lead joins the list of the stage it is in (it has no previous stage, so it leaves none).
 */
const STAGE_KINDS: ReadonlySet<CrmEventKind> = new Set<CrmEventKind>(['lead.created', 'lead.stage_changed', 'lead.won', 'lead.lost', 'lead.backfill']);

/**
 * Name -> expression, layered: core defaults, then the destination's conventions, then the user's
 * config (where a name set to null is dropped). Each expression is compiled once, with the config
 * path of the layer it came from, so a mistake in a default names the destination that ships it.
 */
function compileSet(layers: Array<{ entries: Readonly<Record<string, string | null>> | undefined; where: (name: string) => string }>): CompiledSet {
  const chosen = new Map<string, { source: string; where: string }>();
  for (const layer of layers) {
    for (const [name, source] of Object.entries(layer.entries ?? {})) {
      if (source === null) chosen.delete(name);
      else chosen.set(name, { source, where: layer.where(name) });
    }
  }
  return [...chosen].map(([name, { source, where }]) => ({ name, expr: compileExpression(source, where) }));
}

export function compileDestinationMapping(common: DestinationCommon, where: Where, defaults: MappingDefaults = {}): CompiledMapping {
  const builtIn = (section: string) => (name: string) => `built-in ${section}.${name}`;
  const vendor = (section: string) => (name: string) => `the destination's default ${section}.${name}`;
  const user = (section: string) => (name: string) => whereOf(where, `${section}.${name}`);
  const attributes = compileSet([
    { entries: DEFAULT_ATTRIBUTES, where: builtIn('attributes') },
    { entries: defaults.attributes, where: vendor('attributes') },
    { entries: common.attributes, where: user('attributes') },
  ]);
  const properties: Partial<Record<CrmEventKind, CompiledSet>> = {};
  for (const kind of CRM_KINDS) {
    properties[kind] = compileSet([
      { entries: DEFAULT_PROPERTIES['*'], where: builtIn('properties.*') },
      { entries: defaults.properties?.['*'], where: vendor('properties.*') },
      { entries: common.properties?.['*'], where: user('properties.*') },
      { entries: DEFAULT_PROPERTIES[kind], where: builtIn(`properties.${kind}`) },
      { entries: defaults.properties?.[kind], where: vendor(`properties.${kind}`) },
      { entries: common.properties?.[kind], where: user(`properties.${kind}`) },
    ]);
  }
  const traits = compileSet([
    { entries: DEFAULT_TRAITS, where: builtIn('traits') },
    { entries: defaults.traits, where: vendor('traits') },
    { entries: common.traits, where: user('traits') },
  ]);

  const eventNames: Partial<Record<CrmEventKind, string>> = { ...DEFAULT_EVENTS, ...defaults.events, ...common.events };
  // Where each name was written, so a template mistake names its own line.
  const eventWhere: Partial<Record<CrmEventKind, string>> = {};
  for (const kind of CRM_KINDS) {
    if (common.events?.[kind] !== undefined) eventWhere[kind] = user('events')(kind);
    else if (defaults.events?.[kind] !== undefined) eventWhere[kind] = vendor('events')(kind);
    else eventWhere[kind] = builtIn('events')(kind);
  }
  // Won and lost are stage changes too: without their own name they are reported as one.
  for (const k of ['lead.won', 'lead.lost'] as const) {
    if (eventNames[k] !== undefined) continue;
    eventNames[k] = eventNames['lead.stage_changed'];
    eventWhere[k] = eventWhere['lead.stage_changed'];
  }
  // `on` layers per kind and per key: the destination's, then `workflows` (sugar), then the user's.
  const on: Partial<Record<CrmEventKind, EventAction>> = {};
  const layers: Array<Partial<Record<CrmEventKind, EventAction>> | undefined> = [
    defaults.on,
    Object.fromEntries(Object.entries(common.workflows ?? {}).map(([k, id]) => [k, { workflowId: id }])),
    common.on,
  ];
  for (const layer of layers) {
    for (const [kind, action] of Object.entries(layer ?? {}) as Array<[CrmEventKind, EventAction]>) on[kind] = { ...on[kind], ...action };
  }
  for (const [kind, action] of Object.entries(on) as Array<[CrmEventKind, EventAction]>) {
    if (!action.event) continue;
    eventNames[kind] = action.event;
    eventWhere[kind] = common.on?.[kind]?.event !== undefined ? user('on')(`${kind}.event`) : vendor('on')(`${kind}.event`);
  }
  // Only names with a placeholder are compiled: a plain name is sent exactly as written.
  const eventTemplates: Partial<Record<CrmEventKind, CompiledTemplate>> = {};
  for (const [kind, name] of Object.entries(eventNames) as Array<[CrmEventKind, string]>) {
    if (name.includes('{{')) eventTemplates[kind] = compileTemplate(name, eventWhere[kind] ?? builtIn('events')(kind));
  }

  return {
    attributes,
    properties,
    traits,
    eventNames,
    eventTemplates,
    on,
    lists: { ...common.lists },
    leaveLists: common.leaveLists ?? defaults.leaveLists ?? 'remove',
    identifyBy: common.identifyBy,
    ...(common.pipelines ? { pipelines: common.pipelines } : {}),
  };
}

export interface OutboundOptions {
  /** The destination's `supports`: ops it cannot take are dropped silently (a vendor without lists simply has none). */
  supports: Partial<Record<SyncOpKind, true>>;
  /** The inbox event's dedup key: messageIds derive from it, so a replay sends the same ids. */
  dedupKey: string;
  destinationName: string;
  /**
   * The person opted out of marketing email (the unsubscribe rule's contact field says so): no list
   * subscription and no workflow start, so a stage move does not re-subscribe them anywhere.
   */
  optedOut?: boolean;
}

export interface OutboundPlan {
  ops: SyncOp[];
  /** Why nothing was planned (no contact email, pipeline not synced), for the delivery log. */
  skipped?: string;
}

/** How a Kommo contact is known at a destination that identifies people by id. */
export function personId(contactId: number): string {
  return `kommo-contact-${contactId}`;
}

/**
 * The ops for one destination, in the order the vendor should apply them: the person first (events
 * for an unknown person are dropped by some vendors), then the company, the event, workflows, lists.
 *
 * lead.deleted sends nothing by default: deleting a deal is not deleting the person (GDPR erasure is
 * the `erase` command). An event name or `on` action configured for lead.deleted is still sent.
 * With `identifyBy: id` a contact without email is still synced, with `person.email` ''.
 * Attribute values that are missing (no contact, empty field) are left out rather than sent as null,
 * so a gap in Kommo does not wipe data other tools maintain. Multi-value fields are sent as "a, b".
 */
export async function planOutbound(e: EnrichedLead, m: CompiledMapping, opts: OutboundOptions): Promise<OutboundPlan> {
  const kind = e.event.kind;
  if (m.pipelines && !m.pipelines.some((p) => sameName(p, e.stage.pipeline))) {
    return { ops: [], skipped: `pipeline "${e.stage.pipeline}" is not in this destination's pipelines` };
  }
  if (!e.contact) return { ops: [], skipped: `lead ${e.lead.id} has no contact` };
  if (m.identifyBy === 'email' && !e.contact.email) {
    return { ops: [], skipped: `contact ${e.contact.id} of lead ${e.lead.id} has no email` };
  }
  const person: PersonRef = { email: e.contact.email, id: personId(e.contact.id) };
  const at = e.event.at;

  // An op's index is its place in the plan before filtering by `supports`, so ids stay stable even
  // if the destination's support changes between a first attempt and a replay.
  const planned: SyncOp[] = [];
  // A ULID (the strictest id format a destination asks for) seeded by (destination, inbox event,
  // op index): a retry or replay of this event sends the same ids, and vendors dedup on them.
  const messageId = () => deterministicUlid(at, `${opts.destinationName}\n${opts.dedupKey}\n${planned.length}`);

  const attributes = await evaluate(m.attributes, e);
  if (PERSON_KINDS.has(kind)) {
    planned.push({ kind: 'upsertPerson', person, attributes, timestamp: at });
    if (e.company) {
      planned.push({
        kind: 'groupAccount', person, groupId: `kommo-company-${e.company.id}`, traits: await evaluate(m.traits, e), timestamp: at, messageId: messageId(),
      });
    }
  }

  const properties = await evaluate(m.properties[kind] ?? [], e);
  const eventName = await eventNameFor(m, kind, e);
  if (eventName) planned.push({ kind: 'trackEvent', person, name: eventName, properties, timestamp: at, messageId: messageId() });

  const action = m.on[kind];
  if (action?.workflowId) planned.push({ kind: 'triggerWorkflow', person, workflowId: action.workflowId, data: properties, messageId: messageId() });
  if (action?.addToList) planned.push({ kind: 'addToList', person, listId: action.addToList, attributes });
  if (action?.removeFromList) planned.push({ kind: 'removeFromList', person, listId: action.removeFromList });

  if (STAGE_KINDS.has(kind)) {
    const current = listFor(m.lists, e.stage);
    const previous = e.previousStage ? listFor(m.lists, e.previousStage) : undefined;
    if (previous && previous !== current && m.leaveLists === 'remove') planned.push({ kind: 'removeFromList', person, listId: previous });
    if (current) planned.push({ kind: 'addToList', person, listId: current, attributes });
  }

  const marketing: ReadonlySet<SyncOpKind> = new Set<SyncOpKind>(['addToList', 'triggerWorkflow']);
  return { ops: planned.filter((op) => opts.supports[op.kind] && !(opts.optedOut && marketing.has(op.kind))) };
}

/**
 * The event name for `kind`: a template renders over the lead (`deal_moved_to_{{stage.key}}` ->
 * `deal_moved_to_proposal_sent`), trimmed; one that renders empty sends no event.
 */
async function eventNameFor(m: CompiledMapping, kind: CrmEventKind, e: EnrichedLead): Promise<string | undefined> {
  const template = m.eventTemplates[kind];
  if (!template) return m.eventNames[kind];
  return (await template.render(e)).trim() || undefined;
}

async function evaluate(set: CompiledSet, e: EnrichedLead): Promise<Attributes> {
  const values = await Promise.all(set.map(async ({ name, expr }) => [name, toAttr(await expr.evaluate(e))] as const));
  const out: Attributes = {};
  for (const [name, v] of values) if (v !== undefined) out[name] = v;
  return out;
}

function toAttr(v: MappingValue): AttrValue | undefined {
  if (!Array.isArray(v)) return v;
  return v.length ? v.filter((x) => x !== null).map(String).join(', ') : undefined;
}

/** `lists` keys may be "Pipeline / Stage", the stage name or its key (same forms as `stages:`). */
function listFor(lists: Readonly<Record<string, string>>, stage: StageInfo): string | undefined {
  return lists[`${stage.pipeline} / ${stage.name}`] ?? lists[stage.name] ?? lists[stage.key];
}

function sameName(a: string, b: string): boolean {
  return a.trim().toLowerCase() === b.trim().toLowerCase();
}

// ---------------------------------------------------------------------------------------------
// Notes in Kommo about what was sent (crmNotes)

export interface CompiledCrmNotes {
  on: ReadonlySet<CrmEventKind>;
  text: CompiledTemplate;
}

export function compileCrmNotes(cfg: NonNullable<AccountConfig['crmNotes']>, where: Where): CompiledCrmNotes {
  return {
    on: new Set(cfg.on),
    text: compileTemplate(cfg.text, whereOf(where, 'text'), { roots: [...LEAD_ROOTS, 'destinations', 'sent'] }),
  };
}

/** What one destination was given for the event (its operations, in order). */
export interface SentTo {
  name: string;
  ops: readonly SyncOp[];
}

/**
 * The note to write on the lead after routing `e`, or null when the kind is not in `on`.
 * `destinations` renders as "cio, iterable"; `sent` says what went where, as
 * "iterable (identify, event deal_won, workflow 12345); cio (identify)". Both render as
 * "no destination" when empty (an account may use kommo-sync for its Kommo-side rules alone; the
 * caller skips events that went nowhere otherwise).
 */
export async function crmNoteText(notes: CompiledCrmNotes, e: EnrichedLead, sentTo: readonly SentTo[]): Promise<string | null> {
  if (!notes.on.has(e.event.kind)) return null;
  const destinations = sentTo.length ? sentTo.map((d) => d.name).join(', ') : 'no destination';
  const sent = sentTo.length ? sentTo.map((d) => `${d.name} (${d.ops.map(describeSyncOp).join(', ')})`).join('; ') : 'no destination';
  return notes.text.render({ ...e, destinations, sent });
}
