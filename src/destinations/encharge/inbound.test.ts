import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { InboundRejected, type InboundRequest } from '../types.js';
import { classifyEvent, parseEncharge, UNTIMED_DEDUP_WINDOW_MS } from './inbound.js';

const NOW = 1_767_300_000_000;

function req(body: string | Buffer, query: Record<string, string> = {}, now = NOW): InboundRequest {
  return { rawBody: Buffer.isBuffer(body) ? body : Buffer.from(body), headers: { 'content-type': 'application/json' }, query, now };
}
const fixture = (name: string): Buffer => readFileSync(new URL(`../../../test/fixtures/encharge/${name}`, import.meta.url));

describe('encharge webhook parsing', () => {
  const table: Array<{ file: string; event?: string; want: Array<Record<string, unknown>> }> = [
    { file: 'unsubscribed-user.json', event: 'unsubscribedUser', want: [{ kind: 'email.unsubscribed', email: 'jane.doe@example.com', occurredAt: NOW }] },
    { file: 'added-tag.json', event: 'added-tag-clicked-pricing', want: [{ kind: 'tag.added', email: 'jane.doe@example.com', detail: 'clicked-pricing' }] },
    { file: 'removed-tag.json', event: 'removed-tag-trial', want: [{ kind: 'tag.removed', email: 'jane.doe@example.com', detail: 'trial' }] },
    { file: 'updated-user.json', event: 'updatedUser', want: [] },
    { file: 'updated-user.json', event: 'newUser', want: [] },
    {
      file: 'added-tag-two-people.json', event: 'added-tag-visited-pricing',
      want: [{ kind: 'tag.added', email: 'ann@example.com', detail: 'visited-pricing' }, { kind: 'tag.added', email: 'bob@example.com', detail: 'visited-pricing' }],
    },
    {
      file: 'activity-email-opened.json',
      want: [{ kind: 'email.opened', email: 'jane.doe@example.com', campaign: 'Proposal', subject: 'Your proposal from Acme', occurredAt: 1_767_225_600_123 }],
    },
    {
      file: 'activity-email-clicked.json',
      want: [{ kind: 'email.clicked', campaign: 'Pricing follow-up', subject: 'Plans for Acme', link: 'https://acme.example/pricing?utm_source=encharge' }],
    },
    {
      file: 'activity-email-bounced.json',
      want: [{ kind: 'email.bounced', email: 'gone@example.com', campaign: 'email 53', detail: '550 5.1.1 The email account that you tried to reach does not exist.', occurredAt: 1_767_225_700_000 }],
    },
    { file: 'activity-added-tag.json', want: [{ kind: 'tag.added', detail: 'clicked-pricing', occurredAt: 1_767_225_800_000 }] },
    { file: 'activity-page-visited.json', want: [] },
    { file: 'activity-sms-sent.json', want: [] },
    {
      file: 'flat-email-clicked.json',
      want: [{ kind: 'email.clicked', campaign: 'proposal', subject: 'Your proposal from Acme', link: 'https://acme.example/pricing', occurredAt: 1_767_226_100_000 }],
    },
  ];
  for (const row of table) {
    it(`${row.file}${row.event ? `?event=${row.event}` : ''} -> ${row.want.map((w) => String(w.kind)).join(', ') || 'nothing'}`, () => {
      const parsed = parseEncharge(req(fixture(row.file), row.event ? { event: row.event } : {}), 'enc');
      assert.equal(parsed.length, row.want.length, JSON.stringify(parsed));
      parsed.forEach((p, i) => {
        const want = row.want[i]!;
        assert.deepEqual(pick(p.event, ['type', 'source', ...Object.keys(want)]), { type: 'engagement', source: 'enc', ...want });
        assert.equal(p.dedupKey, `encharge:${p.event.vendorEventId}`);
      });
    });
  }

  it('reads the event name from the body when the URL has none, and drops an envelope that names no event', () => {
    const body = JSON.parse(fixture('added-tag.json').toString('utf8')) as Record<string, unknown>;
    const named = parseEncharge(req(JSON.stringify({ ...body, eventType: 'added-tag-clicked-pricing' })), 'enc');
    assert.deepEqual(named.map((p) => [p.event.kind, p.event.detail]), [['tag.added', 'clicked-pricing']]);
    // Added or removed? Without a name we cannot tell, and a removed tag must never become a signal.
    assert.deepEqual(parseEncharge(req(fixture('added-tag.json')), 'enc'), []);
  });

  it('the tag in the event payload wins over the one spelled in the event name', () => {
    const [p] = parseEncharge(req(fixture('added-tag.json'), { event: 'added-tag-Clicked-Pricing' }), 'enc');
    assert.equal(p?.event.detail, 'clicked-pricing', 'the name is what we subscribed, the payload what Encharge says happened');
    const [q] = parseEncharge(req(JSON.stringify({ endUserData: [{ email: 'a@b.co' }], eventPayload: {} }), { event: 'added-tag-demo' }), 'enc');
    assert.equal(q?.event.detail, 'demo');
  });

  it('the same delivery twice has one dedup key; another person, tag, time or window another', () => {
    const key = (body: Buffer | string, event: string, now = NOW) => parseEncharge(req(body, { event }, now), 'enc').map((p) => p.dedupKey);
    const tagged = fixture('added-tag.json');
    assert.deepEqual(key(tagged, 'added-tag-clicked-pricing'), key(tagged, 'added-tag-clicked-pricing', NOW + 1000));
    assert.notDeepEqual(key(tagged, 'added-tag-clicked-pricing'), key(tagged, 'added-tag-clicked-pricing', NOW + UNTIMED_DEDUP_WINDOW_MS));
    assert.notDeepEqual(key(tagged, 'added-tag-clicked-pricing'), key(tagged, 'removed-tag-clicked-pricing'));
    const two = key(fixture('added-tag-two-people.json'), 'added-tag-visited-pricing');
    assert.equal(new Set(two).size, 2);
    const opened = JSON.parse(fixture('activity-email-opened.json').toString('utf8')) as Record<string, unknown>;
    const a = parseEncharge(req(JSON.stringify(opened)), 'enc')[0]!.dedupKey;
    const b = parseEncharge(req(JSON.stringify(opened), {}, NOW + UNTIMED_DEDUP_WINDOW_MS * 5), 'enc')[0]!.dedupKey;
    const c = parseEncharge(req(JSON.stringify({ ...opened, timestamp: 1_767_225_600_124 })), 'enc')[0]!.dedupKey;
    assert.equal(a, b, 'a timed event keeps its key whenever it arrives');
    assert.notEqual(a, c);
    const withId = parseEncharge(req(JSON.stringify({ ...opened, eventId: 'evt-42' })), 'enc')[0]!;
    assert.deepEqual([withId.dedupKey, withId.event.vendorEventId], ['encharge:evt-42', 'evt-42']);
  });

  it('accepts an array of events', () => {
    const parsed = parseEncharge(req(`[${fixture('activity-email-opened.json').toString('utf8')},${fixture('activity-email-clicked.json').toString('utf8')}]`), 'enc');
    assert.deepEqual(parsed.map((p) => p.event.kind), ['email.opened', 'email.clicked']);
  });

  it('rejects a body that is not JSON, and drops JSON it cannot use', () => {
    assert.throws(() => parseEncharge(req('event=opened'), 'enc'), (e: unknown) => e instanceof InboundRejected && e.status === 400 && e.code === 'invalid_json');
    assert.deepEqual(parseEncharge(req('{"hello":"world"}'), 'enc'), []);
    assert.deepEqual(parseEncharge(req('"text"'), 'enc'), []);
    assert.deepEqual(parseEncharge(req(JSON.stringify({ name: 'email-opened', properties: { emailId: 1 } })), 'enc'), [], 'no email, no lead to match');
  });
});

describe('encharge event names, matched tolerantly', () => {
  const table: Array<[string, string | undefined, boolean, string | undefined, string?]> = [
    ['unsubscribedUser', undefined, false, 'email.unsubscribed'],
    ['added-tag-clicked-pricing', undefined, false, 'tag.added', 'clicked-pricing'],
    ['Added Tag: VIP lead', undefined, false, 'tag.added', 'VIP lead'],
    ['removed-tag-trial', undefined, false, 'tag.removed', 'trial'],
    ['tagged', 'tag', false, 'tag.added'],
    ['untagged', 'tag', false, 'tag.removed'],
    ['newUser', undefined, false, undefined],
    ['updatedUser', 'updatedUser', false, undefined],
    ['email-opened', 'email', true, 'email.opened'],
    ['Opened email', undefined, false, 'email.opened'],
    ['emailOpened', undefined, false, 'email.opened'],
    ['email_open', undefined, false, 'email.opened'],
    ['opened', undefined, false, 'email.opened'],
    ['link-clicked', undefined, false, 'email.clicked'],
    ['clickedLink', undefined, false, 'email.clicked'],
    ['hardBounce', undefined, false, 'email.bounced'],
    ['spam-report', undefined, false, 'email.spammed'],
    ['email-delivered', undefined, false, 'email.delivered'],
    ['email-sent', undefined, false, 'email.sent'],
    ['sent', 'email', false, 'email.sent'],
    ['sent', undefined, false, undefined],
    ['invoice-sent', undefined, false, undefined],
    ['sms-sent', 'sms', false, undefined],
    ['sms-failed', undefined, false, undefined],
    ['page-visited', 'page', false, undefined],
    ['form-submitted', undefined, false, undefined],
    ['native-form-submitted-123', undefined, false, undefined],
  ];
  for (const [name, type, hint, kind, tag] of table) {
    it(`${name}${type ? ` (type ${type})` : ''} -> ${kind ?? 'nothing'}`, () => {
      const got = classifyEvent(name, type, hint);
      assert.equal(got?.kind, kind);
      if (tag) assert.equal(got?.tag, tag);
    });
  }
});

function pick(obj: object | undefined, keys: string[]): Record<string, unknown> {
  const source = (obj ?? {}) as Record<string, unknown>;
  return Object.fromEntries(keys.filter((k) => k in source).map((k) => [k, source[k]]));
}
