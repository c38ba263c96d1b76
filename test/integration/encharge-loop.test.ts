/**
 * Kommo <-> Encharge over real HTTP: a stage change upserts the person through the REST API (API
 * key) and sends the stage's event through the Ingest API (write key); Encharge's event
 * subscriptions (registered as `doctor --fix` does) and Activity Stream events come back as
 * intent-signal tasks, notes and the unsubscribe rule.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { encharge } from '../../src/destinations/encharge/index.js';
import type { EnchargeSettings } from '../../src/destinations/encharge/settings.js';
import type { EnchargeSimulator } from '../../src/destinations/encharge/simulator.js';
import { startWorld, type World } from '../../src/demo/world.js';
import { startService, type Service } from '../../src/runtime/service.js';
import { waitFor } from './wait.js';

describe('Kommo <-> Encharge', () => {
  let world: World;
  let service: Service;
  let sim: EnchargeSimulator;

  before(async () => {
    world = await startWorld({ destinations: ['encharge'] });
    service = await startService({ loaded: world.loaded, log: pino({ level: 'silent' }), intake: true, work: true, port: 0, host: '127.0.0.1' });
    world.subscribe(service.url!);
    sim = world.vendors.get('encharge')!.sim as EnchargeSimulator;
    // What `doctor --fix` does: subscribe our webhook URL to the events the rules use.
    const block = world.loaded.destinations[world.account]!.find((d) => d.type === 'encharge')!;
    const settings = { ...(block.settings as EnchargeSettings), webhookEvents: ['unsubscribedUser', 'added-tag-clicked-pricing', 'added-tag-visited-pricing'] };
    await encharge.webhookRegistration.register({ name: block.name, settings, identifyBy: 'email', log: pino({ level: 'silent' }), timeoutMs: 5000 }, hookUrl());
  });
  after(async () => {
    await service?.close();
    await world?.close();
  });

  const hookUrl = () => world.vendorWebhookUrl(service.url!, 'encharge');
  const tasksFor = (leadId: number) => [...world.kommo.tasks.values()].filter((t) => t.entity_id === leadId);
  const notesFor = (leadId: number) => [...world.kommo.notes.values()].filter((n) => n.entity_id === leadId).map((n) => String(n.params.text));
  const drained = async () => {
    await sim.flushWebhooks();
    await waitFor(async () => (await service.store.stats(Date.now())).inboxPending === 0, 'inbox drained');
    await waitFor(async () => (await service.store.stats(Date.now())).jobs.pending === 0, 'queue drained');
  };

  /** A lead known to Encharge (synced once), for one scenario each: the signal cooldown is per lead. */
  async function syncedLead(name: string, email: string): Promise<{ leadId: number; contactId: number }> {
    const k = world.kommo;
    const contact = k.createContact({ name, email, fields: { 'Email opt-in': true } });
    const lead = k.createLead({ name: `${name} deal`, price: 12000, contactIds: [contact.id], fields: { Industry: 'SaaS', Source: 'webinar' } });
    await k.flushWebhooks();
    await waitFor(() => sim.person(email) !== undefined, `${email} reached Encharge`);
    return { leadId: lead.id, contactId: contact.id };
  }

  it('a stage change upserts the person with the REST key and sends the stage\'s event to Ingest with the write key', async () => {
    const email = 'grace.hopper@example.com';
    const { leadId } = await syncedLead('Grace Brewster Hopper', email);
    const k = world.kommo;
    const before = sim.requests.length;
    k.moveLead(leadId, k.status('Proposal sent').id);
    await k.flushWebhooks();
    await waitFor(() => sim.events.some((e) => e.person === email && e.name === 'deal_moved_to_proposal_sent'), 'the stage event in Encharge');
    const person = sim.person(email)!;
    assert.equal(person.fields.firstName, 'Grace');
    assert.equal(person.fields.lastName, 'Brewster Hopper');
    assert.equal(person.fields.kommo_lead_id, leadId);
    assert.equal(person.fields.kommo_current_stage, 'proposal_sent');
    assert.equal(person.fields.industry, 'SaaS', 'custom field mapped by name');
    assert.ok(person.tags.has('proposal-sent'), 'the stage\'s tag (lists)');
    const event = sim.events.find((e) => e.person === email && e.name === 'deal_moved_to_proposal_sent')!;
    assert.equal(event.properties.lead_id, leadId);
    assert.equal(event.properties.stage, 'proposal_sent');
    const sent = sim.requests.slice(before).filter((r) => r.status < 300);
    const upsert = sent.find((r) => r.path === '/v1/people' && JSON.stringify(r.body).includes(email));
    const ingest = sent.find((r) => r.path === '/ingest/v1/' && JSON.stringify(r.body).includes('deal_moved_to_proposal_sent'));
    assert.equal(upsert?.headers['x-encharge-token'], sim.credentials.apiKey, 'REST with the API key');
    assert.equal(ingest?.headers['x-encharge-token'], sim.credentials.writeKey, 'Ingest with the write key');
  });

  it('added-tag-clicked-pricing creates one task and one note; a second signal within 24 h creates none', async () => {
    const email = 'ada.lovelace@example.com';
    const { leadId } = await syncedLead('Ada Lovelace', email);
    assert.deepEqual(await sim.tagPerson(email, 'clicked-pricing'), [200]);
    await waitFor(() => tasksFor(leadId).length === 1, 'one signal task');
    const task = tasksFor(leadId)[0]!;
    assert.equal(task.responsible_user_id, world.kommo.leads.get(leadId)!.responsible_user_id, 'for the lead\'s responsible user');
    const dueInHours = (task.complete_till * 1000 - Date.now()) / 3_600_000;
    assert.ok(dueInHours > 1.9 && dueInHours <= 2, `due in 2 h, got ${dueInHours.toFixed(2)} h`);
    await waitFor(() => notesFor(leadId).some((t) => t === `Intent signal: tag clicked-pricing (${email}, via encharge)`), 'a note naming the tag and the person\'s email');

    assert.deepEqual(await sim.tagPerson(email, 'visited-pricing'), [200]);
    await drained();
    assert.equal(tasksFor(leadId).length, 1, 'no second task within the cooldown');
    assert.equal(notesFor(leadId).filter((t) => /Intent signal/.test(t)).length, 1, 'no second signal note');
  });

  it('the same webhook delivered twice is stored once', async () => {
    const body = JSON.stringify({ endUserData: [{ id: 'enc-x', email: 'ada.lovelace@example.com' }], eventPayload: { tag: 'clicked-pricing' } });
    const post = async () => (await fetch(`${hookUrl()}?event=added-tag-clicked-pricing`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })).json();
    assert.deepEqual(await post(), { ok: true, accepted: 1, duplicates: 0 });
    assert.deepEqual(await post(), { ok: true, accepted: 0, duplicates: 1 });
  });

  it('a click in the pricing email (Activity Stream) creates a task; an open of a newsletter does not', async () => {
    const clicker = 'alan.turing@example.com';
    const reader = 'edsger.dijkstra@example.com';
    const a = await syncedLead('Alan Turing', clicker);
    const b = await syncedLead('Edsger Dijkstra', reader);
    assert.equal(await sim.sendEngagement(hookUrl(), 'clicked', clicker, { subject: 'Pricing', link: 'https://acme.example/pricing' }), 200);
    assert.equal(await sim.sendEngagement(hookUrl(), 'opened', reader, { subject: 'March newsletter' }), 200);
    await waitFor(() => tasksFor(a.leadId).length === 1, 'a task for the pricing click');
    await waitFor(() => notesFor(a.leadId).some((t) => /Intent signal: clicked the "pricing" email \(https:\/\/acme\.example\/pricing\)/.test(t)), 'a note naming the email');
    await drained();
    assert.equal(tasksFor(b.leadId).length, 0, 'a newsletter open is no signal');
  });

  it('unsubscribedUser tags the contact in Kommo, clears the opt-in field and writes a note', async () => {
    const email = 'barbara.liskov@example.com';
    const { leadId, contactId } = await syncedLead('Barbara Liskov', email);
    assert.deepEqual(await sim.unsubscribePerson(email), [200]);
    await waitFor(() => world.kommo.contacts.get(contactId)!.tags.some((t) => t.name === 'Email Unsubscribed'), 'tag on the contact');
    const optIn = world.kommo.contacts.get(contactId)!.custom_fields_values?.find((f) => f.field_name === 'Email opt-in');
    assert.equal(optIn?.values[0]?.value, false);
    await waitFor(() => notesFor(leadId).some((t) => /^Unsubscribed from email(: .+)? \(via encharge\)$/.test(t)), 'unsubscribe note');
  });

  it('nothing failed or was dead-lettered', async () => {
    await drained();
    const stats = await service.store.stats(Date.now());
    assert.equal(stats.jobs.dead, 0, JSON.stringify(stats));
    assert.equal(stats.inboxFailed, 0, JSON.stringify(stats));
    assert.ok(sim.webhookDeliveries.every((d) => d.status === 200), JSON.stringify(sim.webhookDeliveries));
  });
});
