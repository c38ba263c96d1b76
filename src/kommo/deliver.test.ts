import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { StaticTokenProvider } from './auth.js';
import { KommoClient } from './client.js';
import { KommoApiError } from './transport.js';
import { classifyError, deliverKommoOps } from './deliver.js';
import { StoreEchoMarks } from './echo.js';
import type { KommoOp } from '../model/index.js';
import { CircuitBreaker, SlidingWindowLimiter } from './rate-limit.js';
import { DEFAULT_ACCESS_TOKEN, KommoSimulator } from './simulator/index.js';
import { openSqliteStore } from '../store/sqlite.js';
import type { Store } from '../store/store.js';

describe('deliverKommoOps over the simulator', () => {
  const sim = new KommoSimulator({ subdomain: 'acme' });
  let client: KommoClient;
  let store: Store;
  let echo: StoreEchoMarks;
  let leadId: number;
  let contactId: number;

  before(async () => {
    const baseUrl = await sim.listen(0);
    client = new KommoClient({
      account: 'deliver-test',
      baseUrl,
      auth: new StaticTokenProvider(DEFAULT_ACCESS_TOKEN),
      limiter: new SlidingWindowLimiter(7),
      breaker: new CircuitBreaker(),
    });
    store = await openSqliteStore(':memory:');
    await store.migrate();
    echo = new StoreEchoMarks(store, 'deliver-test');
    const contact = sim.createContact({ name: 'Ann', email: 'ann@x.com', tags: ['VIP'] });
    contactId = contact.id;
    leadId = sim.createLead({ name: 'Deal', price: 100, contactIds: [contact.id] }).id;
  });
  after(async () => {
    await sim.close();
    await store.close();
  });

  const posts = (path: string) => sim.requests.filter((r) => r.method === 'POST' && r.path === path).length;

  it('sends 300 notes in 6 requests of 50 (the write size Kommo recommends), one ok result per note', async () => {
    sim.resetLog();
    const before = sim.notes.size;
    const ops: KommoOp[] = Array.from({ length: 300 }, (_, i) => ({ kind: 'addNote', leadId, text: `note ${i}` }));
    const results = await deliverKommoOps(client, ops, echo);
    assert.equal(results.length, 300);
    assert.ok(results.every((r) => 'ok' in r));
    assert.equal(posts('/api/v4/leads/notes'), 6);
    assert.equal(sim.notes.size - before, 300);
    const texts = [...sim.notes.values()].slice(-300).map((n) => n.params['text']);
    assert.equal(texts[0], 'note 0');
    assert.equal(texts[299], 'note 299');
  });

  it('a validation error fails only its item; the others are written exactly once', async () => {
    sim.resetLog();
    const before = sim.notes.size;
    const ops: KommoOp[] = [
      { kind: 'addNote', leadId, text: 'a' },
      { kind: 'addNote', leadId: 99_999_999, text: 'b' },
      { kind: 'addNote', leadId, text: 'c' },
      { kind: 'updateContact', contactId, fields: [{ fieldId: 99_999_999, value: 'x' }] },
      { kind: 'updateContact', contactId: sim.createContact({ name: 'Bo', email: 'bo@x.com' }).id, tagsToAdd: ['Newsletter'] },
    ];
    const results = await deliverKommoOps(client, ops, echo);
    assert.ok('ok' in results[0]!);
    assert.deepEqual('fail' in results[1]! && results[1].fail.code, 'not_found');
    assert.ok('ok' in results[2]!);
    assert.ok('fail' in results[3]! && results[3].fail.code === 'invalid', JSON.stringify(results[3]));
    assert.ok('fail' in results[3]! && /custom_fields_values\.0\.field_id/.test(results[3].fail.reason));
    assert.ok('ok' in results[4]!);
    assert.equal(sim.notes.size - before, 2);
    assert.deepEqual([...sim.notes.values()].slice(-2).map((n) => n.params['text']), ['a', 'c']);
  });

  it('adds tags incrementally, writes fields by id or code, moves leads, and records echo marks', async () => {
    sim.resetLog();
    const optIn = sim.field('contacts', 'Email opt-in')!;
    const won = sim.status('Proposal sent');
    const results = await deliverKommoOps(client, [
      { kind: 'updateContact', contactId, fields: [{ fieldId: optIn.id, value: false }, { fieldCode: 'PHONE', value: '+1 555' }], tagsToAdd: ['Email Unsubscribed'] },
      { kind: 'moveLead', leadId, pipelineId: sim.mainPipeline.id, statusId: won.id },
      { kind: 'addTask', leadId, text: 'Call them', completeTill: Math.floor(Date.now() / 1000) + 3600, taskTypeId: 1 },
    ], echo);
    assert.ok(results.every((r) => 'ok' in r), JSON.stringify(results));

    const contact = sim.contacts.get(contactId)!;
    assert.deepEqual(contact.tags.map((t) => t.name).sort(), ['Email Unsubscribed', 'VIP']);
    const phone = contact.custom_fields_values?.find((f) => f.field_code === 'PHONE');
    assert.equal(phone?.values[0]?.value, '+1 555');
    const lead = sim.leads.get(leadId)!;
    assert.equal(lead.status_id, won.id);
    assert.ok([...sim.tasks.values()].some((t) => t.entity_id === leadId && t.text === 'Call them'));

    assert.deepEqual(await echo.echoes([{ entity: 'contact', id: contactId, updatedAt: contact.updated_at }]), [true]);
    assert.deepEqual(await echo.echoes([{ entity: 'lead', id: leadId, updatedAt: lead.updated_at }]), [true]);
    assert.deepEqual(await echo.echoes([{ entity: 'lead', id: leadId, updatedAt: lead.updated_at + 1 }]), [false], 'a later human edit is not an echo');
    assert.deepEqual(
      await echo.echoes([
        { entity: 'lead', id: leadId, updatedAt: lead.updated_at + 1 },
        { entity: 'contact', id: contactId, updatedAt: contact.updated_at },
        { entity: 'lead', id: leadId, updatedAt: lead.updated_at },
      ]),
      [false, true, true],
      'the batched check answers per item, in order',
    );
  });

  it('PATCHes two updates of one contact in order, in separate requests', async () => {
    sim.resetLog();
    const results = await deliverKommoOps(client, [
      { kind: 'updateContact', contactId, tagsToAdd: ['First'] },
      { kind: 'updateContact', contactId, tagsToAdd: ['Second'] },
    ], echo);
    assert.ok(results.every((r) => 'ok' in r));
    assert.equal(sim.requests.filter((r) => r.method === 'PATCH' && r.path === '/api/v4/contacts').length, 2);
    assert.ok(sim.contacts.get(contactId)!.tags.some((t) => t.name === 'Second'));
  });
});

describe('classifyError', () => {
  const e = (status: number, extra: Partial<ConstructorParameters<typeof KommoApiError>[0]> = {}) =>
    classifyError(new KommoApiError({ status, detail: 'x', path: '/api/v4/leads', ...extra }));

  it('maps Kommo answers to retry / fail codes', () => {
    assert.deepEqual(e(429, { retryAfterMs: 2000 }), { retry: { reason: 'Kommo 429: x', afterMs: 2000 }, httpStatus: 429 });
    assert.ok('retry' in e(503));
    assert.ok('retry' in e(0) && e(0).httpStatus === undefined);
    const blocked = e(403, { retryAfterMs: 1000 });
    assert.ok('retry' in blocked && (blocked.retry.afterMs ?? 0) >= 15 * 60_000, 'a block lifts: retry much later');
    const code = (status: number) => {
      const r = e(status);
      return 'fail' in r ? r.fail.code : null;
    };
    assert.equal(code(401), 'auth');
    assert.equal(code(404), 'not_found');
    assert.equal(code(400), 'invalid');
    assert.equal(code(422), 'invalid');
    assert.equal(code(405), 'rejected');
  });
});
