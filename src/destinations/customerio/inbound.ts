/**
 * Customer.io reporting webhooks -> EngagementEvents.
 *
 * Customer.io holds back every later webhook until a failed one succeeds (for up to 7 days), so we
 * refuse only what is wrong with the *request* (bad signature, stale timestamp, not JSON). A JSON
 * event we cannot use (unknown metric, other channel, no email, unexpected shape) is acknowledged
 * and dropped: refusing it would stall the whole stream for a week.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { normalizeEmail, type EngagementKind } from '../../model/index.js';
import { InboundRejected, type InboundParsed, type InboundRequest } from '../types.js';
import type { CustomerioSettings } from './settings.js';

/** Our choice (Customer.io documents no replay window): the same 5 minutes both ways. */
export const TIMESTAMP_TOLERANCE_MS = 5 * 60_000;

/**
 * Checks `X-CIO-Signature` = hex HMAC-SHA256(signing key, `v0:<X-CIO-Timestamp>:<raw body>`).
 * Without a configured signing key there is nothing to check: the secret URL path is the only guard.
 */
export function verifyCio(req: InboundRequest, settings: Pick<CustomerioSettings, 'webhookSigningKey'>): void {
  const key = settings.webhookSigningKey;
  if (!key) return;
  const signature = header(req.headers, 'x-cio-signature');
  const timestamp = header(req.headers, 'x-cio-timestamp');
  if (!signature || !timestamp) {
    throw new InboundRejected(401, 'missing_signature', 'X-CIO-Signature and X-CIO-Timestamp headers are required');
  }
  if (!/^\d+$/.test(timestamp)) throw new InboundRejected(401, 'invalid_timestamp', 'X-CIO-Timestamp must be unix seconds');
  if (Math.abs(req.now - Number(timestamp) * 1000) > TIMESTAMP_TOLERANCE_MS) {
    throw new InboundRejected(401, 'stale_timestamp', 'X-CIO-Timestamp is more than 5 minutes away from our clock');
  }
  // Hex is what every known receiver uses (UNCONFIRMED in Customer.io's text); either case is fine.
  const expected = createHmac('sha256', key).update(`v0:${timestamp}:`).update(req.rawBody).digest();
  const given = /^[0-9a-f]{64}$/i.test(signature) ? Buffer.from(signature, 'hex') : undefined;
  if (!given || !timingSafeEqual(given, expected)) {
    throw new InboundRejected(401, 'invalid_signature', 'X-CIO-Signature does not match the webhook signing key');
  }
}

const METRIC_KINDS = new Map<string, EngagementKind>([
  ['sent', 'email.sent'],
  ['delivered', 'email.delivered'],
  ['opened', 'email.opened'],
  ['clicked', 'email.clicked'],
  ['converted', 'email.converted'],
  ['unsubscribed', 'email.unsubscribed'],
  ['subscribed', 'email.subscribed'],
  ['bounced', 'email.bounced'],
  ['dropped', 'email.dropped'],
  ['spammed', 'email.spammed'],
  ['failed', 'email.failed'],
  // Never sent (invalid address, a suppression): Customer.io's own failure, as far as we act on it.
  ['undeliverable', 'email.failed'],
]);

/** Subscription changes are about the person, whichever channel (object_type) caused them. */
const PERSON_METRICS = new Set(['subscribed', 'unsubscribed']);

// Tolerant field readers: a field of an unexpected type is dropped, it does not sink the event.
const text = z.string().nullish().catch(undefined);
const idLike = z.union([z.string(), z.number()]).transform(String).nullish().catch(undefined);

const envelope = z.looseObject({
  event_id: z.union([z.string().min(1), z.number()]).transform(String),
  object_type: text,
  metric: z.string(),
  timestamp: z.union([z.number(), z.string().regex(/^\d+$/).transform(Number)]).optional().catch(undefined),
  data: z.looseObject({
    identifiers: z.looseObject({ email: text, id: idLike }).nullish().catch(undefined),
    recipient: text,
    email_address: text,
    subject: text,
    href: text,
    failure_message: text,
    // Opens by privacy proxies and prefetchers, and clicks by link scanners, are flagged (UNCONFIRMED
    // which of these every account gets; any one set to true marks the event a machine's).
    proxied: z.boolean().nullish().catch(undefined),
    prefetched: z.boolean().nullish().catch(undefined),
    machine: z.boolean().nullish().catch(undefined),
    campaign_id: idLike,
    broadcast_id: idLike,
    newsletter_id: idLike,
    transactional_message_id: idLike,
  }).catch({}),
});

/** One event per request; an array is accepted too, in case a bulk mode exists (UNCONFIRMED). */
export function parseCio(req: InboundRequest, sourceName: string): InboundParsed[] {
  let body: unknown;
  try {
    body = JSON.parse(req.rawBody.toString('utf8'));
  } catch {
    throw new InboundRejected(400, 'invalid_json', 'Customer.io webhook body is not JSON');
  }
  const items = Array.isArray(body) ? body : [body];
  return items.flatMap((item) => {
    const parsed = envelope.safeParse(item);
    return parsed.success ? toEngagement(parsed.data, sourceName, req.now) : [];
  });
}

function toEngagement(e: z.infer<typeof envelope>, source: string, now: number): InboundParsed[] {
  // A metric we have no rule for is kept as `vendor.other` (stored and counted, not dropped).
  const kind = METRIC_KINDS.get(e.metric) ?? 'vendor.other';
  if (!PERSON_METRICS.has(e.metric) && e.object_type && e.object_type !== 'email') return [];
  const d = e.data;
  // identifiers.email is null in id-only workspaces; recipient is the address the message went to.
  const found = [d.identifiers?.email, d.recipient, d.email_address].find((v) => v?.includes('@'));
  if (!found) return [];
  const email = normalizeEmail(found);
  const machine = d.proxied === true || d.prefetched === true || d.machine === true;
  const campaign = d.campaign_id ? `campaign:${d.campaign_id}`
    : d.broadcast_id ? `broadcast:${d.broadcast_id}`
    : d.newsletter_id ? `newsletter:${d.newsletter_id}`
    : d.transactional_message_id ? `transactional:${d.transactional_message_id}`
    : undefined;
  return [{
    dedupKey: `cio:${e.event_id}`,
    event: {
      type: 'engagement',
      kind,
      email,
      occurredAt: e.timestamp !== undefined ? e.timestamp * 1000 : now,
      vendorEventId: e.event_id,
      source,
      ...(d.subject ? { subject: d.subject } : {}),
      ...(d.href ? { link: d.href } : {}),
      ...(campaign ? { campaign } : {}),
      ...(kind === 'vendor.other' ? { detail: e.metric } : d.failure_message ? { detail: d.failure_message } : {}),
      ...(machine ? { machine } : {}),
    },
  }];
}

function header(headers: InboundRequest['headers'], name: string): string | undefined {
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name);
  const value = key === undefined ? undefined : headers[key];
  return (Array.isArray(value) ? value[0] : value)?.trim() || undefined;
}
