/**
 * Kommo -> Segment and RudderStack over real HTTP: the real service (intake, router, worker) on the
 * simulated world. Won -> identify + track + group with the right fields; lost, stage changes, new
 * leads and owner changes by Segment's naming; a replayed job is deduplicated by messageId; the
 * RudderStack variant goes to its data plane with its own write key.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { parse, stringify } from 'yaml';
import { parseConfigText } from '../../src/config/load.js';
import { startWorld, type World } from '../../src/demo/world.js';
import { authorization } from '../../src/destinations/segment/client.js';
import type { RudderstackSimulator, SegmentSimulator, SimMessage } from '../../src/destinations/segment/simulator.js';
import { ULID_RE } from '../../src/model/index.js';
import { startService, type Service } from '../../src/runtime/service.js';
import { waitFor } from './wait.js';

describe('Kommo -> Segment / RudderStack', () => {
  let world: World;
  let service: Service;
  let seg: SegmentSimulator;
  let rudder: RudderstackSimulator;
  const email = 'ada.lovelace@example.com';
  let leadId = 0;
  let companyId = 0;

  const find = (sim: SegmentSimulator | RudderstackSimulator, pred: (m: SimMessage) => boolean) => sim.messages.filter(pred);
  const trackOf = (sim: SegmentSimulator | RudderstackSimulator, event: string, userId = email) => find(sim, (m) => m.type === 'track' && m.event === event && m.userId === userId);

  before(async () => {
    world = await startWorld({ destinations: ['segment', 'rudderstack'] });
    world.kommo.addCustomField('leads', { name: 'Plan', type: 'select', enums: ['Starter', 'Pro'] });
    // The world's blocks name won/lost events for every vendor; the Segment block here uses Segment's
    // own defaults instead, plus the plan as a trait and as a Deal Won property, as the docs show.
    const cfg = parse(world.yaml) as { accounts: Record<string, { destinations: Record<string, Record<string, unknown>> }> };
    const block = cfg.accounts[world.account]!.destinations.segment!;
    delete block.events;
    block.group = true;
    block.attributes = { ...(block.attributes as object), plan: 'lead.fields["Plan"]' };
    block.properties = { 'lead.won': { plan: 'lead.fields["Plan"]' } };
    const loaded = parseConfigText(stringify(cfg), 'segment-loop.yaml', {});
    service = await startService({ loaded, log: pino({ level: 'silent' }), intake: true, work: true, port: 0, host: '127.0.0.1' });
    world.subscribe(service.url!);
    seg = world.vendors.get('segment')!.sim as SegmentSimulator;
    rudder = world.vendors.get('rudderstack')!.sim as RudderstackSimulator;

    const k = world.kommo;
    const contact = k.createContact({ name: 'Ada Lovelace', email: 'Ada.Lovelace@Example.com' });
    leadId = k.createLead({ name: 'Analytical engine', price: 4200, contactIds: [contact.id], fields: { Plan: 'Pro', Industry: 'SaaS' } }).id;
    companyId = k.createCompany({ name: 'Babbage & Co', leadIds: [leadId], contactIds: [contact.id] }).id;
    await k.flushWebhooks();
    await waitFor(() => trackOf(seg, 'Lead Created').length > 0, 'Lead Created in Segment');
  });
  after(async () => {
    await service?.close();
    await world?.close();
  });

  it('a new lead: identify + "Lead Created"', () => {
    const created = trackOf(seg, 'Lead Created')[0]!;
    assert.equal(created.properties.deal_id, leadId);
    assert.ok(find(seg, (m) => m.type === 'identify' && m.userId === email).length > 0);
  });

  it('a stage change: "Stage Changed" with deal id, from and to stage, pipeline', async () => {
    const k = world.kommo;
    // A webhook is enriched with the lead as it is when routed: let the first move arrive first.
    k.moveLead(leadId, k.status('Qualified').id);
    await k.flushWebhooks();
    await waitFor(() => trackOf(seg, 'Stage Changed').some((m) => m.properties.to_stage === 'Qualified'), 'Stage Changed to Qualified');
    k.moveLead(leadId, k.status('Proposal sent').id);
    await k.flushWebhooks();
    await waitFor(() => trackOf(seg, 'Stage Changed').some((m) => m.properties.to_stage === 'Proposal sent'), 'Stage Changed to Proposal sent');
    const moved = trackOf(seg, 'Stage Changed').find((m) => m.properties.to_stage === 'Proposal sent')!;
    assert.deepEqual(
      [moved.properties.deal_id, moved.properties.from_stage, moved.properties.pipeline],
      [leadId, 'Qualified', 'Sales'],
    );
  });

  it('won: identify (spec traits, customer, mrr, plan, company), "Deal Won" and group, timestamped when Kommo changed', async () => {
    const k = world.kommo;
    k.moveLead(leadId, 142);
    await k.flushWebhooks();
    await waitFor(() => trackOf(seg, 'Deal Won').length > 0 && seg.groups.has(`kommo-company-${companyId}`), 'Deal Won and group in Segment');
    const wonAt = new Date(k.leads.get(leadId)!.updated_at * 1000).toISOString();

    const identify = find(seg, (m) => m.type === 'identify' && m.traits.customer === true)[0]!;
    assert.deepEqual(identify.traits, {
      ...identify.traits,
      email, name: 'Ada Lovelace', plan: 'Pro', industry: 'SaaS',
      company: { name: 'Babbage & Co', id: `kommo-company-${companyId}` }, kommo_deal_id: leadId, customer: true, mrr: 4200, kommo_stage: 'closed_won',
    });
    assert.equal('first_name' in identify.traits, false, "the core's snake_case names give way to the spec's");
    assert.equal(identify.timestamp, wonAt);

    const deal = trackOf(seg, 'Deal Won')[0]!;
    assert.deepEqual(
      { deal_id: deal.properties.deal_id, plan: deal.properties.plan, amount: deal.properties.amount, currency: deal.properties.currency, pipeline: deal.properties.pipeline, owner_email: deal.properties.owner_email },
      { deal_id: leadId, plan: 'Pro', amount: 4200, currency: 'USD', pipeline: 'Sales', owner_email: 'bob@acme.example' },
    );
    assert.equal(deal.timestamp, wonAt);
    assert.match(deal.messageId, ULID_RE);

    const group = seg.groups.get(`kommo-company-${companyId}`)!;
    assert.equal(group.traits.name, 'Babbage & Co');
    assert.ok(group.members.has(email));
    assert.equal(seg.profiles.get(email)?.customer, true);
    // Everything went through the batch endpoint of the workspace's host, authenticated by Basic auth.
    assert.ok(seg.requests.every((r) => r.path === '/v1/batch' && r.headers.authorization === authorization(seg.writeKey)));
  });

  it('a replayed job is sent with the same messageIds, and Segment drops the repeats', async () => {
    // A job Segment has answered may not be marked done yet; count only once every job has settled.
    await waitFor(async () => { const s = await service.store.stats(Date.now()); return s.jobs.pending === 0 && s.jobs.leased === 0; }, 'every job settled');
    const applied = seg.messages.length;
    const sentIds = new Set(seg.messages.map((m) => m.messageId));
    const done = await service.store.listJobs({ destination: `${world.account}/segment`, state: 'done' });
    assert.ok(done.length > 0);
    const itemsBefore = seg.items.length;
    await service.store.requeueJobs({ ids: done.map((j) => j.id) });
    await waitFor(() => seg.items.length >= itemsBefore + applied, 'the replayed jobs reached Segment again');
    const replayed = seg.items.slice(itemsBefore);
    assert.ok(replayed.every((i) => i.ok && i.duplicate === true), 'every replayed message was a duplicate');
    assert.equal(seg.messages.length, applied, 'nothing applied twice');
    const lastRequest = seg.requests.at(-1)!.body as { batch: Array<{ messageId: string }> };
    assert.ok(lastRequest.batch.every((m) => sentIds.has(m.messageId)));
  });

  it('lost: identify customer false, "Deal Lost" with the loss reason', async () => {
    const k = world.kommo;
    const c = k.createContact({ name: 'Lost Person', email: 'lost@example.com' });
    const l = k.createLead({ name: 'Gone', price: 100, contactIds: [c.id] });
    await k.flushWebhooks();
    k.moveLead(l.id, 143, undefined, { lossReason: 'Too expensive' });
    await k.flushWebhooks();
    await waitFor(() => trackOf(seg, 'Deal Lost', 'lost@example.com').length > 0, 'Deal Lost in Segment');
    assert.equal(trackOf(seg, 'Deal Lost', 'lost@example.com')[0]!.properties.loss_reason, 'Too expensive');
    assert.equal(seg.profiles.get('lost@example.com')?.customer, false);
  });

  it('an owner change: "Owner Changed" with the new owner', async () => {
    const k = world.kommo;
    const alice = [...k.users.values()].find((u) => u.email === 'alice@acme.example')!;
    k.setResponsible(leadId, alice.id);
    await k.flushWebhooks();
    await waitFor(() => trackOf(seg, 'Owner Changed').length > 0, 'Owner Changed in Segment');
    const owner = trackOf(seg, 'Owner Changed')[0]!;
    assert.deepEqual([owner.properties.owner_email, owner.properties.owner_id], ['alice@acme.example', alice.id]);
  });

  it('RudderStack: the same calls to its data plane URL with its write key (the config names its events)', async () => {
    await waitFor(() => trackOf(rudder, 'deal_won').length > 0, 'deal_won in RudderStack');
    const dataPlane = world.vendors.get('rudderstack')!.baseUrl;
    const block = world.loaded.destinations[world.account]!.find((d) => d.name === 'rudderstack')!;
    assert.equal((block.settings as { dataPlaneUrl: string }).dataPlaneUrl, dataPlane);
    assert.ok(rudder.requests.length > 0);
    assert.ok(rudder.requests.every((r) => r.path === '/v1/batch' && r.headers.authorization === authorization(rudder.writeKey) && r.status === 200));
    assert.notEqual(rudder.writeKey, seg.writeKey);
    assert.ok(find(rudder, (m) => m.type === 'identify' && m.traits.customer === true).length > 0);
    assert.ok(rudder.groups.has(`kommo-company-${companyId}`));
  });
});
