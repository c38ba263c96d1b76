/** The fake vendor's webhooks: a token header, one JSON event per request. */
import { timingSafeEqual } from 'node:crypto';
import { normalizeEmail, type EngagementKind } from '../../../src/model/index.js';
import { InboundRejected, type InboundParsed, type InboundRequest } from '../../../src/destinations/types.js';
import type { FakeSettings } from './settings.js';

const KINDS: Record<string, EngagementKind> = { opened: 'email.opened', clicked: 'email.clicked', unsubscribed: 'email.unsubscribed', bounced: 'email.bounced' };

export function verifyFake(req: InboundRequest, settings: Pick<FakeSettings, 'webhookToken'>): void {
  if (!settings.webhookToken) return;
  const raw = req.headers['x-fake-webhook-token'];
  const given = Buffer.from(Array.isArray(raw) ? raw[0] ?? '' : raw ?? '');
  const want = Buffer.from(settings.webhookToken);
  if (given.length !== want.length || !timingSafeEqual(given, want)) throw new InboundRejected(401, 'invalid_token', 'X-Fake-Webhook-Token does not match');
}

export function parseFake(req: InboundRequest, source: string): InboundParsed[] {
  let body: { id?: string; type?: string; email?: string; at?: number; subject?: string; link?: string; machine?: boolean };
  try {
    body = JSON.parse(req.rawBody.toString('utf8')) as typeof body;
  } catch {
    throw new InboundRejected(400, 'invalid_json', 'body is not JSON');
  }
  const kind = body.type ? KINDS[body.type] : undefined;
  if (!kind || !body.email || !body.id) return [];
  return [{
    dedupKey: `fake:${body.id}`,
    event: {
      type: 'engagement',
      kind,
      email: normalizeEmail(body.email),
      occurredAt: body.at ?? req.now,
      vendorEventId: body.id,
      source,
      ...(body.subject ? { subject: body.subject } : {}),
      ...(body.link ? { link: body.link } : {}),
      ...(body.machine ? { machine: true } : {}),
    },
  }];
}
