/**
 * The simulators against shared/vendor-apis/segment.md, through raw requests (no connector code):
 * what each vendor answers, what it applies, and what it drops silently.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify';
import { rudderstackSimulator, segmentSimulator } from './simulator.js';

const basic = (key: string, password = '') => `Basic ${Buffer.from(`${key}:${password}`).toString('base64')}`;
const json = { 'content-type': 'application/json' };
const MID = '01HF6Z3F2V5W4X7Y8Z9A0B1C2D';

describe('segment simulator', () => {
  let clock = 1_700_000_000_000;
  const sim = segmentSimulator({ region: 'eu', now: () => clock });
  let app: FastifyInstance;
  const post = (url: string, payload: unknown, headers: Record<string, string> = { ...json, authorization: basic(sim.writeKey) }): Promise<LightMyRequestResponse> =>
    app.inject({ method: 'POST', url: `/seg${url}`, headers, payload: typeof payload === 'string' ? payload : JSON.stringify(payload) });
  const track = (extra: Record<string, unknown> = {}) => ({ type: 'track', userId: 'Ann@Example.com', event: 'Deal Won', messageId: MID, ...extra });

  before(async () => {
    app = Fastify();
    await app.register(sim.plugin, { prefix: '/seg' });
    await app.ready();
  });
  after(() => app.close());

  it('serves both regional hosts and gives settings for the workspace region', () => {
    assert.deepEqual(sim.hosts('http://h/seg/'), { us: 'http://h/seg/v1', eu: 'http://h/seg/eu1/v1' });
    assert.deepEqual(sim.settingsFor('http://h/seg'), { writeKey: sim.writeKey, region: 'eu', baseUrl: 'http://h/seg/eu1/v1' });
    assert.match(sim.writeKey, /^[A-Za-z0-9]{32}$/);
  });

  it('applies a batch: 200 {"success":true}, traits merged, group members, neutral items', async () => {
    sim.reset();
    const res = await post('/eu1/v1/batch', {
      batch: [
        { type: 'identify', userId: 'Ann@Example.com', traits: { plan: 'pro' }, messageId: 'a' },
        { type: 'identify', userId: 'Ann@Example.com', traits: { customer: true }, messageId: 'b' },
        { type: 'group', userId: 'Ann@Example.com', groupId: 'kommo-company-5', traits: { name: 'Acme' }, messageId: 'c' },
        track(),
        { type: 'page', anonymousId: 'anon-1', name: 'Pricing' },
      ],
      context: { library: { name: 'kommo-sync' } },
    });
    assert.deepEqual([res.statusCode, res.json()], [200, { success: true }]);
    assert.deepEqual(sim.profiles.get('Ann@Example.com'), { plan: 'pro', customer: true });
    assert.deepEqual([...sim.groups.get('kommo-company-5')!.members], ['Ann@Example.com']);
    assert.deepEqual(sim.messages.find((m) => m.type === 'track')?.context, { library: { name: 'kommo-sync' } }, 'top-level context merged in');
    assert.deepEqual(sim.items.map((i) => [i.kind, i.person, i.target, i.ok]), [
      ['upsertPerson', 'ann@example.com', undefined, true],
      ['upsertPerson', 'ann@example.com', undefined, true],
      ['groupAccount', 'ann@example.com', 'kommo-company-5', true],
      ['trackEvent', 'ann@example.com', 'Deal Won', true],
    ]);
    assert.equal(sim.messages.length, 5);
    assert.equal(sim.requests.at(-1)?.path, '/eu1/v1/batch');
  });

  it('takes the write key from Basic auth (password ignored), from the body, or from the body with a Bearer token', async () => {
    sim.reset();
    await post('/eu1/v1/track', track({ messageId: '1' }), { ...json, authorization: basic(sim.writeKey, 'ignored') });
    await post('/eu1/v1/track', { ...track({ messageId: '2' }), writeKey: sim.writeKey }, json);
    await post('/eu1/v1/track', { ...track({ messageId: '3' }), writeKey: sim.writeKey }, { ...json, authorization: 'Bearer some-oauth-token' });
    assert.deepEqual(sim.items.map((i) => i.ok), [true, true, true]);
  });

  it('answers 200 to a wrong write key, the other region, missing ids and unnamed tracks, and drops them', async () => {
    sim.reset();
    const wrong = await post('/eu1/v1/batch', { batch: [track()] }, { ...json, authorization: basic('wrong-write-key') });
    const usHost = await post('/v1/batch', { batch: [track()] });
    const noIds = await post('/eu1/v1/identify', { traits: { a: 1 } });
    const unnamed = await post('/eu1/v1/track', { userId: 'x', event: '' });
    for (const res of [wrong, usHost, noIds, unnamed]) assert.deepEqual([res.statusCode, res.json()], [200, { success: true }]);
    assert.equal(sim.messages.length, 0);
    assert.deepEqual(sim.items.map((i) => [i.ok, i.reason?.split(':')[0]]), [
      [false, 'unknown write key'],
      [false, 'sent to the us host, but the workspace lives in eu'],
      [false, 'no_user_anon_id'],
      [false, 'event_not_defined'],
    ]);
  });

  it('refuses oversized requests and bad JSON with 400, whole', async () => {
    sim.reset();
    const big = 'x'.repeat(32_000);
    assert.equal((await post('/eu1/v1/track', track({ properties: { big } }))).statusCode, 400, 'a single call over 32 KB');
    const oneBig = await post('/eu1/v1/batch', { batch: [track({ messageId: 'ok' }), track({ messageId: 'big', properties: { big } })] });
    assert.equal(oneBig.statusCode, 400, 'a batch with one event over 32 KB');
    const many = Array.from({ length: 20 }, (_, i) => track({ messageId: `m${i}`, properties: { pad: 'y'.repeat(26_000) } }));
    assert.equal((await post('/eu1/v1/batch', { batch: many })).statusCode, 400, 'a batch over 500 KB');
    const bad = await post('/eu1/v1/batch', '{"batch": [');
    assert.deepEqual([bad.statusCode, bad.json().success], [400, false]);
    assert.equal((await post('/eu1/v1/batch', { batch: [] }, { 'content-type': 'text/plain', authorization: basic(sim.writeKey) })).statusCode, 400);
    assert.equal(sim.items.length, 0, 'nothing of a refused request is applied');
  });

  it('rejects every event of a batch over 2,500 events, still with 200', async () => {
    sim.reset();
    const batch = Array.from({ length: 2501 }, (_, i) => ({ type: 'track', userId: 'u', event: 'e', messageId: `x${i}` }));
    const res = await post('/eu1/v1/batch', { batch });
    assert.equal(res.statusCode, 200);
    assert.equal(sim.messages.length, 0);
    assert.ok(sim.items.every((i) => !i.ok && /at most 2500/.test(i.reason ?? '')));
  });

  it('deduplicates by messageId for 24 hours; ids of 100 characters or more are dropped', async () => {
    sim.reset();
    await post('/eu1/v1/track', track());
    await post('/eu1/v1/batch', { batch: [track()] });
    assert.equal(sim.messages.length, 1);
    assert.deepEqual(sim.items.map((i) => [i.ok, i.duplicate ?? false]), [[true, false], [true, true]]);
    clock += 24 * 3_600_000;
    await post('/eu1/v1/track', track());
    assert.equal(sim.messages.length, 2, 'outside the window it counts again');
    await post('/eu1/v1/track', track({ messageId: 'm'.repeat(100) }));
    assert.match(sim.items.at(-1)?.reason ?? '', /under 100 characters/);
    await post('/eu1/v1/track', track({ messageId: undefined }));
    assert.match(sim.messages.at(-1)?.messageId ?? '', /^sim-/, 'a message without id gets one');
  });

  it('answers its 429 with Retry-After and X-RateLimit-Reset when over its per-second cap', async () => {
    const capped = segmentSimulator({ perSecond: 1 });
    const capApp = Fastify();
    await capApp.register(capped.plugin);
    const send = () => capApp.inject({ method: 'POST', url: '/v1/batch', headers: { ...json, authorization: basic(capped.writeKey) }, payload: '{"batch":[]}' });
    // Three quick calls cross at most one second boundary, so two share a second: one is over.
    const answers = [await send(), await send(), await send()];
    await capApp.close();
    const limited = answers.find((a) => a.statusCode === 429);
    assert.ok(limited, answers.map((a) => a.statusCode).join());
    assert.equal(limited.headers['retry-after'], '1');
    assert.equal(limited.headers['x-ratelimit-reset'], '1');
  });
});

describe('rudderstack simulator', () => {
  const sim = rudderstackSimulator();
  let app: FastifyInstance;
  const post = (payload: string | object, headers: Record<string, string> = { ...json, authorization: basic(sim.writeKey) }, url = '/rs/v1/batch') =>
    app.inject({ method: 'POST', url, headers, payload: typeof payload === 'string' ? payload : JSON.stringify(payload) });
  const event = (messageId = MID) => ({ type: 'track', userId: 'u1', event: 'Deal Won', messageId });

  before(async () => {
    app = Fastify();
    await app.register(sim.plugin, { prefix: '/rs' });
    await app.ready();
  });
  after(() => app.close());

  it('gives settings for its data plane', () => {
    assert.deepEqual(sim.settingsFor('http://h/rs/'), { writeKey: sim.writeKey, dataPlaneUrl: 'http://h/rs' });
    assert.match(sim.writeKey, /^[A-Za-z0-9]{27}$/);
  });

  it('answers 200 OK as text, and ignores the Basic password', async () => {
    sim.reset();
    const res = await post({ batch: [event()] }, { ...json, authorization: basic(sim.writeKey, '""') });
    assert.deepEqual([res.statusCode, res.body, res.headers['content-type']], [200, 'OK', 'text/plain; charset=utf-8']);
    assert.equal(sim.messages.length, 1);
  });

  it('refuses a missing or unknown write key with 401 texts; a body writeKey does not count', async () => {
    const none = await post({ batch: [event()], writeKey: sim.writeKey }, json);
    assert.deepEqual([none.statusCode, none.body], [401, 'Failed to read writeKey from header']);
    const wrong = await post({ batch: [event()] }, { ...json, authorization: basic('nope') });
    assert.deepEqual([wrong.statusCode, wrong.body], [401, 'Invalid Write Key']);
  });

  it('answers 404 for a disabled source, 413 over 4 MB, 400 for bad JSON, no body, or a message without ids', async () => {
    sim.setSourceEnabled(false);
    assert.deepEqual(await post({ batch: [event()] }).then((r) => [r.statusCode, r.body]), [404, 'Source is disabled']);
    sim.setSourceEnabled(true);
    const huge = { batch: Array.from({ length: 140 }, (_, i) => ({ ...event(`h${i}`), properties: { pad: 'z'.repeat(30_000) } })) };
    assert.deepEqual(await post(huge).then((r) => [r.statusCode, r.body]), [413, 'Request size exceeds max limit']);
    assert.deepEqual(await post('{"batch": [').then((r) => [r.statusCode, r.body]), [400, 'Invalid JSON']);
    assert.deepEqual(await post('').then((r) => [r.statusCode, r.body]), [400, 'Request body is nil']);
    const noIds = await post({ batch: [event('ok'), { type: 'identify', traits: {} }] });
    assert.deepEqual([noIds.statusCode, noIds.body], [400, 'Request neither has anonymousId nor userId']);
  });

  it('does not deduplicate by messageId unless the gateway option is on', async () => {
    sim.reset();
    await post({ batch: [event()] });
    await post({ batch: [event()] });
    assert.equal(sim.messages.length, 2);
    const deduping = rudderstackSimulator({ dedup: true });
    const dApp = Fastify();
    await dApp.register(deduping.plugin);
    for (let i = 0; i < 2; i++) {
      await dApp.inject({ method: 'POST', url: '/v1/track', headers: { ...json, authorization: basic(deduping.writeKey) }, payload: JSON.stringify(event()) });
    }
    await dApp.close();
    assert.equal(deduping.messages.length, 1);
    assert.equal(deduping.items.at(-1)?.duplicate, true);
  });
});
