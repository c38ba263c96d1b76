/**
 * Encharge webhooks -> EngagementEvents. Three shapes reach the same URL, all read tolerantly
 * because Encharge documents them loosely (README.md, "UNCONFIRMED"):
 *
 * 1. Event subscriptions (`POST /event-subscriptions`): `{endUserData: [person, …], eventPayload}`.
 *    The body does not say which event it is, so `doctor --fix` subscribes a URL per event type
 *    with `?event=<eventType>`; a name inside the body (`eventType`, `event`, `name`) is read too.
 * 2. The Activity Stream add-on: one event per request (an array is accepted too) with `name`,
 *    `type`, a millisecond `timestamp`, the person's id and email, and `properties`
 *    (`emailId`, the email's name and subject, `url`, `tag`, …).
 * 3. A flat `{event, email, subject, link, campaign, tag, timestamp}` form.
 *
 * Encharge signs nothing, so the secret URL path is the only proof of origin (`path-secret`).
 * We refuse only bodies that are not JSON; JSON we cannot use is acknowledged and dropped, so a
 * sender that retries failures is not stuck on an event we will never read.
 */
import { createHash } from 'node:crypto';
import { normalizeEmail, type EngagementEvent, type EngagementKind } from '../../model/index.js';
import { InboundRejected, type InboundParsed, type InboundRequest } from '../types.js';

/**
 * Without an event id or timestamp, identical deliveries within this window are one event. Our
 * choice: Encharge's retries (UNCONFIRMED) or a second subscription to the same event land within
 * it, while a person re-tagged or unsubscribing twice inside ten minutes changes nothing here.
 */
export const UNTIMED_DEDUP_WINDOW_MS = 10 * 60_000;

type Json = Record<string, unknown>;

export interface Classified {
  kind: EngagementKind;
  tag?: string;
}

const TAG_EVENT_RE = /^(added|removed)[-_ ]?tag[-_: ]+(.+)$/i;
/** Channels and activities that are not email engagement. */
const OTHER_CHANNELS = new Set(['sms', 'page', 'form', 'push', 'object', 'association']);
const MAIL_WORDS = new Set(['email', 'mail', 'link', 'message']);

/**
 * What an Encharge event name means to us, or undefined for events we do not use (`newUser`,
 * `updatedUser`, `page-visited`, `sms-sent`, …). Names are matched by their words, whatever the
 * spelling: `email-opened`, `Opened email`, `emailOpened`, `email_opened`, `opened`.
 */
export function classifyEvent(name: string, type: string | undefined, mailHint: boolean): Classified | undefined {
  const tagged = TAG_EVENT_RE.exec(name.trim());
  if (tagged) return { kind: tagged[1]!.toLowerCase() === 'added' ? 'tag.added' : 'tag.removed', tag: tagged[2]!.trim() };
  const words = wordsOf(name);
  const t = type?.trim().toLowerCase();
  if (words.some((w) => OTHER_CHANNELS.has(w)) || (t !== undefined && OTHER_CHANNELS.has(t))) return undefined;
  const has = (...prefixes: string[]) => words.some((w) => prefixes.some((p) => w.startsWith(p)));
  if (t === 'tag' || has('tag', 'untag')) {
    if (has('untag', 'remov', 'delet')) return { kind: 'tag.removed' };
    if (has('tag', 'add')) return { kind: 'tag.added' };
    return undefined;
  }
  if (has('unsubscrib', 'optout')) return { kind: 'email.unsubscribed' };
  if (has('resubscrib', 'subscrib')) return { kind: 'email.subscribed' };
  if (has('open')) return { kind: 'email.opened' };
  if (has('click')) return { kind: 'email.clicked' };
  if (has('bounc')) return { kind: 'email.bounced' };
  if (has('spam', 'complain')) return { kind: 'email.spammed' };
  // Words that other objects use too (an invoice is "sent"): only with a sign it is about an email.
  const mail = mailHint || t === 'email' || words.some((w) => MAIL_WORDS.has(w));
  if (!mail) return undefined;
  if (has('deliver')) return { kind: 'email.delivered' };
  if (has('sent', 'send')) return { kind: 'email.sent' };
  if (has('fail')) return { kind: 'email.failed' };
  if (has('drop')) return { kind: 'email.dropped' };
  return undefined;
}

/** `emailOpened`, `email-opened`, `Opened email` -> ['email', 'opened'] / ['opened', 'email']. */
function wordsOf(name: string): string[] {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .split(/[^A-Za-z0-9]+/)
    .filter(Boolean)
    .map((w) => w.toLowerCase());
}

export function parseEncharge(req: InboundRequest, sourceName: string): InboundParsed[] {
  let body: unknown;
  try {
    body = JSON.parse(req.rawBody.toString('utf8'));
  } catch {
    throw new InboundRejected(400, 'invalid_json', 'Encharge webhook body is not JSON');
  }
  const queryEvent = typeof req.query.event === 'string' && req.query.event.trim() ? req.query.event.trim() : undefined;
  const items = Array.isArray(body) ? body : [body];
  return items.flatMap((item) => (isRecord(item) ? parseItem(item, queryEvent, sourceName, req.now) : []));
}

/** One person's side of one event, before it becomes an EngagementEvent. */
interface Seen {
  name: string;
  email: string;
  personId?: string;
  classified: Classified;
  occurredAt?: number;
  eventId?: string;
  subject?: string;
  link?: string;
  campaign?: string;
  detail?: string;
  /** What else identifies this event when it has neither id nor timestamp (the event payload). */
  payload?: unknown;
}

function parseItem(item: Json, queryEvent: string | undefined, source: string, now: number): InboundParsed[] {
  if ('endUserData' in item) return parseSubscription(item, queryEvent).flatMap((s) => toParsed(s, source, now));
  const s = parseActivity(item, queryEvent);
  return s ? toParsed(s, source, now) : [];
}

/** `{endUserData: [person, …], eventPayload}`: one event per person. */
function parseSubscription(item: Json, queryEvent: string | undefined): Seen[] {
  const payload = isRecord(item.eventPayload) ? item.eventPayload : {};
  const name = queryEvent ?? text(item.eventType) ?? text(item.event) ?? text(item.name) ?? text(payload.eventType) ?? text(payload.event) ?? text(payload.name);
  if (!name) return [];
  const payloadTag = text(payload.tag);
  const classified = classifyEvent(name, text(payload.type), false);
  if (!classified) return [];
  // Encharge's own statement of the tag wins over our reading of the event name.
  const tag = payloadTag ?? classified.tag;
  if (classified.kind.startsWith('tag.') && !tag) return [];
  const people = Array.isArray(item.endUserData) ? item.endUserData : [item.endUserData];
  const occurredAt = timeOf(payload.timestamp ?? payload.createdAt ?? payload.date ?? item.timestamp);
  const eventId = text(item.eventId) ?? text(payload.eventId);
  return people.flatMap((person): Seen[] => {
    if (!isRecord(person)) return [];
    const email = emailOf(person.email);
    if (!email) return [];
    const personId = text(person.id) ?? text(person.userId);
    return [{
      name, email, classified, payload,
      ...(personId ? { personId } : {}),
      ...(occurredAt !== undefined ? { occurredAt } : {}),
      ...(eventId ? { eventId } : {}),
      ...(tag ? { detail: tag } : {}),
    }];
  });
}

/** An Activity Stream event or the flat form: fields in `properties` or at the top level. */
function parseActivity(item: Json, queryEvent: string | undefined): Seen | undefined {
  const props = isRecord(item.properties) ? item.properties : {};
  const name = text(item.name) ?? text(item.event) ?? text(item.eventName) ?? text(item.eventType) ?? queryEvent;
  if (!name) return undefined;
  const emailId = text(props.emailId) ?? text(item.emailId);
  const classified = classifyEvent(name, text(item.type), emailId !== undefined);
  if (!classified) return undefined;
  const user = [item.user, item.endUser, item.person, Array.isArray(item.endUserData) ? item.endUserData[0] : undefined].find(isRecord);
  const email = emailOf(item.email) ?? emailOf(user?.email) ?? emailOf(props.email) ?? emailOf(item.userEmail);
  if (!email) return undefined;
  const personId = text(item.endUserId) ?? text(item.userId) ?? text(user?.id) ?? text(user?.userId);
  const pick = (...keys: string[]): string | undefined => {
    for (const k of keys) {
      const v = text(props[k]) ?? text(item[k]);
      if (v) return v;
    }
    return undefined;
  };
  const isTag = classified.kind === 'tag.added' || classified.kind === 'tag.removed';
  const tag = pick('tag') ?? classified.tag;
  if (isTag && !tag) return undefined;
  // The email's name is what `signals.emails` names; without one, its id still tells emails apart.
  const campaign = isTag ? undefined : pick('emailName', 'email_name', 'campaign', 'campaignName', 'broadcastName') ?? (emailId ? `email ${emailId}` : undefined);
  const subject = isTag ? undefined : pick('subject', 'emailSubject');
  const link = isTag ? undefined : pick('url', 'link', 'href', 'linkUrl');
  const detail = isTag ? tag : pick('reason', 'bounceReason', 'bounceType', 'error', 'message');
  const occurredAt = timeOf(item.timestamp ?? item.time ?? item.date ?? props.timestamp);
  const eventId = text(item.eventId) ?? text(item.event_id) ?? text(item.messageId) ?? text(item.activityId);
  return {
    name, email, classified,
    ...(personId ? { personId } : {}),
    ...(occurredAt !== undefined ? { occurredAt } : {}),
    ...(eventId ? { eventId } : {}),
    ...(campaign ? { campaign } : {}),
    ...(subject ? { subject } : {}),
    ...(link ? { link } : {}),
    ...(detail ? { detail } : {}),
  };
}

function toParsed(s: Seen, source: string, now: number): InboundParsed[] {
  const vendorEventId = s.eventId ?? dedupHash(s, now);
  const event: EngagementEvent = {
    type: 'engagement',
    kind: s.classified.kind,
    email: s.email,
    occurredAt: s.occurredAt ?? now,
    vendorEventId,
    source,
    ...(s.subject ? { subject: s.subject } : {}),
    ...(s.link ? { link: s.link } : {}),
    ...(s.campaign ? { campaign: s.campaign } : {}),
    ...(s.detail ? { detail: s.detail } : {}),
  };
  return [{ dedupKey: `encharge:${vendorEventId}`, event }];
}

/**
 * A stable id for an event Encharge gave none: the same delivery (a retry, or a second
 * subscription to the same event) hashes the same, another event does not.
 */
function dedupHash(s: Seen, now: number): string {
  const when = s.occurredAt !== undefined ? `at:${s.occurredAt}` : `window:${Math.floor(now / UNTIMED_DEDUP_WINDOW_MS)}`;
  const parts = [s.name, s.classified.kind, s.email, s.personId ?? '', s.detail ?? '', s.campaign ?? '', s.link ?? '', canonical(s.payload ?? null), when];
  return createHash('sha256').update(parts.join('\n')).digest('hex').slice(0, 32);
}

/** JSON with sorted keys, so two copies of one payload serialize alike. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (isRecord(v)) return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(',')}}`;
  return JSON.stringify(v) ?? 'null';
}

/** Unix ms from ms, seconds (a number below 10^12), a numeric string or an ISO date. */
function timeOf(v: unknown): number | undefined {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d+(\.\d+)?$/.test(v.trim()) ? Number(v) : undefined;
  if (n !== undefined) return Number.isFinite(n) && n > 0 ? Math.round(n < 1e12 ? n * 1000 : n) : undefined;
  if (typeof v === 'string') {
    const at = Date.parse(v);
    return Number.isNaN(at) ? undefined : at;
  }
  return undefined;
}

function emailOf(v: unknown): string | undefined {
  return typeof v === 'string' && v.includes('@') ? normalizeEmail(v) : undefined;
}

function text(v: unknown): string | undefined {
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  return typeof v === 'string' && v.trim() ? v.trim() : undefined;
}

function isRecord(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
