/**
 * Moosend automation webhooks -> EngagementEvents.
 *
 * Moosend has no account-level webhook with a documented payload. What exists is the automation
 * action "post a webhook": the user pastes our URL into it, naming the kind in the query string
 * (`?event=unsubscribed`). Its body is UNCONFIRMED, so it is read tolerantly: JSON or a form, the
 * email found under any usual key (`Email`, `EmailAddress`, `Subscriber.Email`, …) or, failing
 * that, as the one address in the body. No signature exists: the secret URL path is the only guard.
 */
import { createHash } from 'node:crypto';
import { isEmail, normalizeEmail, type EngagementKind } from '../../model/index.js';
import { InboundRejected, type InboundParsed, type InboundRequest } from '../types.js';
import { parseMoosendDate } from './envelope.js';

/**
 * One key per person for an unsubscribe, shared by the webhook and the sweep, so whichever path
 * sees it first handles it and the other is a duplicate. Per email, not per list: the Kommo rule
 * is about the person, and an account-wide unsubscribe shows in every list.
 */
export function unsubscribeKey(source: string, email: string): string {
  return `moosend:${source}:unsubscribed:${emailKey(email)}`;
}

/**
 * The person's part of a dedup key: a hash, not the address. A dedup key outlives `erase` (it must
 * keep stopping a re-sent webhook), so it may not hold personal data.
 */
function emailKey(email: string): string {
  return createHash('sha256').update(email).digest('hex').slice(0, 24);
}

/** `?event=` values (and body `Event`/`EventType` values), lower-cased without punctuation. */
const KINDS: ReadonlyMap<string, EngagementKind> = new Map<string, EngagementKind>([
  ...['unsubscribed', 'unsubscribe', 'unsubscribeevent', 'unsub', 'optout', 'optedout'].map((k) => [k, 'email.unsubscribed'] as const),
  ...['opened', 'open', 'emailopened', 'openevent'].map((k) => [k, 'email.opened'] as const),
  ...['clicked', 'click', 'linkclicked', 'clickevent'].map((k) => [k, 'email.clicked'] as const),
  ...['bounced', 'bounce', 'hardbounce', 'softbounce', 'bounceevent'].map((k) => [k, 'email.bounced'] as const),
  ...['subscribed', 'subscribe', 'subscribeevent'].map((k) => [k, 'email.subscribed'] as const),
  ...['spam', 'spammed', 'complaint', 'complained', 'spamcomplaint', 'markedasspam'].map((k) => [k, 'email.spammed'] as const),
  ...['sent', 'emailsent'].map((k) => [k, 'email.sent'] as const),
  ...['delivered', 'emaildelivered'].map((k) => [k, 'email.delivered'] as const),
]);

/** The kinds a user can name in the URL, for error messages. */
export const EVENT_NAMES = ['unsubscribed', 'opened', 'clicked', 'bounced', 'subscribed', 'spam', 'sent', 'delivered'];

const MAX_DEPTH = 5;
/** Keys whose value is the subscriber's address (the last segment of `Subscriber[Email]` too). */
const EMAIL_KEY = /^(e-?mail|email_?address|subscriber_?email|contact_?email(_?address)?|member_?email|recipient(_?email)?)$/i;
/** Parents whose email is the subscriber's rather than, say, the sender's. */
const PERSON_PARENT = /^(subscriber|member|contact|recipient|person|to)$/i;
const SUBJECT_KEY = /^(subject|campaign_?subject|email_?subject)$/i;
const CAMPAIGN_KEY = /^(campaign_?name|campaign_?id|campaign|automation_?name)$/i;
const LINK_KEY = /^(link|url|clicked_?link|clicked_?url|link_?url)$/i;
const TIME_KEY = /^(timestamp|date|time|occurred_?(on|at)|triggered_?(on|at)|unsubscribed_?on|event_?date)$/i;
const ID_KEY = /^(event_?id|message_?id|webhook_?id|delivery_?id)$/i;
const DETAIL_KEY = /^(reason|bounce_?reason|bounce_?type|description)$/i;
const LIST_KEY = /^(mailing_?list_?id|list_?id|mailing_?list_?name|list_?name)$/i;

type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

export function parseMoosend(req: InboundRequest, sourceName: string): InboundParsed[] {
  const body = readBody(req);
  const items = Array.isArray(body) ? body : [body];
  return items.map((item) => toEngagement(item, req, sourceName));
}

function readBody(req: InboundRequest): Json {
  const type = header(req.headers, 'content-type') ?? '';
  const text = req.rawBody.toString('utf8');
  if (/x-www-form-urlencoded/i.test(type)) return readForm(text);
  try {
    return JSON.parse(text) as Json;
  } catch {
    // Unlabelled bodies: a form is the other thing an automation step may post.
    if (!/json/i.test(type) && /^[^=&\s{[<]+=/.test(text.trim())) return readForm(text);
    throw new InboundRejected(400, 'invalid_body', 'Moosend webhook body is neither JSON nor a form');
  }
}

/** Form fields as an object; `Subscriber[Email]` stays one key (the finder reads its last segment). */
function readForm(text: string): Json {
  const out: Record<string, Json> = {};
  for (const [k, v] of new URLSearchParams(text)) out[k] = v;
  return out;
}

function toEngagement(item: Json, req: InboundRequest, source: string): InboundParsed {
  const found = walk(item);
  const kindName = req.query.event ?? found.find((f) => /^(event|event_?type|type)$/i.test(f.key) && typeof f.value === 'string')?.value;
  if (kindName === undefined || String(kindName).trim() === '') {
    throw new InboundRejected(400, 'missing_event', `name the kind in the webhook URL, e.g. ?event=unsubscribed (one of ${EVENT_NAMES.join(', ')})`);
  }
  const kind = KINDS.get(String(kindName).toLowerCase().replace(/[^a-z]/g, ''));
  if (!kind) throw new InboundRejected(400, 'unknown_event', `unknown event "${String(kindName)}"; expected one of ${EVENT_NAMES.join(', ')}`);
  const email = findEmail(found);
  if (!email) throw new InboundRejected(400, 'no_email', 'no subscriber email address in the Moosend webhook body');

  const text = (re: RegExp, parent?: RegExp) => found.find((f) => re.test(f.key) && (!parent || parent.test(f.parent)) && (typeof f.value === 'string' || typeof f.value === 'number') && String(f.value).trim() !== '')?.value;
  const subject = text(SUBJECT_KEY);
  const campaign = text(CAMPAIGN_KEY) ?? text(/^(name|id)$/i, /^campaign$/i);
  const link = text(LINK_KEY);
  const list = text(LIST_KEY) ?? text(/^(name|id)$/i, /^mailing_?list$/i);
  const reason = text(DETAIL_KEY);
  const eventId = text(ID_KEY);
  const time = found.map((f) => (TIME_KEY.test(f.key) ? parseMoosendDate(f.value) : undefined)).find((t) => t !== undefined);
  const detail = kind === 'email.bounced' && reason !== undefined ? String(reason) : list !== undefined ? `list ${String(list)}` : undefined;

  // Without an id of its own, the body is the event's identity; without a time in it as well, the
  // minute it arrived separates two genuine events with identical bodies (a re-sent one is dropped).
  const identity = eventId !== undefined ? String(eventId)
    : createHash('sha256').update(req.rawBody).update(time === undefined ? `\n${Math.floor(req.now / 60_000)}` : '').digest('hex').slice(0, 24);
  const short = kind.slice(kind.indexOf('.') + 1);
  return {
    dedupKey: kind === 'email.unsubscribed' ? unsubscribeKey(source, email) : `moosend:${source}:${short}:${emailKey(email)}:${identity}`,
    event: {
      type: 'engagement',
      kind,
      email,
      occurredAt: time ?? req.now,
      vendorEventId: identity,
      source,
      ...(subject !== undefined ? { subject: String(subject) } : {}),
      ...(link !== undefined ? { link: String(link) } : {}),
      ...(campaign !== undefined ? { campaign: String(campaign) } : {}),
      ...(detail !== undefined ? { detail } : {}),
    },
  };
}

interface Found {
  /** The key's last segment (`Email` for `Subscriber[Email]`). */
  key: string;
  /** The enclosing key's last segment ('' at the top). */
  parent: string;
  depth: number;
  value: Json;
}

/** Every key/value pair, breadth-first (shallow keys first), down to MAX_DEPTH. */
function walk(root: Json): Found[] {
  const out: Found[] = [];
  let level: Array<{ value: Json; parent: string }> = [{ value: root, parent: '' }];
  for (let depth = 0; depth <= MAX_DEPTH && level.length; depth++) {
    const next: typeof level = [];
    for (const { value, parent } of level) {
      if (Array.isArray(value)) {
        for (const v of value) next.push({ value: v, parent });
      } else if (value !== null && typeof value === 'object') {
        for (const [rawKey, v] of Object.entries(value)) {
          const segments = rawKey.split(/[[\].]+/).filter(Boolean);
          const key = segments[segments.length - 1] ?? rawKey;
          const owner = segments.length > 1 ? segments[segments.length - 2]! : parent;
          out.push({ key, parent: owner, depth, value: v });
          next.push({ value: v, parent: key });
        }
      }
    }
    level = next;
  }
  return out;
}

/**
 * The subscriber's address: an email-named key (shallowest first, a subscriber-like parent
 * winning a tie), else the only distinct address anywhere in the body. Lower-cased.
 */
function findEmail(found: Found[]): string | undefined {
  const named = found.filter((f) => EMAIL_KEY.test(f.key) && typeof f.value === 'string' && isEmail(f.value));
  if (named.length) {
    const depth = Math.min(...named.map((f) => f.depth));
    const shallow = named.filter((f) => f.depth === depth);
    const best = shallow.find((f) => PERSON_PARENT.test(f.parent)) ?? shallow[0]!;
    return normalizeEmail(String(best.value));
  }
  const any = new Set(found.filter((f) => typeof f.value === 'string' && isEmail(f.value)).map((f) => normalizeEmail(String(f.value))));
  return any.size === 1 ? [...any][0] : undefined;
}

function header(headers: InboundRequest['headers'], name: string): string | undefined {
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name);
  const value = key === undefined ? undefined : headers[key];
  return (Array.isArray(value) ? value[0] : value)?.trim() || undefined;
}
