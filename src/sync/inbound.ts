/**
 * Marketing tool -> Kommo: engagement events (opens, clicks, unsubscribes, bounces) become Kommo
 * writes (notes, tasks, contact fields and tags, stage moves), the same rules for every vendor.
 * Pure apart from the injected lookups and the store's counters.
 */
import { z } from 'zod';
import type { DestinationCommon, EngagementConfig } from '../config/schema.js';
import type { KommoOp } from '../model/index.js';
import { engagementEventSchema, type EngagementEvent, type EngagementKind } from '../model/index.js';
import { compileTemplate, humanDuration, MappingError, whereOf, type CompiledTemplate, type Where } from './mapping.js';

/** Kommo's fixed status ids for closed leads, in every pipeline. */
export const WON_STATUS = 142;
export const LOST_STATUS = 143;

export interface LeadMatch {
  leadId: number;
  /** The contact carrying the email; null when it could not be told (then contact writes are skipped). */
  contactId: number | null;
  responsibleUserId: number;
  pipelineId: number;
  statusId: number;
}

export interface LeadRow {
  id: number;
  statusId: number;
  pipelineId: number;
  updatedAt: number;
  responsibleUserId: number;
  closed: boolean;
  /**
   * The lead's main contact, when the loader read it (`with=contacts`). Used as the contact of a
   * match found through the email index, which stores no contact ids: the index is filled from
   * synced leads, whose person is the main contact.
   */
  mainContactId?: number | null;
}

export interface FindLeadDeps {
  /** Lead ids the local email index knows, most recently updated first. */
  indexed(email: string): Promise<number[]>;
  /** Kommo contacts whose email is exactly this one, with their lead ids. */
  searchContacts(email: string): Promise<Array<{ id: number; leadIds: number[] }>>;
  /** Missing (deleted) ids are simply absent from the answer. */
  getLeads(ids: number[]): Promise<LeadRow[]>;
  remember(email: string, leadId: number, updatedAt: number): Promise<void>;
}

/**
 * The lead an engagement event is about: the email index first (no Kommo call to search), then
 * Kommo's contact search. With several leads, an open one wins over won/lost ones (a click on a
 * deal already closed is rarely news for that deal), then the most recently updated.
 */
export async function findLeadForEmail(email: string, deps: FindLeadDeps): Promise<LeadMatch | null> {
  const known = await deps.indexed(email);
  if (known.length) {
    const best = pickLead(await deps.getLeads(known));
    // Index rows can be stale (lead deleted): then fall through to the search.
    if (best) return toMatch(best, best.mainContactId ?? null);
  }

  const contacts = await deps.searchContacts(email);
  const leadIds = [...new Set(contacts.flatMap((c) => c.leadIds))];
  if (!leadIds.length) return null;
  const best = pickLead(await deps.getLeads(leadIds));
  if (!best) return null;
  const contact = contacts.find((c) => c.leadIds.includes(best.id));
  await deps.remember(email, best.id, best.updatedAt);
  return toMatch(best, contact?.id ?? null);
}

function isOpen(l: LeadRow): boolean {
  return !l.closed && l.statusId !== WON_STATUS && l.statusId !== LOST_STATUS;
}

function pickLead(leads: LeadRow[]): LeadRow | undefined {
  return [...leads].sort((a, b) => Number(isOpen(b)) - Number(isOpen(a)) || b.updatedAt - a.updatedAt || b.id - a.id)[0];
}

function toMatch(l: LeadRow, contactId: number | null): LeadMatch {
  return { leadId: l.id, contactId, responsibleUserId: l.responsibleUserId, pipelineId: l.pipelineId, statusId: l.statusId };
}

// ---------------------------------------------------------------------------------------------
// Rules

/** Names usable in engagement task templates (`{{count}}`, `{{within}}`, `{{email}}`, `{{signal}}`, `{{lead.id}}`, ...). */
export const ENGAGEMENT_ROOTS = ['count', 'within', 'email', 'source', 'subject', 'link', 'campaign', 'detail', 'signal', 'event', 'lead', 'contact'] as const;

/** What engagement templates see (templateInput builds it): their paths are checked against it at load. */
const engagementTemplateInput = z.object({
  count: z.number().optional(),
  within: z.string().optional(),
  signal: z.string().optional(),
  email: z.string(),
  source: z.string(),
  subject: z.string().optional(),
  link: z.string().optional(),
  campaign: z.string().optional(),
  detail: z.string().optional(),
  event: engagementEventSchema,
  lead: z.object({ id: z.number(), responsibleUserId: z.number(), pipelineId: z.number(), statusId: z.number() }),
  contact: z.object({ id: z.number() }).nullable(),
});
const ENGAGEMENT_TEMPLATES = { roots: ENGAGEMENT_ROOTS, input: engagementTemplateInput };

export interface ContactFieldRef {
  fieldId?: number;
  fieldCode?: string;
}

export interface EngagementResolver {
  /** Throws (with a near-name suggestion) when the contact field does not exist. */
  contactField(nameOrCode: string): ContactFieldRef;
  /** Throws when the stage does not exist. */
  stage(name: string): { pipelineId: number; statusId: number };
}

export interface EngagementRules {
  /** Kinds that get a note on the lead. */
  notes: ReadonlySet<EngagementKind>;
  hotLead?: {
    on: EngagementKind;
    count: number;
    withinMs: number;
    cooldownMs: number;
    task: { text: CompiledTemplate; dueMs: number; typeId: number };
  };
  unsubscribe?: {
    field?: ContactFieldRef;
    value: string | number | boolean;
    tag?: string;
    note: boolean;
    task?: { text: CompiledTemplate; dueMs: number };
    moveTo?: { pipelineId: number; statusId: number };
  };
  bounce?: { tag: string; note: boolean };
  /** Suppress the person in every other destination when one tool reports an opt-out (default on). */
  propagateOptOut: boolean;
  /** Intent signals per source (the destination name the webhook came in on). */
  signals: ReadonlyMap<string, CompiledSignals>;
}

export interface CompiledSignals {
  /** Lower-cased tag names. */
  tags: ReadonlySet<string>;
  /** Lower-cased email names, matched as substrings of the event's campaign, subject or detail. */
  emails: readonly string[];
  task: { text: CompiledTemplate; dueMs: number; typeId: number };
  cooldownMs: number;
}

export type SignalsConfig = NonNullable<DestinationCommon['signals']>;

/** Engagement kinds that mean "stop emailing me", wherever they were reported. */
export const OPT_OUT_KINDS: ReadonlySet<EngagementKind> = new Set<EngagementKind>(['email.unsubscribed', 'email.spammed']);

/** Kommo task type "follow-up call": unsubscribe tasks have no type setting. */
const FOLLOW_UP = 1;

export function compileEngagementRules(
  cfg: EngagementConfig,
  resolve: EngagementResolver,
  where: Where,
  signals: ReadonlyArray<{ source: string; cfg: SignalsConfig; where: Where }> = [],
): EngagementRules {
  const tpl = (text: string, sub: string) => compileTemplate(text, whereOf(where, sub), ENGAGEMENT_TEMPLATES);
  const lookup = <T>(sub: string, fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      if (err instanceof MappingError) throw err;
      const at = whereOf(where, sub);
      throw new MappingError(`${at}: ${err instanceof Error ? err.message : String(err)}`, at);
    }
  };

  const rules: EngagementRules = {
    notes: new Set(cfg.notes),
    propagateOptOut: cfg.unsubscribe?.propagate ?? true,
    signals: new Map(signals.map((s) => [s.source, {
      tags: new Set(s.cfg.tags.map((t) => t.trim().toLowerCase())),
      emails: s.cfg.emails.map((e) => e.trim().toLowerCase()),
      task: {
        text: compileTemplate(s.cfg.task.text, whereOf(s.where, 'task.text'), ENGAGEMENT_TEMPLATES),
        dueMs: s.cfg.task.due,
        typeId: s.cfg.task.typeId,
      },
      cooldownMs: s.cfg.cooldown,
    }])),
  };
  const h = cfg.hotLead;
  if (h) {
    rules.hotLead = {
      on: h.on,
      count: h.count,
      withinMs: h.within,
      cooldownMs: h.cooldown,
      task: { text: tpl(h.task.text, 'hotLead.task.text'), dueMs: h.task.due, typeId: h.task.typeId },
    };
  }
  const u = cfg.unsubscribe;
  if (u) {
    const field = u.contactField;
    const moveTo = u.moveToStage;
    rules.unsubscribe = {
      value: u.value,
      note: u.note,
      ...(field ? { field: lookup('unsubscribe.contactField', () => resolve.contactField(field)) } : {}),
      ...(u.tag ? { tag: u.tag } : {}),
      ...(u.task ? { task: { text: tpl(u.task.text, 'unsubscribe.task.text'), dueMs: u.task.due } } : {}),
      ...(moveTo ? { moveTo: lookup('unsubscribe.moveToStage', () => resolve.stage(moveTo)) } : {}),
    };
  }
  if (cfg.bounce) rules.bounce = { tag: cfg.bounce.tag, note: cfg.bounce.note };
  return rules;
}

export interface EngagementDeps {
  /**
   * The store's counters (Store.hitCounter / tryMark), so hot-lead counts survive restarts and are
   * shared by every worker. Keys name only the lead id (`hot:<leadId>`): wire them scoped to the
   * Kommo account (lead ids are per account), e.g. by prefixing the account name.
   */
  hitCounter(key: string, at: number, windowMs: number): Promise<number>;
  tryMark(key: string, now: number, ttlMs: number): Promise<boolean>;
}

/**
 * The Kommo writes for one engagement event on its matched lead. Order: contact changes, note,
 * tasks, stage move. A re-delivered webhook is dropped at intake (vendor event id), so counting
 * here does not double; a crash mid-job can repeat a note (docs/guarantees.md).
 */
export async function planEngagement(
  ev: EngagementEvent,
  match: LeadMatch,
  rules: EngagementRules,
  deps: EngagementDeps,
  now: number,
): Promise<KommoOp[]> {
  const ops: KommoOp[] = [];
  const leadId = match.leadId;
  const dueAt = (ms: number) => Math.floor((now + ms) / 1000);
  const input = (extra: { count?: number; within?: string; signal?: string }) => templateInput(ev, match, extra);

  // A spam complaint is the strongest opt-out there is: the same rule as an unsubscribe.
  const unsub = OPT_OUT_KINDS.has(ev.kind) ? rules.unsubscribe : undefined;
  const bounce = ev.kind === 'email.bounced' ? rules.bounce : undefined;

  if (match.contactId !== null) {
    if (unsub && (unsub.field || unsub.tag)) {
      ops.push({
        kind: 'updateContact',
        contactId: match.contactId,
        ...(unsub.field ? { fields: [{ ...unsub.field, value: unsub.value }] } : {}),
        ...(unsub.tag ? { tagsToAdd: [unsub.tag] } : {}),
      });
    }
    if (bounce) ops.push({ kind: 'updateContact', contactId: match.contactId, tagsToAdd: [bounce.tag] });
  }

  // A configured unsubscribe/bounce rule decides its own note (`note: false` silences it);
  // otherwise the `notes` list does. At most one note per event.
  // A signal writes its own note (naming the signal) instead of the event's usual one.
  let signalled = false;
  const signal = signalOf(ev, rules.signals.get(ev.source));
  if (signal) {
    const sig = rules.signals.get(ev.source)!;
    // One signal task per lead per cooldown, whichever tool signalled (the mark is per lead).
    if (await deps.tryMark(`signal-task:${leadId}`, now, sig.cooldownMs)) {
      signalled = true;
      ops.push({ kind: 'addNote', leadId, text: `Intent signal: ${signal} (${ev.email}, via ${ev.source})` });
      ops.push({
        kind: 'addTask',
        leadId,
        text: await sig.task.text.render(input({ signal })),
        completeTill: dueAt(sig.task.dueMs),
        responsibleUserId: match.responsibleUserId,
        taskTypeId: sig.task.typeId,
      });
    }
  }

  const rule = unsub ?? bounce;
  if (!signalled && (rule ? rule.note : rules.notes.has(ev.kind))) ops.push({ kind: 'addNote', leadId, text: noteText(ev) });

  const hot = rules.hotLead;
  // A machine open (privacy proxy, prefetch) or a scanner's click says nothing about the person.
  if (hot && ev.kind === hot.on && !ev.machine) {
    const count = await deps.hitCounter(`hot:${leadId}`, ev.occurredAt, hot.withinMs);
    // The mark is the cooldown: only the call that sets it creates a task, across workers too.
    if (count >= hot.count && (await deps.tryMark(`hot-task:${leadId}`, now, hot.cooldownMs))) {
      ops.push({
        kind: 'addTask',
        leadId,
        text: await hot.task.text.render(input({ count, within: humanDuration(hot.withinMs) })),
        completeTill: dueAt(hot.task.dueMs),
        responsibleUserId: match.responsibleUserId,
        taskTypeId: hot.task.typeId,
      });
    }
  }

  if (unsub?.task) {
    ops.push({
      kind: 'addTask',
      leadId,
      text: await unsub.task.text.render(input({})),
      completeTill: dueAt(unsub.task.dueMs),
      responsibleUserId: match.responsibleUserId,
      taskTypeId: FOLLOW_UP,
    });
  }
  // Won and lost deals are not reopened by an unsubscribe; a lead already there is not moved.
  const to = unsub?.moveTo;
  const closed = match.statusId === WON_STATUS || match.statusId === LOST_STATUS;
  if (to && !closed && !(to.pipelineId === match.pipelineId && to.statusId === match.statusId)) {
    ops.push({ kind: 'moveLead', leadId, pipelineId: to.pipelineId, statusId: to.statusId });
  }
  return ops;
}

/**
 * What the event signals, in words ("tag clicked-pricing", "clicked the Proposal email"), or
 * undefined when it matches none of the source's signals.
 */
export function signalOf(ev: EngagementEvent, signals: CompiledSignals | undefined): string | undefined {
  if (!signals) return undefined;
  if (ev.kind === 'tag.added' && ev.detail && signals.tags.has(ev.detail.trim().toLowerCase())) return `tag ${ev.detail.trim()}`;
  if ((ev.kind === 'email.opened' || ev.kind === 'email.clicked') && !ev.machine) {
    const names = [ev.campaign, ev.subject, ev.detail].filter((x): x is string => Boolean(x)).map((x) => x.toLowerCase());
    const hit = signals.emails.find((e) => names.some((n) => n.includes(e)));
    if (hit) return `${ev.kind === 'email.opened' ? 'opened' : 'clicked'} the "${hit}" email${ev.link ? ` (${ev.link})` : ''}`;
  }
  return undefined;
}

function templateInput(ev: EngagementEvent, match: LeadMatch, extra: { count?: number; within?: string; signal?: string }): z.input<typeof engagementTemplateInput> {
  return {
    ...extra,
    email: ev.email,
    source: ev.source,
    subject: ev.subject,
    link: ev.link,
    campaign: ev.campaign,
    detail: ev.detail,
    event: ev,
    lead: { id: match.leadId, responsibleUserId: match.responsibleUserId, pipelineId: match.pipelineId, statusId: match.statusId },
    contact: match.contactId === null ? null : { id: match.contactId },
  };
}

/** "Email opened: Spring offer (via cio)". The source says which tool saw it. */
export function noteText(ev: EngagementEvent): string {
  const s = ev.subject;
  const d = ev.detail;
  const withPart = (label: string, part: string | undefined) => (part ? `${label}: ${part}` : label);
  const text: Record<EngagementKind, string> = {
    'email.sent': withPart('Email sent', s),
    'email.delivered': withPart('Email delivered', s),
    'email.opened': withPart('Email opened', s),
    'email.clicked': withPart('Email link clicked', ev.link) + (s ? ` (${s})` : ''),
    'email.converted': withPart('Email converted', s),
    // How and where, when the tool says (Iterable: "EmailLink, channel 27447"; Moosend: the list).
    'email.unsubscribed': withPart('Unsubscribed from email', d),
    'email.subscribed': withPart('Subscribed to email', d),
    'email.bounced': withPart('Email bounced', d),
    'email.dropped': withPart('Email dropped', d),
    'email.spammed': 'Email marked as spam',
    'email.failed': withPart('Email failed', d),
    'journey.milestone': withPart('Journey milestone', d),
    'message.clicked': withPart('Message link clicked', ev.link) + (d ? ` (${d})` : ''),
    'message.bounced': withPart('Message bounced', d),
    'tag.added': withPart('Tagged', d && `"${d}"`),
    'tag.removed': withPart('Tag removed', d && `"${d}"`),
    'vendor.other': withPart('Event', d),
  };
  return `${text[ev.kind]}${ev.machine ? ' [automated: not counted as engagement]' : ''} (via ${ev.source})`;
}
