/** The simulator follows shared/vendor-apis/encharge.md: checked here without the connector. */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { enchargeSimulator } from './simulator.js';

describe('encharge simulator', () => {
  const sim = enchargeSimulator();
  let app: FastifyInstance;
  const rest = () => ({ 'x-encharge-token': sim.credentials.apiKey, 'content-type': 'application/json' });
  const ingest = () => ({ 'x-encharge-token': sim.credentials.writeKey, 'content-type': 'application/json' });

  before(async () => {
    app = Fastify();
    await app.register(sim.plugin, { prefix: '/enc' });
    await app.ready();
  });
  after(() => app.close());
  beforeEach(() => sim.reset());

  it('takes the API key on REST (header or ?token=) and the write key on Ingest, never the other way round', async () => {
    assert.equal((await app.inject({ method: 'GET', url: '/enc/v1/fields', headers: rest() })).statusCode, 200);
    assert.equal((await app.inject({ method: 'GET', url: `/enc/v1/fields?token=${sim.credentials.apiKey}` })).statusCode, 200);
    const wrongKey = await app.inject({ method: 'GET', url: '/enc/v1/fields', headers: ingest() });
    assert.equal(wrongKey.statusCode, 401);
    assert.deepEqual(Object.keys(wrongKey.json().error).sort(), ['markdown', 'message', 'traceId'], 'the documented error envelope');
    const event = { name: 'Registered user', user: { email: 'jon@example.com' } };
    assert.equal((await app.inject({ method: 'POST', url: '/enc/ingest/v1/', headers: rest(), payload: event })).statusCode, 401);
    assert.equal((await app.inject({ method: 'POST', url: `/enc/ingest/v1/?token=${sim.credentials.writeKey}`, payload: event })).statusCode, 401, 'no query key on Ingest');
    assert.equal((await app.inject({ method: 'POST', url: '/enc/ingest/v1/', headers: ingest(), payload: event })).statusCode, 200);
  });

  it('POST /people upserts an array (the spec) or one object (common practice) and answers {users}', async () => {
    const arr = await app.inject({ method: 'POST', url: '/enc/v1/people', headers: rest(), payload: [{ email: 'Ann@Example.com', firstName: 'Ann', tags: 'a, b' }] });
    assert.equal(arr.statusCode, 200);
    assert.equal(arr.json().users[0].email, 'ann@example.com');
    const obj = await app.inject({ method: 'POST', url: '/enc/v1/people', headers: rest(), payload: { email: 'ann@example.com', lastName: 'Lee' } });
    assert.equal(obj.statusCode, 200);
    assert.deepEqual(sim.person('ann@example.com')?.fields, { firstName: 'Ann', lastName: 'Lee' });
    assert.deepEqual([...(sim.person('ann@example.com')?.tags ?? [])], ['a', 'b']);
    const read = await app.inject({ method: 'GET', url: '/enc/v1/people?people[0][email]=ann@example.com', headers: rest() });
    assert.equal(read.json().users.length, 1);
    assert.equal((await app.inject({ method: 'POST', url: '/enc/v1/people', headers: rest(), payload: [{ firstName: 'Nobody' }] })).statusCode, 400);
    assert.equal((await app.inject({ method: 'POST', url: '/enc/v1/people', headers: rest(), payload: '{"email":' })).statusCode, 400);
  });

  it('Ingest needs a name and a user with email or userId; `identify` only upserts', async () => {
    const post = (payload: unknown) => app.inject({ method: 'POST', url: '/enc/ingest/v1', headers: ingest(), payload: JSON.stringify(payload) });
    assert.equal((await post({ user: { email: 'a@b.co' } })).statusCode, 400);
    assert.equal((await post({ name: 'x', user: { firstName: 'A' } })).statusCode, 400);
    assert.equal((await post({ name: 'identify', user: { email: 'a@b.co', plan: 'pro' } })).statusCode, 200);
    assert.equal((await post({ name: 'Trial started', user: { userId: 'u1', email: 'a@b.co' }, properties: { days: 14 } })).statusCode, 200);
    assert.deepEqual(sim.events.map((e) => [e.name, e.properties]), [['Trial started', { days: 14 }]]);
    assert.equal(sim.person('u1')?.fields.plan, 'pro');
  });

  it('DELETE /people archives, or deletes with force=true; unsubscribe and tags answer 204/201', async () => {
    await app.inject({ method: 'POST', url: '/enc/v1/people', headers: rest(), payload: [{ email: 'a@b.co' }, { email: 'c@d.co' }] });
    assert.equal((await app.inject({ method: 'DELETE', url: '/enc/v1/people?people[0][email]=a@b.co', headers: rest() })).statusCode, 204);
    assert.equal([...sim.people.values()].find((p) => p.email === 'a@b.co')?.archived, true);
    assert.equal((await app.inject({ method: 'DELETE', url: '/enc/v1/people?people[0][email]=c@d.co&force=true', headers: rest() })).statusCode, 204);
    assert.equal([...sim.people.values()].some((p) => p.email === 'c@d.co'), false);
    assert.equal((await app.inject({ method: 'POST', url: '/enc/v1/tags', headers: rest(), payload: { tag: 'x,y', email: 'e@f.co' } })).statusCode, 201);
    assert.equal((await app.inject({ method: 'DELETE', url: '/enc/v1/tags', headers: rest(), payload: { tag: 'x', email: 'e@f.co' } })).statusCode, 204);
    assert.deepEqual([...(sim.person('e@f.co')?.tags ?? [])], ['y']);
    assert.equal((await app.inject({ method: 'POST', url: '/enc/v1/tags', headers: rest(), payload: { tag: 'x', users: [{ email: 'e@f.co' }] } })).statusCode, 400, 'the undocumented users form');
    assert.equal((await app.inject({ method: 'POST', url: '/enc/v1/people/unsubscribe?email=e@f.co', headers: rest() })).statusCode, 204);
    assert.equal(sim.person('e@f.co')?.unsubscribed, true);
    sim.unknownPeople = 'reject';
    assert.equal((await app.inject({ method: 'POST', url: '/enc/v1/people/unsubscribe?email=nobody@x.co', headers: rest() })).statusCode, 404);
  });

  it('event subscriptions: create (201 {subscription:{id}}) and delete; there is no list endpoint', async () => {
    const created = await app.inject({ method: 'POST', url: '/enc/v1/event-subscriptions', headers: rest(), payload: { eventType: 'newUser', url: 'https://example.com/hook' } });
    assert.equal(created.statusCode, 201);
    const id = created.json().subscription.id as number;
    assert.equal(typeof id, 'number');
    assert.equal((await app.inject({ method: 'POST', url: '/enc/v1/event-subscriptions', headers: rest(), payload: { url: 'https://example.com/hook' } })).statusCode, 400);
    assert.equal((await app.inject({ method: 'GET', url: '/enc/v1/event-subscriptions', headers: rest() })).statusCode, 404);
    assert.equal((await app.inject({ method: 'DELETE', url: `/enc/v1/event-subscriptions/${id}`, headers: rest() })).statusCode, 204);
    assert.equal(sim.subscriptions.length, 0);
  });
});
