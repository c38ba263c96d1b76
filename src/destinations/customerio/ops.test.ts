import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { type ItemResult, type SyncOp } from '../types.js';
import { customerio } from './index.js';
import { batchResults, MAX_ITEM_BYTES, MAX_REQUEST_BYTES, planBatches, toEventId, type BatchRequest } from './ops.js';

const T = 1_700_000_000_123; // unix ms
const jane = { email: 'jane@example.com', id: 'kommo-contact-7' };

function batchOf(n: number): BatchRequest {
  return { method: 'POST', path: '/api/v2/batch', body: { batch: [] }, opIndexes: Array.from({ length: n }, (_, i) => i) };
}


describe('customerio ops (SyncOp -> v2 batch items)', () => {
  const table: Array<{ name: string; op: SyncOp; by: 'email' | 'id'; item: unknown }> = [
    {
      name: 'upsertPerson by email',
      op: { kind: 'upsertPerson', person: jane, attributes: { kommo_stage: 'proposal_sent', deal_value: 1200 }, timestamp: T },
      by: 'email',
      item: { type: 'person', identifiers: { email: 'jane@example.com' }, action: 'identify', attributes: { kommo_stage: 'proposal_sent', deal_value: 1200 }, timestamp: 1_700_000_000 },
    },
    {
      name: 'upsertPerson by id keeps the email as an attribute',
      op: { kind: 'upsertPerson', person: jane, attributes: { kommo_stage: 'won' }, timestamp: T },
      by: 'id',
      item: { type: 'person', identifiers: { id: 'kommo-contact-7' }, action: 'identify', attributes: { kommo_stage: 'won', email: 'jane@example.com' }, timestamp: 1_700_000_000 },
    },
    {
      name: 'trackEvent with a ULID messageId',
      op: { kind: 'trackEvent', person: jane, name: 'kommo_lead_won', properties: { price: 5 }, timestamp: T, messageId: '01hgw2pz0ejm4x5y8b3c9d7f6k' },
      by: 'email',
      item: { type: 'person', identifiers: { email: 'jane@example.com' }, action: 'event', name: 'kommo_lead_won', id: '01HGW2PZ0EJM4X5Y8B3C9D7F6K', timestamp: 1_700_000_000, attributes: { price: 5 } },
    },
    {
      name: 'suppress',
      op: { kind: 'suppress', person: jane },
      by: 'email',
      item: { type: 'person', identifiers: { email: 'jane@example.com' }, action: 'suppress' },
    },
    {
      name: 'erasePerson by id',
      op: { kind: 'erasePerson', person: jane },
      by: 'id',
      item: { type: 'person', identifiers: { id: 'kommo-contact-7' }, action: 'delete' },
    },
  ];
  for (const row of table) {
    it(row.name, () => {
      const plan = planBatches([row.op], row.by);
      assert.equal(plan.decided.size, 0);
      assert.deepEqual(plan.requests, [{ method: 'POST', path: '/api/v2/batch', body: { batch: [row.item] }, opIndexes: [0] }]);
    });
  }

  it('fails locally what Customer.io cannot take, and sends the rest', () => {
    const ops: SyncOp[] = [
      { kind: 'addToList', person: jane, listId: '3', attributes: {} },
      { kind: 'suppress', person: { email: 'noid@example.com' } },
      { kind: 'erasePerson', person: jane },
    ];
    const plan = planBatches(ops, 'id');
    assert.match(fail(plan.decided.get(0)), /does not support addToList/);
    assert.match(fail(plan.decided.get(1)), /has no id/);
    assert.deepEqual(plan.requests.map((r) => r.opIndexes), [[2]]);
  });

  it('fails an op over Customer.io\'s documented limits alone, naming the limit; the rest are sent', () => {
    const many = Object.fromEntries(Array.from({ length: 301 }, (_, i) => [`a${i}`, i]));
    const ops: SyncOp[] = [
      { kind: 'upsertPerson', person: jane, attributes: { notes: 'x'.repeat(1001) }, timestamp: T },
      { kind: 'upsertPerson', person: jane, attributes: many, timestamp: T },
      { kind: 'trackEvent', person: jane, name: 'e'.repeat(101), properties: {}, timestamp: T, messageId: 'm1' },
      { kind: 'upsertPerson', person: jane, attributes: { notes: 'x'.repeat(1000) }, timestamp: T },
    ];
    const plan = planBatches(ops, 'email');
    assert.match(fail(plan.decided.get(0)), /attribute "notes" is 1001 bytes; Customer.io allows 1000 per value/);
    assert.match(fail(plan.decided.get(1)), /301 attributes; Customer.io takes at most 300/);
    assert.match(fail(plan.decided.get(2)), /event name is 101 bytes; Customer.io allows 100/);
    assert.deepEqual(plan.requests.map((r) => r.opIndexes), [[3]], 'a value at the limit is sent');
  });

  it('derives a stable ULID event id from a non-ULID messageId (retries dedup)', () => {
    const a = toEventId('job-42:lead.won', T);
    assert.match(a, /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/);
    assert.equal(toEventId('job-42:lead.won', T), a);
    assert.notEqual(toEventId('job-43:lead.won', T), a);
    assert.equal(toEventId('job-42:lead.won', T).slice(0, 10), toEventId('other', T).slice(0, 10), 'time part is the op time');
  });

  it('splits into requests under 500 KB and fails an item over 32 KB alone', () => {
    // Many values within the 1,000-byte limit add up to big items (about 20 KB, and one over 32 KB).
    const attrs = (n: number, c: string) => Object.fromEntries(Array.from({ length: n }, (_, j) => [`n${j}`, c.repeat(990)]));
    const ops: SyncOp[] = Array.from({ length: 60 }, (_, i) => ({
      kind: 'upsertPerson', person: { email: `p${i}@example.com` }, attributes: attrs(20, 'x'), timestamp: T,
    }));
    ops[5] = { kind: 'upsertPerson', person: jane, attributes: attrs(Math.ceil(MAX_ITEM_BYTES / 990), 'y'), timestamp: T };
    const plan = planBatches(ops, 'email');
    assert.match(fail(plan.decided.get(5)), /at most 32000/);
    assert.ok(plan.requests.length >= 3);
    for (const r of plan.requests) assert.ok(Buffer.byteLength(JSON.stringify(r.body)) < MAX_REQUEST_BYTES);
    assert.deepEqual(plan.requests.flatMap((r) => r.opIndexes), ops.map((_, i) => i).filter((i) => i !== 5));
  });
});

describe('customerio answers -> per-op results', () => {
  const req = batchOf(3);
  const table: Array<{ name: string; status: number; headers?: Record<string, string>; body: unknown; error?: string; want: ItemResult[] }> = [
    { name: '200 {} accepts all', status: 200, body: {}, want: Array(3).fill({ ok: true, httpStatus: 200 }) },
    {
      name: '207 fails only the listed items',
      status: 207,
      body: { errors: [{ batch_index: 1, reason: 'required', field: 'name', message: 'name cannot be blank' }] },
      want: [
        { ok: true, httpStatus: 207 },
        { fail: { reason: 'Customer.io rejected the item: required: name: name cannot be blank', code: 'invalid' }, httpStatus: 207 },
        { ok: true, httpStatus: 207 },
      ],
    },
    { name: '207 without readable errors retries all', status: 207, body: 'oops', want: Array(3).fill({ retry: { reason: 'HTTP 207 without a readable errors list' }, httpStatus: 207 }) },
    {
      name: '400 fails the whole batch as invalid with the message',
      status: 400,
      body: { errors: [{ reason: 'malformed', field: 'batch', message: 'expected {"batch": [operation, ...]}' }] },
      want: Array(3).fill({ fail: { reason: 'HTTP 400: expected {"batch": [operation, ...]}', code: 'invalid' }, httpStatus: 400 }),
    },
    {
      name: '401 is an auth failure',
      status: 401,
      body: { meta: { error: 'Unauthorized request.' } },
      want: Array(3).fill({ fail: { reason: 'HTTP 401: Unauthorized request.', code: 'auth' }, httpStatus: 401 }),
    },
    {
      name: '429 retries after Retry-After',
      status: 429,
      headers: { 'retry-after': '12' },
      body: undefined,
      want: Array(3).fill({ retry: { reason: 'HTTP 429', afterMs: 12_000 }, httpStatus: 429 }),
    },
    { name: 'a network error retries', status: 0, body: undefined, error: 'timed out after 10 ms', want: Array(3).fill({ retry: { reason: 'timed out after 10 ms' } }) },
  ];
  for (const row of table) {
    it(row.name, () => {
      assert.deepEqual(batchResults(req, { status: row.status, headers: row.headers ?? {}, body: row.body, error: row.error }), row.want);
    });
  }
});

function fail(r: ItemResult | undefined): string {
  assert.ok(r && 'fail' in r, `expected a failure, got ${JSON.stringify(r)}`);
  return r.fail.reason;
}

