import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ItemResult, SyncOp } from '../types.js';
import { combine, MAX_BULK, planDelivery, planErase, requestResults, toSubscriber, type PlannedRequest } from './ops.js';

const jane = { email: 'Jane@Example.com', id: 'kommo-contact-7' };
const bob = { email: 'bob@example.com' };
const settings = { doubleOptIn: false as const };
const add = (person: { email: string }, listId: string, attributes: Record<string, string | number | boolean | null> = {}): SyncOp => ({ kind: 'addToList', person, listId, attributes });

describe('moosend ops (SyncOp -> requests)', () => {
  it('one person for a list: subscribe, Name apart, custom fields as Name=Value', () => {
    const plan = planDelivery([add(jane, 'L1', { Name: 'Jane Doe', KommoStage: 'Demo scheduled', DealValue: 1200, Vip: true, Gone: null, Email: 'other@x.com' })], { settings });
    assert.equal(plan.decided.size, 0);
    assert.deepEqual(plan.requests, [{
      endpoint: 'subscribe',
      method: 'POST',
      path: '/subscribers/L1/subscribe.json',
      body: { Email: 'jane@example.com', Name: 'Jane Doe', CustomFields: ['KommoStage=Demo scheduled', 'DealValue=1200', 'Vip=true'], HasExternalDoubleOptIn: true },
      entries: [{ email: 'jane@example.com', opIndexes: [0] }],
    }]);
  });

  it('several people for one list: one subscribe_many, per list, in chunks of 1000', () => {
    const many = Array.from({ length: MAX_BULK + 2 }, (_, i) => add({ email: `p${i}@example.com` }, 'L1', { KommoStage: 'X' }));
    const plan = planDelivery([...many, add(jane, 'L2'), add(bob, 'L2')], { settings });
    assert.deepEqual(plan.requests.map((r) => [r.endpoint, r.path, r.entries.length]), [
      ['subscribeMany', '/subscribers/L1/subscribe_many.json', MAX_BULK],
      ['subscribeMany', '/subscribers/L1/subscribe_many.json', 2],
      ['subscribeMany', '/subscribers/L2/subscribe_many.json', 2],
    ]);
    assert.deepEqual(plan.requests[2]!.body, {
      HasExternalDoubleOptIn: true,
      Subscribers: [{ Email: 'jane@example.com', CustomFields: [] }, { Email: 'bob@example.com', CustomFields: [] }],
    });
  });

  it('the same person twice for a list is one subscriber carrying the later fields', () => {
    const plan = planDelivery([add(jane, 'L1', { KommoStage: 'A' }), add(jane, 'L1', { KommoStage: 'B' })], { settings });
    assert.equal(plan.requests.length, 1);
    assert.deepEqual(plan.requests[0]!.body, { Email: 'jane@example.com', CustomFields: ['KommoStage=B'], HasExternalDoubleOptIn: true });
    assert.deepEqual(plan.requests[0]!.entries, [{ email: 'jane@example.com', opIndexes: [0, 1] }]);
  });

  it('doubleOptIn per list decides HasExternalDoubleOptIn', () => {
    const plan = planDelivery([add(jane, 'L1'), add(bob, 'L2')], { settings: { doubleOptIn: { 'Demo scheduled': true } }, lists: { 'Demo scheduled': 'L2' } });
    assert.deepEqual(plan.requests.map((r) => (r.body as { HasExternalDoubleOptIn: boolean }).HasExternalDoubleOptIn), [true, false]);
  });

  it('removals first (remove, or remove_many for several), then subscriptions, then suppressions', () => {
    const ops: SyncOp[] = [
      add(jane, 'L2'),
      { kind: 'removeFromList', person: jane, listId: 'L1' },
      { kind: 'suppress', person: bob },
      { kind: 'removeFromList', person: bob, listId: 'L3' },
      { kind: 'removeFromList', person: { email: 'c@example.com' }, listId: 'L3' },
    ];
    const plan = planDelivery(ops, { settings });
    assert.deepEqual(plan.requests.map((r) => [r.endpoint, r.path, r.body]), [
      ['remove', '/subscribers/L1/remove.json', { Email: 'jane@example.com' }],
      ['removeMany', '/subscribers/L3/remove_many.json', { Emails: 'bob@example.com,c@example.com' }],
      ['subscribe', '/subscribers/L2/subscribe.json', { Email: 'jane@example.com', CustomFields: [], HasExternalDoubleOptIn: true }],
      ['unsubscribeAccount', '/subscribers/unsubscribe.json', { Email: 'bob@example.com' }],
    ]);
  });

  it('a removal after an addition to the same list in one batch waits for the next attempt', () => {
    const plan = planDelivery([add(jane, 'L1'), { kind: 'removeFromList', person: jane, listId: 'L1' }], { settings });
    assert.equal(plan.requests.length, 1);
    const r = plan.decided.get(1);
    assert.ok(r && 'retry' in r && r.retry.afterMs === 0);
  });

  it('fails locally what Moosend cannot take, and plans the rest', () => {
    const ops: SyncOp[] = [
      { kind: 'upsertPerson', person: jane, attributes: {}, timestamp: 1 },
      { kind: 'trackEvent', person: jane, name: 'x', properties: {}, timestamp: 1, messageId: 'm' },
      { kind: 'triggerWorkflow', person: jane, workflowId: '1', data: {}, messageId: 'm' },
      { kind: 'groupAccount', person: jane, groupId: 'g', traits: {}, timestamp: 1, messageId: 'm' },
      add({ email: '' }, 'L1'),
      add({ email: 'not-an-email' }, 'L1'),
      add(jane, 'L1', { 'a=b': 1 }),
      add(bob, 'L1'),
    ];
    const plan = planDelivery(ops, { settings });
    assert.deepEqual([...plan.decided.keys()], [0, 1, 2, 3, 4, 5, 6]);
    for (const r of plan.decided.values()) assert.ok('fail' in r && r.fail.code === 'invalid', JSON.stringify(r));
    assert.match(JSON.stringify(plan.decided.get(1)), /no server-side custom events/);
    assert.deepEqual(plan.requests.map((r) => r.entries), [[{ email: 'bob@example.com', opIndexes: [7] }]]);
  });

  it('erasure: planned per list once the lists are known', () => {
    const plan = planDelivery([{ kind: 'erasePerson', person: jane }, { kind: 'erasePerson', person: bob }], { settings });
    assert.deepEqual(plan.erase, [{ opIndex: 0, email: 'jane@example.com' }, { opIndex: 1, email: 'bob@example.com' }]);
    assert.deepEqual(planErase(['A', 'B'], plan.erase).map((r) => [r.endpoint, r.path, r.body]), [
      ['removeMany', '/subscribers/A/remove_many.json', { Emails: 'jane@example.com,bob@example.com' }],
      ['removeMany', '/subscribers/B/remove_many.json', { Emails: 'jane@example.com,bob@example.com' }],
    ]);
    assert.deepEqual(planErase(['A'], [plan.erase[0]!]).map((r) => r.endpoint), ['remove']);
  });

  it('list ids are escaped in paths', () => {
    assert.equal(planDelivery([add(jane, 'a/b c')], { settings }).requests[0]!.path, '/subscribers/a%2Fb%20c/subscribe.json');
  });

  it('toSubscriber leaves out an empty name', () => {
    assert.deepEqual(toSubscriber('a@b.c', { Name: '  ', X: '' }), { Email: 'a@b.c', CustomFields: ['X='] });
  });
});

describe('moosend answers -> results', () => {
  const req = (endpoint: PlannedRequest['endpoint'], emails: string[]): PlannedRequest => ({
    endpoint, method: 'POST', path: '/x', body: { Email: '' }, entries: emails.map((email, i) => ({ email, opIndexes: [i] })),
  });
  const ok200 = (body: unknown) => ({ status: 200, headers: {}, body });

  it('a bulk subscribe fails only the addresses Moosend says it ignored', () => {
    const results = requestResults(req('subscribeMany', ['a@x.com', 'bad@x', 'b@x.com']), ok200({ Code: 0, Error: '1 items with invalid email address were ignored: bad@x', Context: [] }));
    assert.deepEqual(results.map((r) => ('ok' in r ? 'ok' : 'fail' in r ? r.fail.code : 'retry')), ['ok', 'invalid', 'ok']);
  });

  it('a removal of someone not on the list is success', () => {
    assert.ok('ok' in requestResults(req('remove', ['a@x.com']), ok200({ Code: 300, Error: 'MEMBER_NOT_FOUND', Context: null }))[0]!);
    assert.ok('fail' in requestResults(req('subscribe', ['a@x.com']), ok200({ Code: 300, Error: 'MEMBER_NOT_FOUND', Context: null }))[0]!);
  });

  it('the rate-limit envelope retries every item of the request after the window', () => {
    const results = requestResults(req('subscribeMany', ['a@x.com', 'b@x.com']), ok200({ Code: 429, Error: 'RATE-LIMITING', Context: null }));
    assert.deepEqual(results, [0, 1].map(() => ({ retry: { reason: 'Moosend Code 429 RATE-LIMITING', afterMs: 10_000, throttled: true }, httpStatus: 200 })));
  });

  it('combines an op\'s results: a failure, else the longest retry, else ok', () => {
    const ok: ItemResult = { ok: true, httpStatus: 200 };
    const retry = (afterMs?: number): ItemResult => ({ retry: afterMs === undefined ? { reason: 'r' } : { reason: 'r', afterMs } });
    const fail: ItemResult = { fail: { reason: 'f', code: 'invalid' } };
    assert.deepEqual(combine([ok, ok]), ok);
    assert.deepEqual(combine([ok, retry(5), retry(10_000)]), retry(10_000));
    assert.deepEqual(combine([retry(), ok]), retry());
    assert.deepEqual(combine([retry(5), fail]), fail);
    assert.ok('retry' in combine([]));
  });
});
