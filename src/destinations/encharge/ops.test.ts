import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { IdentifyBy, SyncOp } from '../types.js';
import { callsFor, createThenRetry, MAX_PEOPLE_PER_UPSERT, planDelivery, readAnswer, splitUpsert, type EnchargeCall } from './ops.js';

const T = 1_700_000_000_123;
const jane = { email: 'Jane@Example.com', id: 'kommo-contact-7' };
const bob = { email: 'bob@example.com', id: 'kommo-contact-8' };

const upsert = (person: SyncOp['person'], attributes: Record<string, string | number | null> = {}): SyncOp => ({ kind: 'upsertPerson', person, attributes, timestamp: T });
const event = (person: SyncOp['person'], name: string, messageId = 'msg-1'): SyncOp => ({ kind: 'trackEvent', person, name, properties: { stage: 'proposal_sent', lead_id: 42 }, timestamp: T, messageId });
const tag = (person: SyncOp['person'], listId: string): SyncOp => ({ kind: 'addToList', person, listId, attributes: { firstName: 'Jane' } });
const untag = (person: SyncOp['person'], listId: string): SyncOp => ({ kind: 'removeFromList', person, listId });

/** All calls of a delivery, wave after wave, as the planner makes them. */
function calls(ops: SyncOp[], by: IdentifyBy = 'email'): EnchargeCall[][] {
  const plan = planDelivery(ops, by);
  assert.equal(plan.decided.size, 0, JSON.stringify([...plan.decided]));
  return plan.waves.map((w) => callsFor(ops, w, by));
}

describe('encharge ops (SyncOp -> calls)', () => {
  it('a stage change: one upsert, the tag moves, then the event (Ingest), in waves per person', () => {
    const ops = [upsert(jane, { kommo_lead_id: 42, firstName: 'Jane' }), event(jane, 'deal_moved_to_proposal_sent'), untag(jane, 'demo-scheduled'), tag(jane, 'proposal-sent')];
    assert.deepEqual(calls(ops), [
      [{ api: 'rest', method: 'POST', path: '/people', json: [{ kommo_lead_id: 42, firstName: 'Jane', email: 'jane@example.com' }], opIndexes: [0], splittable: false }],
      [{ api: 'rest', method: 'DELETE', path: '/tags', json: { tag: 'demo-scheduled', email: 'jane@example.com' }, opIndexes: [2], onMissingPerson: 'ok' }],
      [{ api: 'rest', method: 'POST', path: '/tags', json: { tag: 'proposal-sent', email: 'jane@example.com' }, opIndexes: [3], onMissingPerson: 'create' }],
      [{
        api: 'ingest', method: 'POST', path: '/', opIndexes: [1],
        json: { name: 'deal_moved_to_proposal_sent', user: { email: 'jane@example.com' }, properties: { stage: 'proposal_sent', lead_id: 42, kommo_message_id: 'msg-1' } },
      }],
    ]);
  });

  it('batches the people of one wave into one upsert and one erasure; events stay one per request', () => {
    const ops = [upsert(jane), upsert(bob), event(jane, 'a'), event(bob, 'b'), { kind: 'erasePerson', person: { email: 'gone@example.com' } } as SyncOp, { kind: 'erasePerson', person: { email: 'old@example.com' } } as SyncOp];
    const waves = calls(ops);
    assert.deepEqual(waves.map((w) => w.map((c) => `${c.method} ${c.path} ${c.opIndexes.join(',')}`)), [
      ['POST /people 0,1', 'DELETE /people 4,5'],
      ['POST / 2', 'POST / 3'],
    ]);
    assert.deepEqual(waves[0]![1]!.query, [['people[0][email]', 'gone@example.com'], ['people[1][email]', 'old@example.com'], ['force', 'true']]);
  });

  it('keeps each person\'s order across kinds (suppress after the upsert, an upsert after an erase)', () => {
    const suppress: SyncOp = { kind: 'suppress', person: jane };
    const erase: SyncOp = { kind: 'erasePerson', person: jane };
    const plan = planDelivery([upsert(jane), suppress, erase, upsert(jane), upsert(bob)], 'email');
    assert.deepEqual(plan.waves, [[0, 4], [1], [2], [3]]);
  });

  it('an event waits only behind the tag ops right after it', () => {
    const plan = planDelivery([upsert(jane), event(jane, 'a'), tag(jane, 'x'), upsert(jane), event(jane, 'b')], 'email');
    assert.deepEqual(plan.waves.map((w) => w[0]), [0, 2, 1, 3, 4]);
  });

  it('splits large waves into several upserts', () => {
    const ops = Array.from({ length: MAX_PEOPLE_PER_UPSERT + 1 }, (_, i) => upsert({ email: `p${i}@example.com` }));
    assert.deepEqual(calls(ops)[0]!.map((c) => c.opIndexes.length), [MAX_PEOPLE_PER_UPSERT, 1]);
  });

  it('identifies by userId (email kept) when identifyBy is id', () => {
    const ops = [upsert(jane, { plan: 'pro' }), { kind: 'suppress', person: jane } as SyncOp, event(bob, 'x'), { kind: 'erasePerson', person: bob } as SyncOp];
    const flat = calls(ops, 'id').flat();
    assert.deepEqual(flat.find((c) => c.path === '/people' && c.method === 'POST')?.json, [{ plan: 'pro', userId: 'kommo-contact-7', email: 'jane@example.com' }]);
    assert.deepEqual(flat.find((c) => c.path === '/people/unsubscribe')?.query, [['userId', 'kommo-contact-7']]);
    assert.deepEqual((flat.find((c) => c.api === 'ingest')?.json as { user: unknown }).user, { userId: 'kommo-contact-8', email: 'bob@example.com' });
    assert.deepEqual(flat.find((c) => c.method === 'DELETE')?.query, [['people[0][userId]', 'kommo-contact-8'], ['force', 'true']]);
  });

  it('the person\'s identity wins over attributes of the same name, and a mapped `id` is dropped', () => {
    const [[call]] = calls([upsert(jane, { email: 'other@example.com', id: 'x', userId: 'y', plan: 'pro' })]) as [[EnchargeCall]];
    assert.deepEqual(call.json, [{ plan: 'pro', email: 'jane@example.com' }]);
  });

  it('fails locally what Encharge cannot take, and plans the rest', () => {
    const ops: SyncOp[] = [
      { kind: 'triggerWorkflow', person: jane, workflowId: '9', data: {}, messageId: 'm' },
      { kind: 'groupAccount', person: jane, groupId: 'g', traits: {}, timestamp: T, messageId: 'm' },
      upsert({ email: '' }),
      event(jane, '  '),
      tag(jane, 'a,b'),
      upsert({ email: 'x@example.com' }, {}),
      upsert(jane),
    ];
    const plan = planDelivery(ops, 'email');
    assert.deepEqual([...plan.decided.keys()], [0, 1, 2, 3, 4]);
    for (const r of plan.decided.values()) assert.ok('fail' in r && r.fail.code === 'invalid');
    assert.match(JSON.stringify(plan.decided.get(4)), /comma/);
    assert.deepEqual(plan.waves, [[5, 6]]);
    assert.ok(planDelivery([upsert({ email: 'a@b.co' })], 'id').decided.size === 1, 'no id with identifyBy id');
  });
});

describe('encharge answers -> results', () => {
  const one: EnchargeCall = { api: 'rest', method: 'POST', path: '/people', json: [{ email: 'a@b.co' }, { email: 'c@d.co' }], opIndexes: [3, 5], splittable: true };

  it('reads success, errors, throttling and network failures', () => {
    assert.deepEqual(readAnswer(one, { status: 200, headers: {}, body: { users: [] } }), { results: [{ ok: true, httpStatus: 200 }, { ok: true, httpStatus: 200 }] });
    const unauthorized = readAnswer({ ...one, opIndexes: [1] }, { status: 401, headers: {}, body: { error: { message: 'Invalid API key', traceId: 't' } } });
    assert.deepEqual(unauthorized, { results: [{ fail: { reason: 'HTTP 401: Invalid API key', code: 'auth' }, httpStatus: 401 }] });
    const throttled = readAnswer({ ...one, opIndexes: [1] }, { status: 429, headers: { 'retry-after': '3' }, body: undefined });
    assert.deepEqual(throttled, { results: [{ retry: { reason: 'HTTP 429', afterMs: 3000 }, httpStatus: 429 }] });
    assert.deepEqual(readAnswer({ ...one, opIndexes: [1] }, { status: 0, headers: {}, body: undefined, error: 'timed out' }), { results: [{ retry: { reason: 'timed out' } }] });
  });

  it('a refused multi-person upsert is split; a single one fails', () => {
    assert.deepEqual(readAnswer(one, { status: 400, headers: {}, body: { error: { message: 'bad' } } }), { split: true });
    assert.deepEqual(splitUpsert(one), [
      { api: 'rest', method: 'POST', path: '/people', json: [{ email: 'a@b.co' }], opIndexes: [3] },
      { api: 'rest', method: 'POST', path: '/people', json: [{ email: 'c@d.co' }], opIndexes: [5] },
    ]);
    const single = splitUpsert(one)[0]!;
    assert.deepEqual(readAnswer(single, { status: 400, headers: {}, body: { error: { message: 'bad email' } } }), { results: [{ fail: { reason: 'HTTP 400: bad email', code: 'invalid' }, httpStatus: 400 }] });
  });

  it('a person Encharge does not know: created then tagged again; nothing to untag is fine', () => {
    const ops: SyncOp[] = [tag(jane, 'vip')];
    const [[call]] = calls(ops) as [[EnchargeCall]];
    assert.deepEqual(readAnswer(call, { status: 404, headers: {}, body: undefined }), { missingPerson: true });
    const [create, again] = createThenRetry(call, ops[0]!, 'email')!;
    assert.deepEqual(create, { api: 'rest', method: 'POST', path: '/people', json: [{ firstName: 'Jane', email: 'jane@example.com' }], opIndexes: [0] });
    assert.equal(again.onMissingPerson, undefined, 'the second try takes a 404 as an answer');
    assert.deepEqual(readAnswer(again, { status: 404, headers: {}, body: undefined }), { results: [{ fail: { reason: 'HTTP 404', code: 'not_found' }, httpStatus: 404 }] });
    const [[remove]] = calls([untag(jane, 'vip')]) as [[EnchargeCall]];
    assert.deepEqual(readAnswer(remove, { status: 404, headers: {}, body: undefined }), { results: [{ ok: true, httpStatus: 404 }] });
  });
});
