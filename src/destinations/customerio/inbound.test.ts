import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { before, describe, it } from 'node:test';
import { InboundRejected, type InboundRequest } from '../types.js';
import { customerio } from './index.js';
import { parseCio, verifyCio } from './inbound.js';

const jane = { email: 'jane@example.com', id: 'kommo-contact-7' };

describe('customerio webhook signature', () => {
  const key = 'whsec-test-key';
  const body = Buffer.from(readFileSync(fixture('email-opened.json')));
  const now = 1_613_063_100_000;
  const ts = String(now / 1000);
  const sign = (k: string, t: string, b: Buffer) => createHmac('sha256', k).update(`v0:${t}:${b.toString('utf8')}`).digest('hex');
  const reqWith = (headers: Record<string, string>, at = now): InboundRequest => ({ rawBody: body, headers, query: {}, now: at });
  const rejected = (fn: () => void, code: string) => assert.throws(fn, (e: unknown) => e instanceof InboundRejected && e.status === 401 && e.code === code);

  it('accepts a good signature, in either hex case', () => {
    verifyCio(reqWith({ 'x-cio-timestamp': ts, 'x-cio-signature': sign(key, ts, body) }), { webhookSigningKey: key });
    verifyCio(reqWith({ 'X-CIO-Timestamp': ts, 'X-CIO-Signature': sign(key, ts, body).toUpperCase() }), { webhookSigningKey: key });
  });

  it('rejects a bad, stale, future or missing signature', () => {
    rejected(() => verifyCio(reqWith({ 'x-cio-timestamp': ts, 'x-cio-signature': sign('other-key', ts, body) }), { webhookSigningKey: key }), 'invalid_signature');
    rejected(() => verifyCio(reqWith({ 'x-cio-timestamp': ts, 'x-cio-signature': 'not-hex' }), { webhookSigningKey: key }), 'invalid_signature');
    const tampered: InboundRequest = { ...reqWith({ 'x-cio-timestamp': ts, 'x-cio-signature': sign(key, ts, body) }), rawBody: Buffer.concat([body, Buffer.from(' ')]) };
    rejected(() => verifyCio(tampered, { webhookSigningKey: key }), 'invalid_signature');
    rejected(() => verifyCio(reqWith({ 'x-cio-timestamp': ts, 'x-cio-signature': sign(key, ts, body) }, now + 5 * 60_000 + 1000), { webhookSigningKey: key }), 'stale_timestamp');
    rejected(() => verifyCio(reqWith({ 'x-cio-timestamp': ts, 'x-cio-signature': sign(key, ts, body) }, now - 6 * 60_000), { webhookSigningKey: key }), 'stale_timestamp');
    rejected(() => verifyCio(reqWith({ 'x-cio-signature': sign(key, ts, body) }), { webhookSigningKey: key }), 'missing_signature');
    rejected(() => verifyCio(reqWith({ 'x-cio-timestamp': 'yesterday', 'x-cio-signature': sign(key, 'yesterday', body) }), { webhookSigningKey: key }), 'invalid_timestamp');
  });

  it('skips verification when no signing key is configured (the path secret guards it)', () => {
    verifyCio(reqWith({}), {});
  });
});

describe('customerio webhook parsing', () => {
  const table: Array<{ file: string; want: Record<string, unknown> | undefined }> = [
    { file: 'email-opened.json', want: { kind: 'email.opened', email: 'jane.doe@example.com', subject: 'Your proposal from Acme', campaign: 'campaign:23', occurredAt: 1_613_063_089_000 } },
    { file: 'email-clicked.json', want: { kind: 'email.clicked', email: 'jane.doe@example.com', link: 'https://acme.example/pricing?utm_source=cio', campaign: 'broadcast:9' } },
    { file: 'email-converted.json', want: { kind: 'email.converted', email: 'jane.doe@example.com' } },
    { file: 'email-delivered.json', want: { kind: 'email.delivered', email: 'jane.doe@example.com' } },
    { file: 'email-sent.json', want: { kind: 'email.sent', email: 'jane.doe@example.com', campaign: 'broadcast:9' } },
    { file: 'email-unsubscribed.json', want: { kind: 'email.unsubscribed', email: 'jane.doe@example.com' } },
    { file: 'customer-unsubscribed.json', want: { kind: 'email.unsubscribed', email: 'jane.doe@example.com' } },
    { file: 'customer-subscribed.json', want: { kind: 'email.subscribed', email: 'test@example.com', vendorEventId: '01E4C4CT6YDC7Y5M7FE1GWWPQJ' } },
    { file: 'email-bounced.json', want: { kind: 'email.bounced', email: 'gone@example.com', detail: '550 5.1.1 The email account that you tried to reach does not exist.', campaign: 'newsletter:10' } },
    { file: 'email-dropped.json', want: { kind: 'email.dropped', email: 'bounced.before@example.com', detail: 'Address is suppressed (previous hard bounce)' } },
    { file: 'email-undeliverable.json', want: { kind: 'email.failed', email: 'bounced.before@example.com', detail: 'Address is suppressed (previous hard bounce)' } },
    { file: 'email-spammed.json', want: { kind: 'email.spammed', email: 'annoyed@example.com' } },
    { file: 'email-failed.json', want: { kind: 'email.failed', email: 'template.bug@example.com', campaign: 'transactional:3' } },
    { file: 'sms-clicked.json', want: undefined },
    { file: 'customer-unsubscribed-no-email.json', want: undefined },
    { file: 'email-drafted.json', want: { kind: 'vendor.other', detail: 'drafted', email: 'jane.doe@example.com' } },
  ];
  for (const row of table) {
    it(`${row.file} -> ${row.want ? String(row.want.kind) : 'nothing'}`, () => {
      const raw = readFileSync(fixture(row.file));
      const parsed = parseCio({ rawBody: raw, headers: {}, query: {}, now: 0 }, 'cio');
      if (!row.want) return assert.deepEqual(parsed, []);
      const eventId = (JSON.parse(raw.toString('utf8')) as { event_id: string }).event_id;
      assert.equal(parsed.length, 1);
      assert.equal(parsed[0]?.dedupKey, `cio:${eventId}`);
      assert.deepEqual(pick(parsed[0]?.event, ['type', 'source', 'vendorEventId', ...Object.keys(row.want)]), { type: 'engagement', source: 'cio', vendorEventId: eventId, ...row.want });
    });
  }

  it('rejects a body that is not JSON, and drops JSON it cannot use', () => {
    assert.throws(() => parseCio({ rawBody: Buffer.from('metric=opened'), headers: {}, query: {}, now: 0 }, 'cio'), (e: unknown) => e instanceof InboundRejected && e.status === 400 && e.code === 'invalid_json');
    assert.deepEqual(parseCio({ rawBody: Buffer.from('{"hello":"world"}'), headers: {}, query: {}, now: 0 }, 'cio'), []);
  });

  it('an open Customer.io flags as proxied, prefetched or machine is a machine open; a plain one is not', () => {
    const opened = JSON.parse(readFileSync(fixture('email-opened.json'), 'utf8')) as { data: Record<string, unknown> };
    const machineOf = (extra: Record<string, unknown>) => {
      const body = Buffer.from(JSON.stringify({ ...opened, data: { ...opened.data, ...extra } }));
      const ev = parseCio({ rawBody: body, headers: {}, query: {}, now: 0 }, 'cio')[0]?.event;
      return ev?.type === 'engagement' ? ev.machine === true : undefined;
    };
    assert.equal(machineOf({}), false);
    for (const flag of ['proxied', 'prefetched', 'machine']) {
      assert.equal(machineOf({ [flag]: true }), true, flag);
      assert.equal(machineOf({ [flag]: false }), false, `${flag}: false`);
    }
  });

  it('accepts an array of events (bulk mode is UNCONFIRMED, so tolerated)', () => {
    const one = readFileSync(fixture('email-opened.json'), 'utf8');
    const two = readFileSync(fixture('email-clicked.json'), 'utf8');
    const parsed = parseCio({ rawBody: Buffer.from(`[${one},${two}]`), headers: {}, query: {}, now: 0 }, 'cio');
    assert.deepEqual(parsed.map((p) => p.event.kind), ['email.opened', 'email.clicked']);
  });
});

function fixture(name: string): URL {
  return new URL(`../../../test/fixtures/customerio/${name}`, import.meta.url);
}


function pick(obj: object | undefined, keys: string[]): Record<string, unknown> {
  const source = (obj ?? {}) as Record<string, unknown>;
  return Object.fromEntries(keys.filter((k) => k in source).map((k) => [k, source[k]]));
}
