/**
 * Kommo <-> Moosend over real HTTP: a stage change subscribes the contact to the stage's list with
 * its custom fields (once); Moosend automation webhooks and the unsubscribe sweep bring opt-outs
 * back as the Kommo unsubscribe rule, once per person whichever path sees them first; Moosend's
 * rate-limit envelope (HTTP 200) is retried until the subscription lands.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { parse, stringify } from 'yaml';
import { parseConfigText } from '../../src/config/load.js';
import { startWorld, type World } from '../../src/demo/world.js';
import type { MoosendSimulator } from '../../src/destinations/moosend/simulator.js';
import { startService, type Service } from '../../src/runtime/service.js';
import { waitFor } from './wait.js';

interface Block {
  lists: Record<string, string>;
  [key: string]: unknown;
}

describe('Kommo <-> Moosend', () => {
  let world: World;
  let service: Service;
  let sim: MoosendSimulator;
  let lists: Record<string, string>;

  before(async () => {
    world = await startWorld({ destinations: ['moosend'] });
    // The example mapping: Industry as a custom field (KommoStage, DealValue and Name are defaults).
    const cfg = parse(world.yaml) as { accounts: { acme: { destinations: { moosend: Block } } } };
    const block = cfg.accounts.acme.destinations.moosend;
    block.attributes = { Industry: 'lead.fields["Industry"]' };
    lists = block.lists;
    const loaded = parseConfigText(stringify(cfg), 'moosend-loop.yaml', {});
    service = await startService({ loaded, log: pino({ level: 'silent' }), intake: true, work: true, port: 0, host: '127.0.0.1' });
    world.subscribe(service.url!);
    sim = world.vendors.get('moosend')!.sim as MoosendSimulator;
  });
  after(async () => {
    await service?.close();
    await world?.close();
  });

  const hookUrl = () => world.vendorWebhookUrl(service.url!, 'moosend');
  const drained = async () => {
    await waitFor(async () => {
      const s = await service.store.stats(Date.now());
      return s.inboxPending === 0 && s.jobs.pending === 0 && s.jobs.leased === 0;
    }, 'inbox and queue drained');
  };
  const person = (name: string, email: string, price: number, industry: string) => {
    const k = world.kommo;
    const contact = k.createContact({ name, email, fields: { 'Email opt-in': true } });
    const lead = k.createLead({ name: `${name}'s deal`, price, contactIds: [contact.id], fields: { Industry: industry } });
    return { contactId: contact.id, leadId: lead.id, email: email.toLowerCase() };
  };
  const notesOf = (leadId: number) => [...world.kommo.notes.values()].filter((n) => n.entity_id === leadId).map((n) => String(n.params.text));
  const contactOf = (id: number) => world.kommo.contacts.get(id)!;
  const optIn = (id: number) => contactOf(id).custom_fields_values?.find((f) => f.field_name === 'Email opt-in')?.values[0]?.value;
  const unsubscribed = (id: number) => contactOf(id).tags.some((t) => t.name === 'Email Unsubscribed') && optIn(id) === false;
  const sweepSource = () => service.accounts.get('acme')!.sweepSources().find((s) => s.name === 'moosend')!;

  let grace: { contactId: number; leadId: number; email: string };

  it('entering a mapped stage subscribes the contact once, with the custom fields', async () => {
    const k = world.kommo;
    grace = person('Grace Hopper', 'Grace.Hopper@Example.com', 42000, 'Finance');
    await k.flushWebhooks();
    // Routed before the move: a lead.created enriched after it would see (and subscribe to) the new stage.
    await drained();
    k.moveLead(grace.leadId, k.status('Demo scheduled').id);
    await k.flushWebhooks();
    await waitFor(() => sim.member(lists['Demo scheduled']!, grace.email)?.subscribeType === 1, 'subscribed to the Demo scheduled list');
    const m = sim.member(lists['Demo scheduled']!, grace.email)!;
    assert.equal(m.name, 'Grace Hopper');
    assert.deepEqual(Object.fromEntries(m.fields), { KommoStage: 'Demo scheduled', DealValue: '42000', Industry: 'Finance' });
    assert.equal(m.externalOptIn, true);
    await drained();
    const subscribes = sim.requests.filter((r) => r.path.endsWith('/subscribe.json') || r.path.endsWith('/subscribe_many.json'));
    assert.equal(subscribes.length, 1, 'one subscribe for one stage entry (the lead.updated that comes with it sends nothing)');
    assert.equal(sim.lists.get(lists['Demo scheduled']!)!.members.size, 1);
  });

  it('the same Kommo webhook again changes nothing', async () => {
    const sent = world.kommo.webhooksSent.filter((w) => w.event === 'status_lead').at(-1)!;
    const before = sim.requests.length;
    const res = await fetch(world.kommoWebhookUrl(service.url!), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: sent.body });
    assert.deepEqual(await res.json(), { ok: true, accepted: 0, duplicates: 1 });
    await drained();
    assert.equal(sim.requests.length, before);
  });

  it('moving on keeps the earlier stage list by default (leaveLists: keep) and subscribes to the next', async () => {
    const k = world.kommo;
    k.moveLead(grace.leadId, k.status('Proposal sent').id);
    await k.flushWebhooks();
    await waitFor(() => sim.member(lists['Proposal sent']!, grace.email)?.subscribeType === 1, 'subscribed to the Proposal sent list');
    assert.equal(sim.member(lists['Proposal sent']!, grace.email)!.fields.get('KommoStage'), 'Proposal sent');
    assert.equal(sim.member(lists['Demo scheduled']!, grace.email)!.subscribeType, 1, 'still in the earlier list');
  });

  it('an unsubscribe webhook sets the opt-in field, adds the tag and writes a note', async () => {
    assert.equal(await sim.sendEngagement(hookUrl(), 'unsubscribed', grace.email), 200);
    await waitFor(() => unsubscribed(grace.contactId), 'opt-in false and the tag on the contact');
    await waitFor(() => notesOf(grace.leadId).some((t) => /^Unsubscribed from email(: .+)? \(via moosend\)$/.test(t)), 'unsubscribe note');
  });

  it('a click from an automation webhook writes a note with the link', async () => {
    sim.webhookFormat = 'form';
    try {
      assert.equal(await sim.sendEngagement(hookUrl(), 'clicked', grace.email, { link: 'https://acme.example/pricing' }), 200);
    } finally {
      sim.webhookFormat = 'json';
    }
    await waitFor(() => notesOf(grace.leadId).some((t) => t.includes('https://acme.example/pricing')), 'click note with the link');
  });

  it('an unsubscribe only the sweep sees gets the same effect; each person is handled once', async () => {
    const k = world.kommo;
    const ada = person('Ada Lovelace', 'ada@example.com', 9000, 'Education');
    await k.flushWebhooks();
    await drained();
    k.moveLead(ada.leadId, k.status('Demo scheduled').id);
    await k.flushWebhooks();
    await waitFor(() => sim.member(lists['Demo scheduled']!, ada.email)?.subscribeType === 1, 'Ada subscribed');
    // Nothing left in flight: a late subscribe would re-subscribe her (as Moosend is said to do).
    await drained();
    // She clicks "unsubscribe" in an email; no automation posts a webhook for it.
    sim.unsubscribeMember(lists['Demo scheduled']!, ada.email);

    // Grace is in the unsubscribed listing too, but the webhook already handled her.
    assert.equal(await service.sweeper!.runOnce(sweepSource(), { force: true }), 1, 'one new event: Ada');
    await waitFor(() => unsubscribed(ada.contactId), 'Ada: opt-in false and the tag');
    await waitFor(() => notesOf(ada.leadId).some((t) => /Unsubscribed from email/.test(t)), 'Ada: unsubscribe note');

    assert.equal(await service.sweeper!.runOnce(sweepSource(), { force: true }), 0, 'a second sweep finds nothing new');
    const late = await fetch(`${hookUrl()}?event=unsubscribed`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ Email: 'Ada@Example.com' }) });
    assert.deepEqual(await late.json(), { ok: true, accepted: 0, duplicates: 1 }, 'the late webhook is a duplicate');
    await drained();
    assert.equal(notesOf(ada.leadId).filter((t) => /Unsubscribed/.test(t)).length, 1);
    assert.equal(notesOf(grace.leadId).filter((t) => /Unsubscribed/.test(t)).length, 1);
  });

  it('a rate-limit envelope with HTTP 200 is retried after the window, and nothing is lost', { timeout: 60_000 }, async () => {
    const k = world.kommo;
    const alan = person('Alan Turing', 'alan@example.com', 5000, 'SaaS');
    await k.flushWebhooks();
    await drained();
    const throttledBefore = sim.throttled;
    sim.rateLimitNext(1);
    k.moveLead(alan.leadId, k.status('Negotiation').id);
    await k.flushWebhooks();
    await waitFor(() => sim.throttled > throttledBefore, 'Moosend answered with the rate-limit envelope');
    const throttledReq = sim.requests.filter((r) => r.path.endsWith('/subscribe.json')).at(-1)!;
    assert.equal(throttledReq.status, 200, 'inside HTTP 200');
    await waitFor(() => sim.member(lists.Negotiation!, alan.email)?.subscribeType === 1, 'subscribed after the retry', 30_000);
    await drained();
    const stats = await service.store.stats(Date.now());
    assert.equal(stats.jobs.dead, 0);
    assert.deepEqual(Object.fromEntries(sim.member(lists.Negotiation!, alan.email)!.fields), { KommoStage: 'Negotiation', DealValue: '5000', Industry: 'SaaS' });
  });
});
