/**
 * The simulator's own fidelity to the facts file: endpoints, envelope, error codes, limits and the
 * webhooks it sends. (The connector's behaviour against it is in index.test.ts.)
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { iterableSimulator } from './simulator.js';

describe('iterable simulator', () => {
  const sim = iterableSimulator({ forgetDailyCap: 2 });
  let app: FastifyInstance;
  const key = () => ({ 'api-key': sim.credentials.apiKey, 'content-type': 'application/json' });
  const call = async (method: 'GET' | 'POST' | 'DELETE', url: string, payload?: unknown) => {
    const res = await app.inject({ method, url: `/itbl${url}`, headers: key(), ...(payload === undefined ? {} : { payload: typeof payload === 'string' ? payload : JSON.stringify(payload) }) });
    return { status: res.statusCode, body: res.json() as Record<string, unknown> };
  };

  before(async () => {
    app = Fastify();
    await app.register(sim.plugin, { prefix: '/itbl' });
    await app.ready();
  });
  after(() => app.close());

  it('refuses a missing or wrong Api-Key with 401 BadApiKey', async () => {
    for (const headers of [{}, { 'api-key': 'nope' }, { api_key: sim.credentials.apiKey }]) {
      const res = await app.inject({ method: 'GET', url: '/itbl/users/getByEmail?email=a@example.com', headers });
      assert.equal(res.statusCode, 401);
      assert.equal((res.json() as { code: string }).code, 'BadApiKey');
    }
  });

  it('users/update: the envelope, one of email or userId, GDPR forgotten users refused with 409', async () => {
    sim.reset();
    assert.deepEqual(await call('POST', '/users/update', { email: 'Ann@Example.com', dataFields: { plan: 'pro' } }), { status: 200, body: { msg: 'User updated', code: 'Success', params: null } });
    assert.deepEqual(sim.users.get('ann@example.com')?.dataFields, { plan: 'pro' });
    assert.equal((await call('POST', '/users/update', { email: 'a@example.com', userId: 'u1' })).body.code, 'BadParams');
    assert.equal((await call('POST', '/users/update', { email: 'not-an-email' })).body.code, 'InvalidEmailAddressError');
    assert.equal((await call('POST', '/users/update', { email: 'ann@example.com', dataFields: { plan: 3 } })).body.code, 'RequestFieldsTypesMismatched');
    assert.equal((await call('POST', '/users/update', '{"email":')).body.code, 'BadJsonBody');
    assert.equal((await call('POST', '/users/forget', { email: 'ann@example.com' })).status, 200);
    assert.deepEqual(await call('POST', '/users/update', { email: 'ann@example.com', dataFields: {} }), { status: 409, body: { msg: 'Contact is GDPR forgotten', code: 'ForgottenUserError', params: null } });
    assert.equal((await call('POST', '/users/unforget', { email: 'ann@example.com' })).status, 200);
    assert.equal((await call('POST', '/users/update', { email: 'ann@example.com', dataFields: {} })).status, 200);
  });

  it('bulkUpdate: per-item failures in failedUpdates, createdFields, 400 BatchTooLarge over 4 MB', async () => {
    sim.reset();
    const res = await call('POST', '/users/bulkUpdate', { users: [{ email: 'a@example.com', dataFields: { n: 1 } }, { email: 'bad' }, { userId: 'trailing ' }] });
    assert.equal(res.status, 200);
    assert.deepEqual([res.body.successCount, res.body.failCount, res.body.createdFields], [1, 2, ['n']]);
    const failed = res.body.failedUpdates as Record<string, string[]>;
    assert.deepEqual([failed.invalidEmails, failed.invalidUserIds, failed.notFoundEmails], [['bad'], ['trailing '], []]);
    assert.deepEqual(res.body.invalidEmails, ['bad'], 'the deprecated top-level copy');
    const huge = await call('POST', '/users/bulkUpdate', { users: [{ email: 'a@example.com', dataFields: { notes: 'x'.repeat(4_000_001) } }] });
    assert.deepEqual([huge.status, huge.body.code], [400, 'BatchTooLarge']);
    assert.equal((await call('POST', '/users/bulkUpdate', { users: [{ dataFields: {} }] })).body.code, 'BadParams');
  });

  it('events: track answers with the id; the same id updates the event; trackBulk needs eventName', async () => {
    sim.reset();
    const first = await call('POST', '/events/track', { email: 'a@example.com', eventName: 'signup', id: 'ev-1', dataFields: { v: 1 } });
    assert.deepEqual(first.body, { msg: 'Event with id: ev-1 tracked.', code: 'Success', params: { id: 'ev-1' } });
    await call('POST', '/events/trackBulk', { events: [{ email: 'a@example.com', eventName: 'signup', id: 'ev-1', dataFields: { v: 2 } }] });
    assert.deepEqual(sim.events.map((e) => [e.id, e.dataFields.v, e.updates]), [['ev-1', 2, 1]]);
    assert.equal((await call('POST', '/events/trackBulk', { events: [{ email: 'a@example.com', eventName: ' ' }] })).body.code, 'BadParams');
    const unknownId = await call('POST', '/events/trackBulk', { events: [{ userId: 'nobody', eventName: 'x' }] });
    assert.deepEqual((unknownId.body.failedUpdates as Record<string, string[]>).notFoundUserIds, ['nobody']);
    assert.equal(sim.users.has('a@example.com'), true, 'an event creates its email user');
  });

  it('lists, workflows, delete and forget', async () => {
    sim.reset();
    await call('POST', '/lists/subscribe', { listId: 7, subscribers: [{ email: 'a@example.com' }, { email: 'b@example.com' }] });
    assert.deepEqual([...(sim.lists.get('7') ?? [])], ['a@example.com', 'b@example.com']);
    const existingOnly = await call('POST', '/lists/subscribe', { listId: 7, subscribers: [{ email: 'c@example.com' }], updateExistingUsersOnly: true });
    assert.deepEqual((existingOnly.body.failedUpdates as Record<string, string[]>).notFoundEmails, ['c@example.com']);
    await call('POST', '/lists/unsubscribe', { listId: 7, subscribers: [{ email: 'a@example.com' }], channelUnsubscribe: true });
    assert.deepEqual([[...(sim.lists.get('7') ?? [])], sim.channelUnsubscribed.get('a@example.com')], [['b@example.com'], '7']);
    assert.equal((await call('POST', '/lists/subscribe', { subscribers: [] })).body.code, 'BadParams');
    assert.equal((await call('POST', '/workflows/triggerWorkflow', { workflowId: 'welcome', email: 'a@example.com' })).body.code, 'BadParams');
    assert.equal((await call('POST', '/workflows/triggerWorkflow', { workflowId: 12, listId: 7 })).status, 200);
    assert.equal((await call('DELETE', '/users/b%40example.com')).status, 200);
    assert.equal(sim.users.has('b@example.com'), false);
    assert.equal((await call('DELETE', '/users/byUserId/u-1')).status, 200);
    assert.deepEqual(sim.items.filter((i) => i.kind === 'erasePerson').map((i) => i.person), ['b@example.com', 'u-1']);
    assert.equal((await call('POST', '/users/forget', { email: 'x@example.com' })).status, 200);
    assert.equal((await call('POST', '/users/forget', { email: 'y@example.com' })).status, 200);
    const capped = await call('POST', '/users/forget', { email: 'z@example.com' });
    assert.deepEqual([capped.status, capped.body.code], [429, 'RateLimitExceeded']);
  });

  it('getByEmail answers the user, or {} for an unknown one', async () => {
    sim.reset();
    await call('POST', '/users/update', { email: 'a@example.com', dataFields: { n: 1 } });
    assert.deepEqual((await call('GET', '/users/getByEmail?email=a%40example.com')).body, { user: { email: 'a@example.com', dataFields: { n: 1 } } });
    assert.deepEqual((await call('GET', '/users/getByEmail?email=nobody%40example.com')).body, {});
  });

  it('sends system webhooks as Iterable does, with the configured Authorization form', async () => {
    const received: Array<{ headers: Record<string, unknown>; body: Record<string, unknown> }> = [];
    const receiver = Fastify();
    receiver.post('/hook', async (request) => {
      received.push({ headers: request.headers, body: request.body as Record<string, unknown> });
      return {};
    });
    const url = `${await receiver.listen({ port: 0, host: '127.0.0.1' })}/hook`;
    try {
      assert.equal(await sim.sendEngagement(url, 'unsubscribed', 'Ann@Example.com', { timestamp: Date.UTC(2024, 0, 2, 3, 4, 5) }), 200);
      const [hook] = received;
      assert.equal(hook?.headers.authorization, `OAuth2 ${sim.credentials.webhookAuthToken}`);
      assert.equal(hook?.headers['content-type'], 'application/json');
      assert.equal(hook?.body.eventName, 'emailUnSubscribe');
      assert.equal(hook?.body.email, 'Ann@Example.com');
      const fields = hook?.body.dataFields as Record<string, unknown>;
      assert.deepEqual([fields.createdAt, fields.unsubSource, fields.email], ['2024-01-02 03:04:05 +00:00', 'EmailLink', 'Ann@Example.com']);
      const bare = iterableSimulator({ webhookAuth: 'bare' });
      await bare.sendWebhook(url, 'inAppClick', 'a@example.com', { campaignId: 1 });
      assert.equal(received[1]?.headers.authorization, bare.credentials.webhookAuthToken);
      const none = iterableSimulator({ webhookAuth: 'none' });
      await none.sendEngagement(url, 'opened', 'a@example.com');
      assert.equal(received[2]?.headers.authorization, undefined);
    } finally {
      await receiver.close();
    }
  });
});
