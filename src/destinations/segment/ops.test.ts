import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ULID_RE } from '../../model/index.js';
import type { ItemResult, SyncOp } from '../types.js';
import {
  identifyMessageId,
  LIBRARY_CONTEXT,
  nest,
  planBatches,
  SEGMENT_WIRE,
  splitRequest,
  toMessage,
  vendorMessageId,
  type PlanOptions,
  type WireLimits,
} from './ops.js';

const T = 1_700_000_000_123; // unix ms
const ISO = '2023-11-14T22:13:20.123Z';
const SENT_AT = '2023-11-14T22:15:00.000Z';
const MID = '01HF6Z3F2V5W4X7Y8Z9A0B1C2D';
const jane = { email: 'jane@example.com', id: 'kommo-contact-7' };

const options = (extra: Partial<PlanOptions> = {}): PlanOptions => ({
  vendor: 'Segment',
  identifyBy: 'email',
  wire: SEGMENT_WIRE,
  destination: 'segment',
  sendGroups: true,
  sentAt: SENT_AT,
  unsupported: { erasePerson: 'cannot delete: use the workspace' },
  ...extra,
});

function fail(r: ItemResult | undefined): string {
  assert.ok(r && 'fail' in r, JSON.stringify(r));
  return `${r.fail.code}: ${r.fail.reason}`;
}

describe('segment ops (SyncOp -> message)', () => {
  const upsert: SyncOp = { kind: 'upsertPerson', person: jane, attributes: { email: 'jane@example.com', 'company.name': 'Acme', customer: true }, timestamp: T };
  const table: Array<{ name: string; op: SyncOp; by?: 'email' | 'id'; message: unknown }> = [
    {
      name: 'upsertPerson -> identify with nested traits and a derived messageId',
      op: upsert,
      message: {
        type: 'identify', userId: 'jane@example.com', traits: { email: 'jane@example.com', company: { name: 'Acme' }, customer: true },
        timestamp: ISO, messageId: identifyMessageId(upsert as Extract<SyncOp, { kind: 'upsertPerson' }>, 'segment'), context: LIBRARY_CONTEXT,
      },
    },
    {
      name: 'trackEvent -> track, the messageId kept',
      op: { kind: 'trackEvent', person: jane, name: 'Deal Won', properties: { deal_id: 42, amount: 1200 }, timestamp: T, messageId: MID },
      message: { type: 'track', userId: 'jane@example.com', event: 'Deal Won', properties: { deal_id: 42, amount: 1200 }, timestamp: ISO, messageId: MID, context: LIBRARY_CONTEXT },
    },
    {
      name: 'groupAccount -> group, by id',
      op: { kind: 'groupAccount', person: jane, groupId: 'kommo-company-5', traits: { name: 'Acme' }, timestamp: T, messageId: MID },
      by: 'id',
      message: { type: 'group', userId: 'kommo-contact-7', groupId: 'kommo-company-5', traits: { name: 'Acme' }, timestamp: ISO, messageId: MID, context: LIBRARY_CONTEXT },
    },
  ];
  for (const row of table) {
    it(row.name, () => {
      const plan = planBatches([row.op], options({ identifyBy: row.by ?? 'email' }));
      assert.equal(plan.decided.size, 0);
      assert.equal(plan.requests.length, 1);
      assert.deepEqual(plan.requests[0]!.body, { batch: [row.message], sentAt: SENT_AT });
      assert.deepEqual(plan.requests[0]!.opIndexes, [0]);
      assert.equal(plan.requests[0]!.bytes, Buffer.byteLength(JSON.stringify(plan.requests[0]!.body)));
    });
  }

  it('refuses locally what the vendor would drop silently, with a reason, and sends the rest', () => {
    const ops: SyncOp[] = [
      { kind: 'trackEvent', person: jane, name: '  ', properties: {}, timestamp: T, messageId: MID },
      { kind: 'upsertPerson', person: { email: '' }, attributes: {}, timestamp: T },
      { kind: 'erasePerson', person: jane },
      { kind: 'addToList', person: jane, listId: '3', attributes: {} },
      { kind: 'groupAccount', person: jane, groupId: '', traits: {}, timestamp: T, messageId: MID },
      { kind: 'trackEvent', person: jane, name: 'Lead Created', properties: {}, timestamp: T, messageId: MID },
    ];
    const plan = planBatches(ops, options());
    assert.match(fail(plan.decided.get(0)), /^invalid: event has no name; Segment drops a track call without one silently/);
    assert.match(fail(plan.decided.get(1)), /^invalid: person has no email \(identifyBy: email\); Segment drops a message without userId/);
    assert.equal(fail(plan.decided.get(2)), 'invalid: cannot delete: use the workspace');
    assert.match(fail(plan.decided.get(3)), /Segment does not support addToList/);
    assert.match(fail(plan.decided.get(4)), /no groupId/);
    assert.deepEqual(plan.requests.map((r) => r.opIndexes), [[5]]);
  });

  it('fails an op whose timestamp is not a time instead of throwing', () => {
    const plan = planBatches([{ kind: 'upsertPerson', person: jane, attributes: {}, timestamp: 9e15 }], options());
    assert.match(fail(plan.decided.get(0)), /is not a time/);
  });

  it('does not fall back to email when identifying by id', () => {
    const plan = planBatches([{ kind: 'upsertPerson', person: { email: 'a@b.c' }, attributes: {}, timestamp: T }], options({ identifyBy: 'id' }));
    assert.match(fail(plan.decided.get(0)), /has no id \(identifyBy: id\)/);
  });

  it('answers groups ok without sending them when group is off', () => {
    const ops: SyncOp[] = [
      { kind: 'groupAccount', person: jane, groupId: 'kommo-company-5', traits: { name: 'Acme' }, timestamp: T, messageId: MID },
      { kind: 'trackEvent', person: jane, name: 'Deal Won', properties: {}, timestamp: T, messageId: MID },
    ];
    const plan = planBatches(ops, options({ sendGroups: false }));
    assert.deepEqual(plan.decided.get(0), { ok: true });
    assert.deepEqual(plan.requests.map((r) => r.body.batch.map((m) => m.type)), [['track']]);
  });

  it('fails a message over the per-message limit alone; the others go', () => {
    const ops: SyncOp[] = [
      { kind: 'trackEvent', person: jane, name: 'Stage Changed', properties: { note: 'small' }, timestamp: T, messageId: MID },
      { kind: 'upsertPerson', person: jane, attributes: { notes: 'x'.repeat(SEGMENT_WIRE.maxMessageBytes) }, timestamp: T },
      { kind: 'trackEvent', person: jane, name: 'Deal Won', properties: {}, timestamp: T, messageId: MID },
    ];
    const plan = planBatches(ops, options());
    assert.match(fail(plan.decided.get(1)), /^invalid: identify message is \d+ bytes; Segment accepts at most 32000 per message/);
    assert.deepEqual(plan.requests.map((r) => r.opIndexes), [[0, 2]]);
  });

  it('packs requests up to the byte limit (counted exactly) and the message count limit', () => {
    const ops: SyncOp[] = Array.from({ length: 120 }, (_, i) => ({
      kind: 'trackEvent', person: { email: `p${i}@example.com` }, name: 'Stage Changed', properties: { pad: 'y'.repeat(i % 7 === 0 ? 25_000 : 9_000) }, timestamp: T, messageId: `m-${i}`,
    }));
    const plan = planBatches(ops, options());
    assert.ok(plan.requests.length > 1);
    for (const r of plan.requests) {
      const bytes = Buffer.byteLength(JSON.stringify(r.body));
      assert.equal(r.bytes, bytes, 'the running count is the exact size');
      assert.ok(bytes <= SEGMENT_WIRE.maxRequestBytes, `${bytes} bytes`);
    }
    // Full: the next message would not have fitted.
    const first = plan.requests[0]!;
    const next = JSON.stringify(plan.requests[1]!.body.batch[0]);
    assert.ok(first.bytes + 1 + Buffer.byteLength(next) > SEGMENT_WIRE.maxRequestBytes);
    assert.deepEqual(plan.requests.flatMap((r) => r.opIndexes), ops.map((_, i) => i), 'order kept');

    const tiny: WireLimits = { ...SEGMENT_WIRE, maxMessages: 50 };
    const counted = planBatches(ops.map((op) => ({ ...op, properties: {} }) as SyncOp), options({ wire: tiny }));
    assert.deepEqual(counted.requests.map((r) => r.body.batch.length), [50, 50, 20]);
  });

  it('splits a request in halves with exact sizes', () => {
    const ops: SyncOp[] = Array.from({ length: 5 }, (_, i) => ({ kind: 'trackEvent', person: jane, name: `e${i}`, properties: {}, timestamp: T, messageId: `m${i}` }));
    const [req] = planBatches(ops, options()).requests;
    const [a, b] = splitRequest(req!);
    assert.deepEqual([a.opIndexes, b.opIndexes], [[0, 1, 2], [3, 4]]);
    for (const half of [a, b]) assert.equal(half.bytes, Buffer.byteLength(JSON.stringify(half.body)));
    assert.equal(a.body.sentAt, SENT_AT);
  });
});

describe('segment message ids', () => {
  it('keeps the core ULIDs, and derives a stable ULID from an id over 99 characters', () => {
    assert.equal(vendorMessageId(MID, T), MID);
    const long = 'x'.repeat(100);
    const derived = vendorMessageId(long, T);
    assert.match(derived, ULID_RE);
    assert.equal(vendorMessageId(long, T), derived);
    assert.notEqual(vendorMessageId(`${long}y`, T), derived);
  });

  it('derives an identify id from its content: the same op always, another op never', () => {
    const op = { kind: 'upsertPerson', person: jane, attributes: { a: 1, b: 'x' }, timestamp: T } as const;
    const id = identifyMessageId(op, 'segment');
    assert.match(id, ULID_RE);
    assert.equal(identifyMessageId({ ...op, attributes: { b: 'x', a: 1 } }, 'segment'), id, 'key order does not matter');
    assert.notEqual(identifyMessageId({ ...op, attributes: { a: 2, b: 'x' } }, 'segment'), id);
    assert.notEqual(identifyMessageId(op, 'segment-eu'), id, 'another destination, another id');
    assert.notEqual(identifyMessageId({ ...op, timestamp: T + 1 }, 'segment'), id);
    assert.equal(new Date(T).getTime(), T);
  });

  it('the same ops give the same messages (a retried delivery is deduplicated)', () => {
    const ops: SyncOp[] = [
      { kind: 'upsertPerson', person: jane, attributes: { plan: 'pro' }, timestamp: T },
      { kind: 'trackEvent', person: jane, name: 'Deal Won', properties: {}, timestamp: T, messageId: MID },
    ];
    const ids = () => planBatches(ops, options()).requests.flatMap((r) => r.body.batch.map((m) => m.messageId));
    assert.deepEqual(ids(), ids());
  });
});

describe('segment trait nesting', () => {
  it('nests dotted names; a plain name wins over dotted names under it', () => {
    assert.deepEqual(nest({ 'company.name': 'Acme', 'company.id': 'kommo-company-5', 'address.city': 'Porto', plan: 'pro' }), {
      company: { name: 'Acme', id: 'kommo-company-5' }, address: { city: 'Porto' }, plan: 'pro',
    });
    assert.deepEqual(nest({ 'company.name': 'Acme', company: 'Acme Inc' }), { company: 'Acme Inc' });
    assert.deepEqual(nest({ 'a.b.c': 1, 'a.b.d': 2 }), { a: { b: { c: 1, d: 2 } } });
    assert.deepEqual(nest({ '.x': 1, 'y.': 2 }), { '.x': 1, 'y.': 2 });
  });

  it('keeps __proto__ an ordinary key', () => {
    const nested = nest({ '__proto__.polluted': 'yes' });
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.ok(Object.hasOwn(nested, '__proto__'));
    const plain = nest({ ['__proto__']: 'x' });
    assert.equal(Object.getPrototypeOf(plain), Object.prototype);
    assert.equal(JSON.stringify(plain), '{"__proto__":"x"}');
  });

  it('toMessage sends no key Segment does not know', () => {
    const m = toMessage({ kind: 'trackEvent', person: jane, name: 'x', properties: {}, timestamp: T, messageId: MID }, options());
    assert.deepEqual(Object.keys(m).sort(), ['context', 'event', 'messageId', 'properties', 'timestamp', 'type', 'userId']);
  });
});
