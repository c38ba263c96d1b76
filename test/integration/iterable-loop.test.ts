/**
 * Kommo <-> Iterable over real HTTP: the service (intake, router, workers) against the Kommo and
 * Iterable simulators. Won, lost and moved deals reach Iterable as user updates, events, workflow
 * triggers and list changes; Iterable's system webhooks come back as notes, tasks, tags and fields.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import type { IterableSimulator } from '../../src/destinations/iterable/simulator.js';
import { SIM_IDS } from '../../src/destinations/iterable/simulator.js';
import { startWorld, type World } from '../../src/demo/world.js';
import { startService, type Service } from '../../src/runtime/service.js';
import { waitFor } from './wait.js';

const ENGAGEMENT = {
  notes: ['email.clicked', 'email.unsubscribed', 'email.bounced', 'message.clicked', 'message.bounced', 'journey.milestone'],
  hotLead: { on: 'email.opened', count: 3, within: '48h', cooldown: '24h', task: { text: 'Hot lead: {{count}} opens in {{within}} ({{email}}). Call them!', due: '8h' } },
  unsubscribe: { contactField: 'Email opt-in', value: false, tag: 'Email Unsubscribed', note: true },
  bounce: { tag: 'Email Bounced', note: true },
};

describe('Kommo <-> Iterable', () => {
  let world: World;
  let service: Service;
  let sim: IterableSimulator;

  before(async () => {
    world = await startWorld({ destinations: ['iterable'], account_overrides: { engagement: ENGAGEMENT } });
    service = await startService({ loaded: world.loaded, log: pino({ level: 'silent' }), intake: true, work: true, port: 0, host: '127.0.0.1' });
    world.subscribe(service.url!);
    sim = world.vendors.get('iterable')!.sim as IterableSimulator;
  });
  after(async () => {
    await service?.close();
    await world?.close();
  });

  const hookUrl = () => world.vendorWebhookUrl(service.url!, 'iterable');
  const notesFor = (leadId: number) => [...world.kommo.notes.values()].filter((n) => n.entity_id === leadId).map((n) => String(n.params.text));
  const itemsFor = (email: string, kind: string, from = 0) => sim.items.slice(from).filter((i) => i.person === email && i.kind === kind);
  const drained = async () => {
    await world.kommo.flushWebhooks();
    await waitFor(async () => {
      const s = await service.store.stats(Date.now());
      return s.inboxPending === 0 && s.jobs.pending === 0 && s.jobs.leased === 0;
    }, 'inbox and queue drained');
  };

  /** A lead with a contact (and a company), synced to Iterable as a new lead. */
  async function newLead(first: string, email: string, price = 9000): Promise<{ leadId: number; contactId: number }> {
    const k = world.kommo;
    const contact = k.createContact({ name: `${first} Lee`, email, fields: { 'Email opt-in': true } });
    const lead = k.createLead({ name: `${first}'s deal`, price, contactIds: [contact.id], fields: { Industry: 'SaaS', Source: 'website' }, statusId: k.status('Qualified').id });
    k.createCompany({ name: `${first} Corp`, leadIds: [lead.id], contactIds: [contact.id] });
    await k.flushWebhooks();
    await waitFor(() => sim.events.some((e) => e.person === email && e.eventName === 'crm_lead_created'), `${email} created in Iterable`);
    await drained();
    return { leadId: lead.id, contactId: contact.id };
  }

  it('a won deal: exactly one user update, one deal_won, one workflow trigger and the Kommo note', async () => {
    const email = 'ann.won@example.com';
    const { leadId } = await newLead('Ann', email);
    const from = sim.items.length;
    world.kommo.moveLead(leadId, 142);
    await drained();

    const user = sim.users.get(email)!;
    assert.deepEqual(
      [user.dataFields.firstName, user.dataFields.lastName, user.dataFields.company, user.dataFields.crmDealId, user.dataFields.dealValue, user.dataFields.isCustomer, user.dataFields.industry],
      ['Ann', 'Lee', 'Ann Corp', leadId, 9000, true, 'SaaS'],
    );
    assert.match(String(user.dataFields.wonAt), /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} \+00:00$/);

    assert.equal(itemsFor(email, 'upsertPerson', from).length, 1, 'one user update');
    assert.deepEqual(itemsFor(email, 'trackEvent', from).map((i) => [i.target, i.ok]), [['deal_won', true]]);
    assert.deepEqual(itemsFor(email, 'triggerWorkflow', from).map((i) => i.target), [String(SIM_IDS.wonWorkflow)]);
    const event = sim.events.find((e) => e.person === email && e.eventName === 'deal_won')!;
    assert.deepEqual([event.dataFields.dealId, event.dataFields.dealValue, event.dataFields.currency, event.dataFields.stageName], [leadId, 9000, 'USD', 'Closed - won']);
    const trigger = sim.workflowTriggers.find((w) => w.person === email)!;
    assert.deepEqual(trigger.dataFields, event.dataFields, 'the workflow gets the same data fields');

    const synced = notesFor(leadId).filter((t) => t.includes(`queued for iterable (identify, event deal_won, workflow ${SIM_IDS.wonWorkflow}`) && t.includes('Closed - won'));
    assert.equal(synced.length, 1, `one note saying what was sent where (notes: ${notesFor(leadId).join(' | ')})`);
  });

  it('a lost deal: isCustomer false and deal_lost with the loss reason\'s name', async () => {
    const email = 'bo.lost@example.com';
    const { leadId } = await newLead('Bo', email);
    world.kommo.moveLead(leadId, 143, undefined, { lossReason: 'Went with a competitor' });
    await drained();
    assert.equal(sim.users.get(email)?.dataFields.isCustomer, false);
    const lost = sim.events.filter((e) => e.person === email && e.eventName === 'deal_lost');
    assert.equal(lost.length, 1);
    assert.equal(lost[0]!.dataFields.lossReason, 'Went with a competitor');
    assert.equal(sim.workflowTriggers.some((w) => w.person === email), false, 'no workflow is configured for lost');
  });

  it('a stage change: crm_stage_changed, and the stage\'s list (left again on the next stage)', async () => {
    const email = 'cy.moves@example.com';
    const { leadId } = await newLead('Cy', email);
    const k = world.kommo;
    k.moveLead(leadId, k.status('Demo scheduled').id);
    await drained();
    const moved = sim.events.find((e) => e.person === email && e.eventName === 'crm_stage_changed')!;
    assert.deepEqual([moved.dataFields.stageName, moved.dataFields.stageId, moved.dataFields.pipeline, moved.dataFields.dealId], ['Demo scheduled', k.status('Demo scheduled').id, moved.dataFields.pipeline, leadId]);
    assert.equal(typeof moved.dataFields.pipeline, 'string');
    const demoList = String(SIM_IDS.lists['Demo scheduled']);
    assert.equal(sim.lists.get(demoList)?.has(email), true, 'subscribed on entering the stage');
    k.moveLead(leadId, k.status('Proposal sent').id);
    await drained();
    assert.equal(sim.lists.get(demoList)?.has(email), false, 'unsubscribed on leaving it (leaveLists: remove)');
  });

  it('a bulk answer with one failed item: only that item is retried, and lands once', async () => {
    const people = ['di.one@example.com', 'di.two@example.com', 'di.three@example.com'];
    const leads = [];
    for (const [i, email] of people.entries()) leads.push((await newLead(`Di${i}`, email)).leadId);
    const from = sim.items.length;
    sim.failItem(people[1]!, 'notFoundEmails', { endpoint: 'trackBulk' });
    const k = world.kommo;
    for (const id of leads) k.moveLead(id, k.status('Negotiation').id);
    await k.flushWebhooks();
    await waitFor(() => people.every((p) => sim.events.some((e) => e.person === p && e.eventName === 'crm_stage_changed')), 'every stage event in Iterable', 20_000);
    await drained();
    const sent = (email: string) => itemsFor(email, 'trackEvent', from).map((i) => (i.ok ? 'applied' : `refused:${i.reason}`));
    assert.deepEqual(sent(people[0]!), ['applied']);
    assert.deepEqual(sent(people[1]!), ['refused:notFoundEmails', 'applied'], 'the failed item was retried');
    assert.deepEqual(sent(people[2]!), ['applied'], 'the others were not sent again');
    assert.equal(sim.events.filter((e) => e.person === people[1] && e.eventName === 'crm_stage_changed').length, 1);
  });

  describe('system webhooks -> Kommo', () => {
    const email = 'eve.engaged@example.com';
    let leadId = 0;
    let contactId = 0;
    before(async () => {
      ({ leadId, contactId } = await newLead('Eve', email));
    });
    const tags = (id: number) => world.kommo.contacts.get(id)!.tags.map((t) => t.name);
    const post = (eventName: string, to: string, dataFields: Record<string, unknown> = {}) => sim.sendWebhook(hookUrl(), eventName, to, dataFields);

    it('three emailOpen webhooks create one hot-lead task', async () => {
      for (let i = 0; i < 3; i++) assert.equal(await sim.sendEngagement(hookUrl(), 'opened', email, { subject: 'Your proposal' }), 200);
      await waitFor(() => [...world.kommo.tasks.values()].some((t) => t.entity_id === leadId && /Hot lead: 3 opens/.test(t.text)), 'hot-lead task');
    });

    it('emailClick writes a note naming the link and the subject', async () => {
      assert.equal(await sim.sendEngagement(hookUrl(), 'clicked', email, { subject: 'Pricing for Eve', link: 'https://acme.example/pricing' }), 200);
      await waitFor(() => notesFor(leadId).some((t) => t.includes('https://acme.example/pricing') && t.includes('Pricing for Eve') && t.includes('via iterable')), 'click note');
    });

    it('inAppClick, smsBounce, pushBounce and a configured milestone write notes; an unknown event is stored and ignored', async () => {
      assert.equal(await post('inAppClick', email, { campaignId: 7800 }), 200);
      assert.equal(await post('smsBounce', email, { reason: 'Unreachable handset' }), 200);
      assert.equal(await post('pushBounce', email), 200);
      assert.equal(await post('completed onboarding', email, { journeyName: 'Onboarding' }), 200);
      await waitFor(() => {
        const notes = notesFor(leadId);
        return ['Message link clicked', 'Message bounced: SMS: Unreachable handset', 'Message bounced: push', 'Journey milestone: completed onboarding'].every((n) => notes.some((t) => t.includes(n)));
      }, 'notes for in-app click, SMS and push bounces, the milestone');
      for (const body of [{ email, eventName: 'emailSendSkip', dataFields: {} }, { email, eventName: 'viewed pricing page', dataFields: {} }]) {
        const res = await fetch(hookUrl(), { method: 'POST', headers: { 'content-type': 'application/json', authorization: `OAuth2 ${sim.credentials.webhookAuthToken}` }, body: JSON.stringify(body) });
        assert.deepEqual([res.status, await res.json()], [200, { ok: true, accepted: 1, duplicates: 0 }]);
      }
      // Stored (the dashboard lists it) and ignored: no note, task, tag or field comes of it.
      const before = notesFor(leadId).length;
      await drained();
      assert.equal(notesFor(leadId).length, before, 'no note for an unknown event');
    });

    it('emailBounce applies the bounce rule with the bounce message', async () => {
      assert.equal(await sim.sendEngagement(hookUrl(), 'bounced', email), 200);
      await waitFor(() => tags(contactId).includes('Email Bounced'), 'bounce tag');
      await waitFor(() => notesFor(leadId).some((t) => t.includes('Email bounced: 550 5.1.1')), 'bounce note with the message');
    });

    it('emailUnSubscribe applies the unsubscribe rule; the hosted-page click of the same message is stored once', async () => {
      const messageId = 'eve-unsub-message-1';
      assert.equal(await post('emailUnSubscribe', email, { messageId, unsubSource: 'EmailLink', channelId: 27447 }), 200);
      await waitFor(() => tags(contactId).includes('Email Unsubscribed'), 'unsubscribe tag');
      const optIn = world.kommo.contacts.get(contactId)!.custom_fields_values?.find((f) => f.field_name === 'Email opt-in');
      assert.equal(optIn?.values[0]?.value, false);
      await waitFor(() => notesFor(leadId).some((t) => t === 'Unsubscribed from email: EmailLink, channel 27447 (via iterable)'), 'unsubscribe note naming the source and the channel');
      const hosted = await fetch(hookUrl(), {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `OAuth2 ${sim.credentials.webhookAuthToken}` },
        body: JSON.stringify({ email, userId: 'kommo-contact-1', eventName: 'hostedUnsubscribeClick', dataFields: { messageId, url: 'https://links.example/u', email } }),
      });
      assert.deepEqual(await hosted.json(), { ok: true, accepted: 0, duplicates: 1 });
    });

    it('emailComplaint applies the unsubscribe rule and writes a note', async () => {
      const other = 'fay.annoyed@example.com';
      const { leadId: id, contactId: cid } = await newLead('Fay', other);
      assert.equal(await post('emailComplaint', other, { campaignId: 7740, emailSubject: 'Spring offer' }), 200);
      await waitFor(() => tags(cid).includes('Email Unsubscribed'), 'complaint tags the contact as unsubscribed');
      await waitFor(() => notesFor(id).some((t) => t.startsWith('Email marked as spam')), 'complaint note');
    });

    it('a redelivered webhook is stored once', async () => {
      const body = JSON.stringify({ email, eventName: 'emailOpen', dataFields: { messageId: 'm-dup', createdAt: '2024-05-06 14:22:31 +00:00', email } });
      const send = () => fetch(hookUrl(), { method: 'POST', headers: { 'content-type': 'application/json', authorization: sim.credentials.webhookAuthToken }, body });
      assert.deepEqual(await (await send()).json(), { ok: true, accepted: 1, duplicates: 0 });
      assert.deepEqual(await (await send()).json(), { ok: true, accepted: 0, duplicates: 1 });
    });
  });

  describe('webhook authentication', () => {
    const body = JSON.stringify({ email: 'x@example.com', eventName: 'emailOpen', dataFields: {} });
    const post = (url: string, headers: Record<string, string>) => fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });

    it('a wrong secret in the URL gets 401', async () => {
      const res = await post(`${service.url}/webhooks/${world.account}/iterable/not-the-secret-0123456789`, { authorization: `OAuth2 ${sim.credentials.webhookAuthToken}` });
      assert.equal(res.status, 401);
    });
    it('a wrong or missing Authorization token gets 401', async () => {
      const wrong = await post(hookUrl(), { authorization: 'OAuth2 not-the-token' });
      assert.deepEqual([wrong.status, ((await wrong.json()) as { error: string }).error], [401, 'invalid_token']);
      const missing = await post(hookUrl(), {});
      assert.deepEqual([missing.status, ((await missing.json()) as { error: string }).error], [401, 'missing_token']);
    });
    it('a body that is not JSON gets 400', async () => {
      const res = await fetch(hookUrl(), { method: 'POST', headers: { 'content-type': 'application/json', authorization: sim.credentials.webhookAuthToken }, body: '{not json' });
      assert.equal(res.status, 400);
    });
  });
});
