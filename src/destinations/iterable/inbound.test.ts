import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { InboundRejected, type InboundRequest } from '../types.js';
import { iterable } from './index.js';
import { iterableSettings } from './settings.js';
import { carriesToken, parseCreatedAt, parseIterable, verifyIterable } from './inbound.js';

const MILESTONES = ['Completed onboarding'];

function fixture(name: string): Buffer {
  return readFileSync(new URL(`../../../test/fixtures/iterable/${name}`, import.meta.url));
}
function req(rawBody: Buffer | string, headers: Record<string, string> = {}): InboundRequest {
  return { rawBody: Buffer.isBuffer(rawBody) ? rawBody : Buffer.from(rawBody), headers, query: {}, now: 1_700_000_000_000 };
}
const rejected = (fn: () => void, status: number, code: string) =>
  assert.throws(fn, (e: unknown) => e instanceof InboundRejected && e.status === status && e.code === code);

describe('iterable webhook Authorization', () => {
  const token = 'itbl-hook-token-0123456789';
  const settings = { webhookAuthToken: token };

  it('accepts the token after any auth type, bare, or the whole value pasted into the setting', () => {
    for (const value of [`OAuth2 ${token}`, `Basic ${token}`, `Bearer ${token}`, token, `  OAuth2   ${token}  `]) {
      verifyIterable(req('{}', { authorization: value }), settings);
    }
    verifyIterable(req('{}', { Authorization: `OAuth2 ${token}` }), { webhookAuthToken: `OAuth2 ${token}` });
  });

  it('refuses a missing or wrong token with 401', () => {
    rejected(() => verifyIterable(req('{}'), settings), 401, 'missing_token');
    rejected(() => verifyIterable(req('{}', { authorization: 'OAuth2 not-the-token' }), settings), 401, 'invalid_token');
    rejected(() => verifyIterable(req('{}', { authorization: `OAuth2 ${token}x` }), settings), 401, 'invalid_token');
    rejected(() => verifyIterable(req('{}', { authorization: token.slice(0, -1) }), settings), 401, 'invalid_token');
  });

  it('checks nothing when no token is configured (the URL secret guards)', () => {
    verifyIterable(req('{}'), {});
  });

  it('compares whole values only', () => {
    assert.equal(carriesToken('OAuth2 abc', 'abc'), true);
    assert.equal(carriesToken('OAuth2 abcd', 'abc'), false);
    assert.equal(carriesToken('abc', 'ab'), false);
    assert.equal(carriesToken('', 'abc'), false);
  });
});

describe('iterable webhook parsing', () => {
  const table: Array<{ file: string; want?: Record<string, unknown> }> = [
    { file: 'email-open.json', want: { kind: 'email.opened', email: 'jane.doe@example.com', subject: 'Your proposal from Acme', campaign: 'Proposal follow-up', occurredAt: Date.UTC(2024, 4, 6, 14, 22, 31) } },
    { file: 'email-click.json', want: { kind: 'email.clicked', link: 'https://acme.example/pricing?utm_source=iterable', subject: 'Your proposal from Acme' } },
    { file: 'email-unsubscribe.json', want: { kind: 'email.unsubscribed', detail: 'EmailLink, channel 31001' } },
    { file: 'hosted-unsubscribe-click.json', want: { kind: 'email.unsubscribed', detail: 'hosted unsubscribe page' } },
    { file: 'email-complaint.json', want: { kind: 'email.spammed', email: 'annoyed@example.com', subject: 'Spring offer' } },
    { file: 'email-bounce.json', want: { kind: 'email.bounced', email: 'gone@example.com', detail: '550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown' } },
    { file: 'email-bounce-no-message.json', want: { kind: 'email.bounced', detail: 'SoftBounce 4.2.2', campaign: 'campaign:7740' } },
    { file: 'email-send.json', want: { kind: 'email.sent' } },
    { file: 'in-app-click.json', want: { kind: 'message.clicked', detail: 'in-app', campaign: 'campaign:7800' } },
    { file: 'sms-bounce.json', want: { kind: 'message.bounced', detail: 'SMS: Unreachable destination handset' } },
    { file: 'push-bounce.json', want: { kind: 'message.bounced', detail: 'push' } },
    { file: 'custom-milestone.json', want: { kind: 'journey.milestone', detail: 'completed onboarding', occurredAt: Date.UTC(2024, 4, 10, 9, 0, 0) } },
    // Stored and ignored (vendor.other, named): events we do not map, custom events not configured.
    { file: 'email-send-skip.json', want: { kind: 'vendor.other', detail: 'emailSendSkip' } },
    { file: 'custom-other.json', want: { kind: 'vendor.other', detail: 'viewed pricing page' } },
    // Acknowledged and dropped: no email, nothing to match.
    { file: 'user-id-only.json' },
  ];
  for (const row of table) {
    it(`${row.file} -> ${row.want ? String(row.want.kind) : 'nothing'}`, () => {
      const parsed = parseIterable(req(fixture(row.file)), 'iterable', MILESTONES);
      if (!row.want) return assert.deepEqual(parsed, []);
      assert.equal(parsed.length, 1);
      const { dedupKey, event } = parsed[0]!;
      assert.equal(dedupKey, `iterable:${event.vendorEventId}`);
      assert.ok(event.vendorEventId.length >= 16);
      const got = Object.fromEntries(Object.keys(row.want).map((k) => [k, (event as Record<string, unknown>)[k]]));
      assert.deepEqual(got, row.want);
      assert.equal(event.source, 'iterable');
      assert.equal(event.machine, undefined, 'Iterable documents no machine-open flag');
    });
  }

  it('gives a redelivered webhook the same key, whatever the key order, and different events different keys', () => {
    const open = JSON.parse(fixture('email-open.json').toString('utf8')) as { dataFields: Record<string, unknown> };
    const reordered = { dataFields: Object.fromEntries(Object.entries(open.dataFields).reverse()), eventName: 'emailOpen', email: 'Jane.Doe@Example.com' };
    const key = (body: unknown) => parseIterable(req(JSON.stringify(body)), 'iterable', [])[0]!.dedupKey;
    assert.equal(key(open), key(reordered));
    assert.notEqual(key(open), key({ ...open, dataFields: { ...open.dataFields, createdAt: '2024-05-06 14:22:32 +00:00' } }), 'a second open of the same message');
  });

  it('gives both unsubscribe events of one message the same key (one note)', () => {
    const a = parseIterable(req(fixture('email-unsubscribe.json')), 'iterable', []);
    const b = parseIterable(req(fixture('hosted-unsubscribe-click.json')), 'iterable', []);
    assert.equal(a[0]!.dedupKey, b[0]!.dedupKey);
  });

  it('uses an event id when the body carries one', () => {
    const parsed = parseIterable(req(JSON.stringify({ email: 'a@example.com', eventName: 'emailOpen', eventId: 'evt-42', dataFields: {} })), 'itbl', []);
    assert.equal(parsed[0]?.dedupKey, 'iterable:evt-42');
  });

  it('matches event names case-insensitively (emailUnsubscribe is tolerated too)', () => {
    const parsed = parseIterable(req(JSON.stringify({ email: 'a@example.com', eventName: 'emailUnsubscribe', dataFields: {} })), 'itbl', []);
    assert.equal(parsed[0]?.event.kind, 'email.unsubscribed');
  });

  it('refuses a body that is not JSON (400) and drops JSON it cannot use', () => {
    rejected(() => parseIterable(req('eventName=emailOpen'), 'iterable', []), 400, 'invalid_json');
    assert.deepEqual(parseIterable(req('{"hello":"world"}'), 'iterable', []), []);
    assert.deepEqual(parseIterable(req('"emailOpen"'), 'iterable', []), []);
  });

  it('accepts an array of events (no bulk mode is documented; tolerated)', () => {
    const body = `[${fixture('email-open.json').toString('utf8')},${fixture('email-click.json').toString('utf8')}]`;
    assert.deepEqual(parseIterable(req(body), 'iterable', []).map((p) => p.event.kind), ['email.opened', 'email.clicked']);
  });

  it('the destination parse takes the milestone names from the settings', () => {
    const settingsWith = (milestones: string[]) => iterableSettings.parse({ apiKey: 'k', milestones });
    assert.equal(iterable.inbound.parse(req(fixture('custom-milestone.json')), 'iterable', settingsWith(['completed onboarding']))[0]?.event.kind, 'journey.milestone');
    // A custom event nobody named a milestone is not one: it is kept as vendor.other.
    assert.equal(iterable.inbound.parse(req(fixture('custom-milestone.json')), 'iterable', settingsWith([]))[0]?.event.kind, 'vendor.other');
  });

  it('reads Iterable times, ISO times and unix seconds or milliseconds', () => {
    assert.equal(parseCreatedAt('2016-12-02 20:21:04 +00:00'), Date.UTC(2016, 11, 2, 20, 21, 4));
    assert.equal(parseCreatedAt('2016-12-02 22:21:04 +02:00'), Date.UTC(2016, 11, 2, 20, 21, 4));
    assert.equal(parseCreatedAt('2016-12-02T20:21:04Z'), Date.UTC(2016, 11, 2, 20, 21, 4));
    assert.equal(parseCreatedAt('2016-12-02 20:21:04 +0000'), Date.UTC(2016, 11, 2, 20, 21, 4));
    assert.equal(parseCreatedAt(1_480_710_064), 1_480_710_064_000);
    assert.equal(parseCreatedAt('1480710064000'), 1_480_710_064_000);
    assert.equal(parseCreatedAt('yesterday'), undefined);
    assert.equal(parseCreatedAt(undefined), undefined);
  });
});
