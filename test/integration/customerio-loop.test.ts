/**
 * The first full loop, over real HTTP: Kommo stage change -> Customer.io identify + event with the
 * mapped attributes; Customer.io signed reporting webhooks -> notes, a hot-lead task, opt-out.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import type { CustomerioSimulator } from '../../src/destinations/customerio/simulator.js';
import { startWorld, type World } from '../../src/demo/world.js';
import { startService, type Service } from '../../src/runtime/service.js';
import { waitFor } from './wait.js';

describe('Kommo <-> Customer.io', () => {
  let world: World;
  let service: Service;
  let cio: CustomerioSimulator;
  let leadId: number;
  let contactId: number;
  const email = 'grace.hopper@example.com';

  before(async () => {
    world = await startWorld({ destinations: ['customerio'] });
    service = await startService({ loaded: world.loaded, log: pino({ level: 'silent' }), intake: true, work: true, port: 0, host: '127.0.0.1' });
    world.subscribe(service.url!);
    cio = world.vendors.get('customerio')!.sim as CustomerioSimulator;
    const k = world.kommo;
    const contact = k.createContact({ name: 'Grace Hopper', email: 'Grace.Hopper@Example.com', fields: { 'Email opt-in': true } });
    contactId = contact.id;
    leadId = k.createLead({ name: 'Navy deal', price: 42000, contactIds: [contact.id], fields: { Industry: 'Finance', Source: 'referral' } }).id;
    await k.flushWebhooks();
    await waitFor(() => cio.people.has(email), 'the new lead reached Customer.io');
  });
  after(async () => {
    await service?.close();
    await world?.close();
  });

  const cioUrl = () => world.vendorWebhookUrl(service.url!, 'customerio');
  const tasksFor = () => [...world.kommo.tasks.values()].filter((t) => t.entity_id === leadId);
  const notesFor = () => [...world.kommo.notes.values()].filter((n) => n.entity_id === leadId).map((n) => String(n.params.text));

  it('a stage change reaches Customer.io as identify + event with the mapped attributes', async () => {
    const k = world.kommo;
    k.moveLead(leadId, k.status('Proposal sent').id);
    await k.flushWebhooks();
    await waitFor(() => cio.events.some((e) => e.person === email && e.name === 'kommo_stage_changed'), 'stage event in Customer.io');
    const person = cio.people.get(email)!;
    assert.equal(person.kommo_stage, 'proposal_sent', 'stage key from the config');
    assert.equal(person.kommo_stage_name, 'Proposal sent');
    assert.equal(person.kommo_lead_id, leadId);
    assert.equal(person.deal_value, 42000);
    assert.equal(person.industry, 'Finance', 'custom field mapped by name');
    assert.equal(person.lead_source, 'referral');
    assert.equal(typeof person.responsible, 'string', 'responsible is the user name (admin token)');
    const ev = cio.events.find((e) => e.person === email && e.name === 'kommo_stage_changed')!;
    assert.equal(ev.data.stage, 'proposal_sent');
    assert.equal(ev.data.lead_id, leadId);
    assert.equal(ev.data.deal_value, 42000);
    assert.ok(cio.requests.every((r) => r.path.endsWith('/api/v2/batch') || r.path.includes('/accounts/region')), 'the batch endpoint is used');
  });

  it('a won deal sends its own configured event name', async () => {
    const k = world.kommo;
    const c = k.createContact({ name: 'Won Person', email: 'won@example.com' });
    const l = k.createLead({ name: 'Big win', price: 9000, contactIds: [c.id] });
    await k.flushWebhooks();
    k.moveLead(l.id, 142);
    await k.flushWebhooks();
    await waitFor(() => cio.events.some((e) => e.person === 'won@example.com' && e.name === 'deal_won'), 'deal_won event');
  });

  it('three signed opens create exactly one call task; a fourth within the cooldown creates none', async () => {
    for (let i = 0; i < 3; i++) assert.equal(await cio.sendEngagement(cioUrl(), 'opened', email, { subject: 'Proposal' }), 200);
    await waitFor(() => tasksFor().length === 1, 'one hot-lead task');
    const task = tasksFor()[0]!;
    assert.match(task.text, /3 opens/);
    assert.equal(task.responsible_user_id, world.kommo.leads.get(leadId)!.responsible_user_id, 'for the lead\'s responsible user');
    const dueInHours = (task.complete_till * 1000 - Date.now()) / 3_600_000;
    assert.ok(dueInHours > 7.9 && dueInHours <= 8, `due in 8 h, got ${dueInHours.toFixed(2)} h`);

    assert.equal(await cio.sendEngagement(cioUrl(), 'opened', email), 200);
    await waitFor(async () => (await service.store.stats(Date.now())).inboxPending === 0, 'fourth open routed');
    await waitFor(async () => (await service.store.stats(Date.now())).jobs.pending === 0, 'queue drained');
    assert.equal(tasksFor().length, 1, 'no second task within the cooldown');
  });

  it('an unsubscribe sets the opt-in field, adds the tag and writes a note', async () => {
    assert.equal(await cio.sendEngagement(cioUrl(), 'unsubscribed', email, { subject: 'Newsletter' }), 200);
    await waitFor(() => world.kommo.contacts.get(contactId)!.tags.some((t) => t.name === 'Email Unsubscribed'), 'tag on the contact');
    const contact = world.kommo.contacts.get(contactId)!;
    const optIn = contact.custom_fields_values?.find((f) => f.field_name === 'Email opt-in');
    assert.equal(optIn?.values[0]?.value, false, 'Email opt-in = false');
    await waitFor(() => notesFor().some((t) => /nsubscribed/.test(t)), 'unsubscribe note');
  });

  it('a click writes a note with the link', async () => {
    assert.equal(await cio.sendEngagement(cioUrl(), 'clicked', email, { subject: 'Pricing', link: 'https://acme.example/pricing' }), 200);
    await waitFor(() => notesFor().some((t) => t.includes('https://acme.example/pricing')), 'click note with the link');
  });

  describe('reporting webhook authentication', () => {
    const body = (id: string) => JSON.stringify({ event_id: id, object_type: 'email', metric: 'opened', timestamp: Math.floor(Date.now() / 1000), data: { identifiers: { id: '1', email }, recipient: email, subject: 'x', campaign_id: 1, delivery_id: 'd', action_id: 1 } });
    const post = (raw: string, ts: number, key: string) => fetch(cioUrl(), {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-cio-timestamp': String(ts), 'x-cio-signature': createHmac('sha256', key).update(`v0:${ts}:${raw}`).digest('hex') },
      body: raw,
    });
    const key = () => cio.credentials.webhookSigningKey;

    it('a bad signature gets 401', async () => {
      const res = await post(body('01HBADSIG0000000000000000'), Math.floor(Date.now() / 1000), 'not-the-key');
      assert.equal(res.status, 401);
      assert.equal(((await res.json()) as { error: string }).error.length > 0, true);
    });
    it('a timestamp older than 5 minutes gets 401', async () => {
      const res = await post(body('01HOLDTS00000000000000000'), Math.floor(Date.now() / 1000) - 301, key());
      assert.equal(res.status, 401);
    });
    it('a replayed event id is stored once', async () => {
      const raw = body('01HREPLAY0000000000000000');
      const now = Math.floor(Date.now() / 1000);
      const first = await post(raw, now, key());
      assert.deepEqual(await first.json(), { ok: true, accepted: 1, duplicates: 0 });
      const again = await post(raw, now, key());
      assert.deepEqual(await again.json(), { ok: true, accepted: 0, duplicates: 1 });
    });
  });

  it('our own writes in Kommo do not come back as new syncs (echo suppression)', async () => {
    // The unsubscribe above PATCHed the contact; Kommo fired contacts[update] for it.
    await world.kommo.flushWebhooks();
    await waitFor(async () => (await service.store.stats(Date.now())).inboxPending === 0, 'inbox drained');
    const metrics = await (await fetch(`${service.url}/metrics`)).text();
    assert.match(metrics, /kommo_sync_echoes_dropped_total\{account="acme"\} [1-9]/);
  });
});
