/**
 * Iterable system webhooks -> EngagementEvents.
 *
 * Iterable posts one flat JSON object per event: `{email, userId?, eventName, dataFields{}}`. It
 * signs nothing; the webhook may carry an `Authorization` value configured on it (`<authType>
 * <authToken>`, or the bare token), checked here when `webhookAuthToken` is set. We refuse only what
 * is wrong with the request (bad token: 401, not JSON: 400). JSON we cannot use (an event name we
 * do not map, no email) is acknowledged and dropped, so Iterable does not keep retrying it.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { normalizeEmail, type EngagementEvent, type EngagementKind } from '../../model/index.js';
import { InboundRejected, type InboundParsed, type InboundRequest } from '../types.js';
import type { IterableSettings } from './settings.js';
import { isRecord } from '../../model/json.js';

export function verifyIterable(req: InboundRequest, settings: Pick<IterableSettings, 'webhookAuthToken'>): void {
  const token = settings.webhookAuthToken;
  if (!token) return;
  const given = header(req.headers, 'authorization');
  if (!given) throw new InboundRejected(401, 'missing_token', 'the Authorization header is required: webhookAuthToken is set for this source');
  if (!carriesToken(given, token)) throw new InboundRejected(401, 'invalid_token', 'the Authorization header does not carry the configured webhookAuthToken');
}

/**
 * Iterable sends `Authorization: <authType> <authToken>` (OAuth2, Basic), though its Basic example
 * shows the bare token (UNCONFIRMED): either form is accepted, and so is the whole value pasted into
 * the setting. Digests of equal length, compared in constant time, both forms always computed.
 */
export function carriesToken(headerValue: string, token: string): boolean {
  const want = digest(token.trim());
  const whole = headerValue.trim();
  const space = whole.search(/\s/);
  const afterScheme = space >= 0 ? whole.slice(space).trim() : '';
  const a = timingSafeEqual(digest(whole), want);
  const b = timingSafeEqual(digest(afterScheme), want);
  return a || b;
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** Iterable's system event names (mind the capitals: `emailUnSubscribe`) -> our kinds. */
const SYSTEM_EVENTS = new Map<string, { kind: EngagementKind; channel?: string }>([
  ['emailsend', { kind: 'email.sent' }],
  ['emailopen', { kind: 'email.opened' }],
  ['emailclick', { kind: 'email.clicked' }],
  ['emailunsubscribe', { kind: 'email.unsubscribed' }],
  ['hostedunsubscribeclick', { kind: 'email.unsubscribed' }],
  ['emailsubscribe', { kind: 'email.subscribed' }],
  ['emailcomplaint', { kind: 'email.spammed' }],
  ['emailbounce', { kind: 'email.bounced' }],
  ['inappclick', { kind: 'message.clicked', channel: 'in-app' }],
  ['smsclick', { kind: 'message.clicked', channel: 'SMS' }],
  ['webpushclick', { kind: 'message.clicked', channel: 'web push' }],
  ['smsbounce', { kind: 'message.bounced', channel: 'SMS' }],
  ['pushbounce', { kind: 'message.bounced', channel: 'push' }],
]);

/** Every system event name Iterable documents: a custom event (milestone) cannot take these. */
const DOCUMENTED_SYSTEM_NAMES = new Set([
  'emailsend', 'emailopen', 'emailclick', 'hostedunsubscribeclick', 'emailcomplaint', 'emailbounce', 'emailsendskip',
  'emailsubscribe', 'emailunsubscribe', 'pushsend', 'pushopen', 'pushuninstall', 'pushbounce', 'pushsendskip', 'inappsend',
  'inappopen', 'inappclick', 'inappclose', 'inappdelete', 'inappdelivery', 'inappsendskip', 'inapprecall', 'smssend',
  'smsbounce', 'smsclick', 'smsreceived', 'smssendskip', 'webpushsend', 'webpushclick', 'webpushsendskip',
]);

// Tolerant field readers: a field of an unexpected type is dropped, it does not sink the event.
const text = z.string().trim().min(1).nullish().catch(undefined);
const idLike = z.union([z.string().trim().min(1), z.number()]).transform(String).nullish().catch(undefined);
const when = z.union([z.string(), z.number()]).nullish().catch(undefined);

const payload = z.looseObject({
  eventName: z.string().trim().min(1),
  email: text,
  userId: idLike,
  // Iterable sends no event id we know of (UNCONFIRMED); these are read in case one appears.
  eventId: idLike,
  dataFields: z.looseObject({
    email: text,
    eventId: idLike,
    createdAt: when,
    emailSubject: text,
    campaignId: idLike,
    campaignName: text,
    messageId: idLike,
    url: text,
    linkUrl: text,
    clickedUrl: text,
    unsubSource: text,
    channelId: idLike,
    bounceMessage: text,
    recipientState: text,
    status: idLike,
    reason: text,
  }).catch({}),
});
type Payload = z.infer<typeof payload>;

/** The Destination's `parse`: the configured milestone names come from the settings. */
export function parseIterableRequest(req: InboundRequest, sourceName: string, settings: Pick<IterableSettings, 'milestones'>): InboundParsed[] {
  return parseIterable(req, sourceName, settings.milestones ?? []);
}

/** One event per request; an array is accepted too (no bulk mode is documented, UNCONFIRMED). */
export function parseIterable(req: InboundRequest, sourceName: string, milestones: readonly string[]): InboundParsed[] {
  let body: unknown;
  try {
    body = JSON.parse(req.rawBody.toString('utf8'));
  } catch {
    throw new InboundRejected(400, 'invalid_json', 'Iterable webhook body is not JSON');
  }
  const wanted = new Set(milestones.map((m) => m.trim().toLowerCase()));
  const items = Array.isArray(body) ? body : [body];
  return items.flatMap((item: unknown) => {
    const parsed = payload.safeParse(item);
    return parsed.success ? toEngagement(parsed.data, item, sourceName, req.now, wanted) : [];
  });
}

function toEngagement(p: Payload, raw: unknown, source: string, now: number, milestones: ReadonlySet<string>): InboundParsed[] {
  const name = p.eventName.toLowerCase();
  const system = SYSTEM_EVENTS.get(name);
  const milestone = !system && !DOCUMENTED_SYSTEM_NAMES.has(name) && milestones.has(name);
  const d = p.dataFields;
  const found = [p.email, d.email].find((v) => v?.includes('@'));
  // Without an address the event cannot be matched to a lead (userId-only events).
  if (!found) return [];
  const email = normalizeEmail(found);
  // Any other event name is stored as vendor.other (counted, never looked up in Kommo): an event
  // we have no rule for is kept (the stored event says what arrived), not dropped.
  const kind: EngagementKind = system ? system.kind : milestone ? 'journey.milestone' : 'vendor.other';

  const event: EngagementEvent = {
    type: 'engagement',
    kind,
    email,
    occurredAt: parseCreatedAt(d.createdAt) ?? now,
    vendorEventId: '',
    source,
  };
  const campaign = d.campaignName ?? (d.campaignId ? `campaign:${d.campaignId}` : undefined);
  if (campaign) event.campaign = campaign;
  if (kind.startsWith('email.') && d.emailSubject) event.subject = d.emailSubject;
  const link = d.url ?? d.linkUrl ?? d.clickedUrl;
  if ((kind === 'email.clicked' || kind === 'message.clicked') && link) event.link = link;
  const detail = kind === 'vendor.other' ? p.eventName : detailOf(kind, p, system?.channel);
  if (detail) event.detail = detail;

  const own = p.eventId ?? d.eventId;
  const unsubscribe = kind === 'email.unsubscribed' && d.messageId;
  // No event id from Iterable: a hash of the body is the same for a redelivered webhook. Both
  // unsubscribe events Iterable may send for one unsubscribe (hosted page click, emailUnSubscribe)
  // share a key when they name the message, so the person gets one note.
  const id = own ?? (unsubscribe ? `unsub-${hash(['unsubscribe', email, d.messageId])}` : hash([p.eventName, email, p.userId ?? null, canonical(isRecord(raw) ? raw.dataFields : null)]));
  event.vendorEventId = id;
  return [{ dedupKey: `iterable:${id}`, event }];
}

function detailOf(kind: EngagementKind, p: Payload, channel: string | undefined): string | undefined {
  const d = p.dataFields;
  switch (kind) {
    case 'email.unsubscribed': {
      // The note says "Unsubscribed from email (via <source>)"; detail keeps how and which channel.
      const how = p.eventName.toLowerCase() === 'hostedunsubscribeclick' ? 'hosted unsubscribe page' : d.unsubSource;
      return [how, d.channelId ? `channel ${d.channelId}` : undefined].filter(Boolean).join(', ') || undefined;
    }
    case 'email.bounced':
      return d.bounceMessage ?? ([d.recipientState, d.status].filter(Boolean).join(' ') || undefined);
    case 'message.clicked':
      return channel;
    case 'message.bounced': {
      const why = d.bounceMessage ?? d.reason ?? d.recipientState;
      return why ? `${channel}: ${why}` : channel;
    }
    case 'journey.milestone':
      return p.eventName;
    default:
      return undefined;
  }
}

const ITERABLE_TIME_RE = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*(Z|[+-]\d{2}:?\d{2})?$/i;

/**
 * Iterable writes `createdAt` as "2016-12-02 20:21:04 +00:00". ISO strings and unix seconds or
 * milliseconds are read too; anything else leaves the time of receipt.
 */
export function parseCreatedAt(value: string | number | null | undefined): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value > 0 ? (value < 1e12 ? value * 1000 : value) : undefined;
  if (typeof value !== 'string') return undefined;
  const v = value.trim();
  if (/^\d+(\.\d+)?$/.test(v)) return parseCreatedAt(Number(v));
  const m = ITERABLE_TIME_RE.exec(v);
  if (!m) return undefined;
  const zone = m[3] ? (m[3].toUpperCase() === 'Z' ? 'Z' : m[3].replace(/^([+-]\d{2})(\d{2})$/, '$1:$2')) : 'Z';
  const at = Date.parse(`${m[1]}T${m[2]}${zone}`);
  return Number.isNaN(at) ? undefined : at;
}

function hash(parts: unknown[]): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 32);
}

/** JSON with sorted keys, so the same content hashes the same whatever the key order. */
function canonical(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(canonical);
  if (isRecord(v)) return Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonical(v[k])]));
  return v;
}

function header(headers: InboundRequest['headers'], name: string): string | undefined {
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name);
  const value = key === undefined ? undefined : headers[key];
  return (Array.isArray(value) ? value[0] : value)?.trim() || undefined;
}
