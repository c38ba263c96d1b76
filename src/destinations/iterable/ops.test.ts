import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ItemResult, SyncOp } from '../types.js';
import { classifyAnswer, MAX_BODY_BYTES, PER_DELIVERY, planDelivery, readAnswer, toEventId, toVendorId, type PlanOptions, type PlannedRequest } from './ops.js';

const T = 1_700_000_000_123; // unix ms
const jane = { email: 'jane@example.com', id: 'kommo-contact-7' };
const bob = { email: 'bob@example.com', id: 'kommo-contact-8' };
const MID = '01HGW2PZ0EJM4X5Y8B3C9D7F6K';
const byEmail: PlanOptions = { identifyBy: 'email', suppressListId: 1900, erase: 'delete' };

function only(ops: SyncOp[], o: PlanOptions = byEmail): PlannedRequest[] {
  const plan = planDelivery(ops, o);
  assert.deepEqual([...plan.decided], []);
  return plan.requests;
}
function outcome(r: ItemResult | undefined): string {
  if (!r) return 'none';
  return 'ok' in r ? 'ok' : 'retry' in r ? 'retry' : `fail:${r.fail.code}`;
}

describe('iterable ops (SyncOp -> requests)', () => {
  const table: Array<{ name: string; op: SyncOp; o?: PlanOptions; request: Pick<PlannedRequest, 'method' | 'path' | 'body'> }> = [
    {
      name: 'upsertPerson by email -> bulkUpdate',
      op: { kind: 'upsertPerson', person: jane, attributes: { crmDealId: 42, isCustomer: true }, timestamp: T },
      request: { method: 'POST', path: '/users/bulkUpdate', body: { users: [{ email: 'jane@example.com', dataFields: { crmDealId: 42, isCustomer: true } }] } },
    },
    {
      name: 'upsertPerson by id: userId, preferUserId, and the address in dataFields',
      op: { kind: 'upsertPerson', person: jane, attributes: { plan: 'pro' }, timestamp: T },
      o: { ...byEmail, identifyBy: 'id' },
      request: { method: 'POST', path: '/users/bulkUpdate', body: { users: [{ userId: 'kommo-contact-7', preferUserId: true, dataFields: { plan: 'pro', email: 'jane@example.com' } }] } },
    },
    {
      name: 'trackEvent -> trackBulk with the deterministic id and unix seconds',
      op: { kind: 'trackEvent', person: jane, name: 'deal_won', properties: { dealId: 42, currency: 'USD' }, timestamp: T, messageId: MID },
      request: { method: 'POST', path: '/events/trackBulk', body: { events: [{ email: 'jane@example.com', eventName: 'deal_won', id: MID, createdAt: 1_700_000_000, dataFields: { dealId: 42, currency: 'USD' } }] } },
    },
    {
      name: 'triggerWorkflow with a numeric workflow id and the data fields',
      op: { kind: 'triggerWorkflow', person: jane, workflowId: '12345', data: { dealId: 42 }, messageId: MID },
      request: { method: 'POST', path: '/workflows/triggerWorkflow', body: { workflowId: 12345, email: 'jane@example.com', dataFields: { dealId: 42 } } },
    },
    {
      name: 'addToList -> lists/subscribe without dataFields (users go through bulkUpdate only)',
      op: { kind: 'addToList', person: jane, listId: '111', attributes: { plan: 'pro' } },
      request: { method: 'POST', path: '/lists/subscribe', body: { listId: 111, subscribers: [{ email: 'jane@example.com' }] } },
    },
    {
      name: 'removeFromList -> lists/unsubscribe',
      op: { kind: 'removeFromList', person: jane, listId: '111' },
      request: { method: 'POST', path: '/lists/unsubscribe', body: { listId: 111, subscribers: [{ email: 'jane@example.com' }] } },
    },
    {
      name: 'suppress -> channel unsubscribe through the configured list',
      op: { kind: 'suppress', person: jane },
      request: { method: 'POST', path: '/lists/unsubscribe', body: { listId: 1900, subscribers: [{ email: 'jane@example.com' }], channelUnsubscribe: true } },
    },
    {
      name: 'erasePerson -> DELETE /users/{email}',
      op: { kind: 'erasePerson', person: { email: 'a+b@example.com' } },
      request: { method: 'DELETE', path: '/users/a%2Bb%40example.com', body: undefined },
    },
    {
      name: 'erasePerson by id -> DELETE /users/byUserId/{userId}',
      op: { kind: 'erasePerson', person: jane },
      o: { ...byEmail, identifyBy: 'id' },
      request: { method: 'DELETE', path: '/users/byUserId/kommo-contact-7', body: undefined },
    },
    {
      name: 'erasePerson with erase: forget -> POST /users/forget',
      op: { kind: 'erasePerson', person: jane },
      o: { ...byEmail, erase: 'forget' },
      request: { method: 'POST', path: '/users/forget', body: { email: 'jane@example.com' } },
    },
  ];
  for (const row of table) {
    it(row.name, () => {
      const [req, ...rest] = only([row.op], row.o);
      assert.equal(rest.length, 0);
      assert.deepEqual({ method: req!.method, path: req!.path, body: req!.body }, row.request);
      assert.deepEqual(req!.items.map((i) => i.opIndexes), [[0]]);
    });
  }

  it('a burst is one request per endpoint: users, events, then each list, workflows last', () => {
    const ops: SyncOp[] = [];
    for (const p of [jane, bob]) {
      ops.push(
        { kind: 'upsertPerson', person: p, attributes: { a: 1 }, timestamp: T },
        { kind: 'trackEvent', person: p, name: 'deal_won', properties: {}, timestamp: T, messageId: `${p.id}-e` },
        { kind: 'triggerWorkflow', person: p, workflowId: '5', data: {}, messageId: `${p.id}-w` },
        { kind: 'removeFromList', person: p, listId: '110' },
        { kind: 'addToList', person: p, listId: '111', attributes: {} },
      );
    }
    const reqs = only(ops);
    assert.deepEqual(reqs.map((r) => r.path), ['/users/bulkUpdate', '/events/trackBulk', '/lists/subscribe', '/lists/unsubscribe', '/workflows/triggerWorkflow', '/workflows/triggerWorkflow']);
    assert.deepEqual(reqs.map((r) => r.items.flatMap((i) => i.opIndexes)), [[0, 5], [1, 6], [4, 9], [3, 8], [2], [7]]);
    // A trigger waits for the person's earlier ops in the delivery.
    assert.deepEqual(reqs[4]!.dependsOn, [0, 1]);
    assert.deepEqual(reqs[5]!.dependsOn, [5, 6]);
  });

  it('merges two upserts of one person into one user (later attributes win)', () => {
    const reqs = only([
      { kind: 'upsertPerson', person: jane, attributes: { a: 1, b: 1 }, timestamp: T },
      { kind: 'upsertPerson', person: { email: 'JANE@example.com' }, attributes: { b: 2 }, timestamp: T },
    ]);
    assert.deepEqual(reqs[0]!.body, { users: [{ email: 'jane@example.com', dataFields: { a: 1, b: 2 } }] });
    assert.deepEqual(reqs[0]!.items.map((i) => i.opIndexes), [[0, 1]]);
  });

  it('answers locally what Iterable cannot take, and sends the rest', () => {
    const plan = planDelivery([
      { kind: 'groupAccount', person: jane, groupId: 'kommo-company-1', traits: {}, timestamp: T, messageId: MID },
      { kind: 'trackEvent', person: jane, name: '  ', properties: {}, timestamp: T, messageId: MID },
      { kind: 'upsertPerson', person: { email: '' }, attributes: {}, timestamp: T },
      { kind: 'suppress', person: jane },
      { kind: 'upsertPerson', person: jane, attributes: {}, timestamp: T },
    ], { ...byEmail, suppressListId: undefined });
    assert.deepEqual([...plan.decided.keys()], [0, 1, 2, 3]);
    assert.match(JSON.stringify(plan.decided.get(0)), /no accounts or groups/);
    assert.match(JSON.stringify(plan.decided.get(1)), /eventName/);
    assert.match(JSON.stringify(plan.decided.get(2)), /no email/);
    assert.match(JSON.stringify(plan.decided.get(3)), /suppressListId is not set/);
    assert.deepEqual([...plan.decided.values()].map(outcome), ['fail:invalid', 'fail:invalid', 'fail:invalid', 'fail:invalid']);
    assert.deepEqual(plan.requests.map((r) => r.path), ['/users/bulkUpdate']);
  });

  it('identifyBy id never falls back to email', () => {
    const plan = planDelivery([{ kind: 'upsertPerson', person: { email: 'x@example.com' }, attributes: {}, timestamp: T }], { ...byEmail, identifyBy: 'id' });
    assert.match(JSON.stringify(plan.decided.get(0)), /has no id/);
  });

  it('caps the one-person-per-request endpoints per delivery; the rest wait a second', () => {
    const ops: SyncOp[] = Array.from({ length: PER_DELIVERY.delete + 2 }, (_, i) => ({ kind: 'erasePerson', person: { email: `p${i}@example.com` } }));
    const plan = planDelivery(ops, byEmail);
    assert.equal(plan.requests.length, PER_DELIVERY.delete);
    assert.deepEqual([...plan.decided.values()].map((r) => ('retry' in r ? r.retry.afterMs : undefined)), [1000, 1000]);
    const forget = planDelivery(ops.slice(0, 3), { ...byEmail, erase: 'forget' });
    assert.equal(forget.requests.length, PER_DELIVERY.forget);
  });

  it('packs bulk bodies under 4 MB and fails an item too large alone', () => {
    const big = 'x'.repeat(900_000);
    const ops: SyncOp[] = Array.from({ length: 9 }, (_, i) => ({ kind: 'upsertPerson', person: { email: `p${i}@example.com` }, attributes: { notes: big }, timestamp: T }));
    ops.push({ kind: 'upsertPerson', person: { email: 'huge@example.com' }, attributes: { notes: 'y'.repeat(MAX_BODY_BYTES) }, timestamp: T });
    const plan = planDelivery(ops, byEmail);
    assert.equal(outcome(plan.decided.get(9)), 'fail:invalid');
    assert.deepEqual(plan.requests.map((r) => r.items.length), [4, 4, 1]);
    for (const r of plan.requests) assert.ok(Buffer.byteLength(JSON.stringify(r.body)) <= MAX_BODY_BYTES);
  });

  it('event ids: the messageId as is, hashed past 512 bytes; ids stay stable', () => {
    assert.equal(toEventId(MID), MID);
    const long = 'm'.repeat(600);
    assert.match(toEventId(long), /^[0-9a-f]{64}$/);
    assert.equal(toEventId(long), toEventId(long));
  });

  it('numeric list and workflow ids go out as numbers, others as given', () => {
    assert.equal(toVendorId('111'), 111);
    assert.equal(toVendorId('conf-list-1'), 'conf-list-1');
    assert.equal(toVendorId('99999999999999999999'), '99999999999999999999');
  });
});

describe('iterable answers -> results', () => {
  const json = { 'content-type': 'application/json' };
  const answer = (status: number, body: unknown, headers: Record<string, string> = json) => ({ status, headers, body });

  const codes: Array<[number, unknown, string, Record<string, string>?]> = [
    [200, { msg: 'ok', code: 'Success', params: null }, 'ok'],
    [401, { msg: 'Invalid API key', code: 'BadApiKey', params: { ip: '1.2.3.4', endpoint: '/api/users/bulkUpdate' } }, 'fail:auth'],
    [400, { msg: 'no', code: 'Forbidden' }, 'fail:auth'],
    [429, { msg: 'Exceeded rate limit.', code: 'RateLimitExceeded' }, 'retry'],
    [400, { msg: 'bad', code: 'BadParams' }, 'fail:invalid'],
    [400, { msg: 'types', code: 'RequestFieldsTypesMismatched' }, 'fail:invalid'],
    [409, { msg: 'Contact is GDPR forgotten', code: 'ForgottenUserError' }, 'fail:rejected'],
    [400, { msg: 'unknown user', code: 'UnknownEmailError' }, 'retry'],
    [400, { msg: 'no workflow', code: 'NotFound' }, 'fail:not_found'],
    [500, { msg: 'db', code: 'DatabaseError' }, 'retry'],
    [503, { msg: 'x', code: 'GenericError' }, 'retry'],
    [400, { msg: 'x', code: 'GenericError' }, 'fail:invalid'],
    [200, { msg: 'x', code: 'GenericError' }, 'retry'],
    [200, { msg: 'limit inside a 200', code: 'RateLimitExceeded' }, 'retry'],
    [418, { msg: 'teapot', code: 'SomethingNew' }, 'fail:invalid'],
    [502, '<html>bad gateway</html>', 'retry'],
    [200, { successCount: 1, failCount: 0 }, 'ok'],
  ];
  for (const [status, body, want] of codes) {
    it(`HTTP ${status} ${JSON.stringify(body).slice(0, 60)} -> ${want}`, () => assert.equal(outcome(classifyAnswer(answer(status, body))), want));
  }

  it('honours Retry-After on every retry, and names the code in the reason', () => {
    const r = classifyAnswer(answer(429, { msg: 'Exceeded rate limit.', code: 'RateLimitExceeded' }, { 'retry-after': '60' }));
    assert.deepEqual(r, { retry: { reason: 'HTTP 429: RateLimitExceeded (Exceeded rate limit.)', afterMs: 60_000 }, httpStatus: 429 });
    const network = classifyAnswer({ status: 0, headers: {}, body: undefined, error: 'timed out after 300 ms' });
    assert.equal(outcome(network), 'retry');
  });

  const bulkReq = (endpoint: PlannedRequest['endpoint'], people: string[], eventName?: string): PlannedRequest => ({
    endpoint,
    method: 'POST',
    path: '/x',
    items: people.map((email, i) => ({ opIndexes: [i], who: email.includes('@') ? { email } : { userId: email }, ...(eventName ? { eventName } : {}) })),
  });
  const failed = (lists: Record<string, string[]>) => ({ successCount: 0, failCount: Object.values(lists).flat().length, failedUpdates: lists });

  it('fails or retries only the items a bulk answer names, each with its reason', () => {
    const req = bulkReq('bulkUpdate', ['ok@example.com', 'Conflict@example.com', 'gone@example.com', 'types@example.com', 'bad@example', 'kommo-contact-1', 'new@example.com']);
    const reading = readAnswer(req, answer(200, failed({
      conflictEmails: ['conflict@example.com'], forgottenEmails: ['gone@example.com'], invalidDataEmails: ['types@example.com'],
      invalidEmails: ['bad@example'], notFoundUserIds: ['kommo-contact-1'], somethingNewEmails: ['new@example.com'],
    })));
    assert.deepEqual(reading.results.map(outcome), ['ok', 'fail:rejected', 'fail:rejected', 'fail:invalid', 'fail:invalid', 'fail:not_found', 'fail:rejected']);
    assert.match(JSON.stringify(reading.results[3]), /failedUpdates\.invalidDataEmails.*another type/);
    assert.equal(reading.scope, undefined);
  });

  it('reads notFound per endpoint: not yet for events, nothing to do for unsubscribes', () => {
    const body = failed({ notFoundEmails: ['a@example.com'] });
    assert.equal(outcome(readAnswer(bulkReq('trackBulk', ['a@example.com']), answer(200, body)).results[0]), 'retry');
    assert.equal(outcome(readAnswer(bulkReq('subscribe', ['a@example.com']), answer(200, body)).results[0]), 'retry');
    assert.equal(outcome(readAnswer(bulkReq('unsubscribe', ['a@example.com']), answer(200, body)).results[0]), 'ok');
    assert.equal(outcome(readAnswer(bulkReq('suppress', ['a@example.com']), answer(200, body)).results[0]), 'ok');
  });

  it('fails events whose name the project disallows', () => {
    const reading = readAnswer(bulkReq('trackBulk', ['a@example.com'], 'deal_won'), answer(200, { successCount: 0, failCount: 1, disallowedEventNames: ['deal_won'] }));
    assert.match(JSON.stringify(reading.results[0]), /disallowedEventNames/);
  });

  it('reads the deprecated top-level lists, and reports counts it could not attribute', () => {
    const reading = readAnswer(bulkReq('bulkUpdate', ['bad@x', 'b@example.com']), answer(200, { successCount: 0, failCount: 3, invalidEmails: ['bad@x'], filteredOutFields: ['secretField'] }));
    assert.deepEqual(reading.results.map(outcome), ['fail:invalid', 'ok']);
    assert.equal(reading.unattributed, 2);
    assert.deepEqual(reading.filteredOutFields, ['secretField']);
  });

  it('an answer for the whole request applies to every item, with how far it stops the delivery', () => {
    const req = bulkReq('bulkUpdate', ['a@example.com', 'b@example.com']);
    const auth = readAnswer(req, answer(401, { msg: 'Invalid API key', code: 'BadApiKey' }));
    assert.deepEqual([auth.results.map(outcome), auth.scope], [['fail:auth', 'fail:auth'], 'all']);
    const limited = readAnswer(req, answer(429, { code: 'RateLimitExceeded', msg: 'x' }));
    assert.deepEqual([limited.results.map(outcome), limited.scope], [['retry', 'retry'], 'endpoint']);
    const tooLarge = readAnswer(req, answer(400, { code: 'BatchTooLarge', msg: 'x' }));
    assert.deepEqual([tooLarge.results.map(outcome), tooLarge.scope], [['fail:invalid', 'fail:invalid'], undefined]);
    const network = readAnswer(req, { status: 0, headers: {}, body: undefined, error: 'network error: fetch failed' });
    assert.deepEqual([network.results.map(outcome), network.scope], [['retry', 'retry'], 'all']);
  });

  it('erasing someone Iterable does not know is done', () => {
    const req: PlannedRequest = { endpoint: 'delete', method: 'DELETE', path: '/users/x%40example.com', items: [{ opIndexes: [0], who: { email: 'x@example.com' } }] };
    assert.equal(outcome(readAnswer(req, answer(400, { code: 'UnknownEmailError', msg: 'no user' })).results[0]), 'ok');
  });
});
