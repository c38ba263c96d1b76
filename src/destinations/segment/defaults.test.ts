/**
 * Segment's naming defaults through the core's planner, as the router runs them: which traits,
 * properties and event names each CRM event sends, and that the user's config wins.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { destinationCommon } from '../../config/schema.js';
import type { CrmEventKind, EnrichedLead, StageInfo, SyncOp } from '../../model/index.js';
import { compileDestinationMapping, planOutbound } from '../../sync/outbound.js';
import { segment } from './index.js';
import { planBatches, SEGMENT_WIRE } from './ops.js';

const AT = Date.UTC(2026, 2, 14, 9, 30);
const sales = (id: number, name: string, type: StageInfo['type'], key = name.toLowerCase().replace(/ /g, '_')): StageInfo =>
  ({ id, name, key, pipelineId: 7, pipeline: 'Sales', type });
const NEGOTIATION = sales(104, 'Negotiation', 'open');
const WON = sales(142, 'Closed - won', 'won', 'won');
const LOST = sales(143, 'Closed - lost', 'lost', 'lost');

function leadFor(kind: CrmEventKind, over: Partial<EnrichedLead> = {}): EnrichedLead {
  const stage = kind === 'lead.won' ? WON : kind === 'lead.lost' ? LOST : NEGOTIATION;
  return {
    account: { name: 'acme', subdomain: 'acme', currency: 'USD' },
    event: { kind, at: AT },
    lead: {
      id: 20000042, name: 'Ann Lee — annual plan', price: 12000, pipelineId: 7, statusId: stage.id, responsibleUserId: 9,
      createdAt: AT - 86_400_000, updatedAt: AT, closedAt: kind === 'lead.won' || kind === 'lead.lost' ? AT : null,
      wonAt: kind === 'lead.won' ? AT : null, lostAt: kind === 'lead.lost' ? AT : null,
      lossReason: kind === 'lead.lost' ? 'Too expensive' : null, tags: [], fields: { Plan: 'Pro' }, deleted: false,
    },
    contact: { id: 77, name: 'Ann Lee', firstName: 'Ann', lastName: 'Lee', email: 'ann@example.com', phone: '+1 555 0100', tags: [], fields: {} },
    company: { id: 5, name: 'Acme Inc', fields: {} },
    pipeline: { id: 7, name: 'Sales' },
    stage,
    previousStage: kind === 'lead.created' ? null : sales(103, 'Proposal sent', 'open', 'proposal_sent'),
    responsible: { id: 9, name: 'Bob Sales', email: 'bob@acme.example' },
    ...over,
  };
}

async function plan(kind: CrmEventKind, config: Record<string, unknown> = {}, over: Partial<EnrichedLead> = {}): Promise<SyncOp[]> {
  const defaults = typeof segment.defaults === 'function' ? segment.defaults({ writeKey: 'k', group: true }) : segment.defaults;
  const mapping = compileDestinationMapping(destinationCommon.parse(config), 'test', defaults);
  const result = await planOutbound(leadFor(kind, over), mapping, { supports: segment.supports, dedupKey: `kommo:${kind}:20000042:1`, destinationName: 'segment' });
  return result.ops;
}

const byKind = <K extends SyncOp['kind']>(ops: SyncOp[], kind: K) => ops.find((o): o is Extract<SyncOp, { kind: K }> => o.kind === kind);

describe('segment defaults through the planner', () => {
  it('won: identify with spec traits, customer and mrr; group; "Deal Won" with amount, currency, owner', async () => {
    const ops = await plan('lead.won', { attributes: { plan: 'lead.fields["Plan"]' }, properties: { 'lead.won': { plan: 'lead.fields["Plan"]' } } });
    assert.deepEqual(ops.map((o) => o.kind), ['upsertPerson', 'groupAccount', 'trackEvent']);
    const identify = byKind(ops, 'upsertPerson')!;
    assert.deepEqual(identify.attributes, {
      kommo_stage: 'won', kommo_stage_name: 'Closed - won', kommo_stage_id: 142, kommo_pipeline: 'Sales', deal_value: 12000, responsible: 'Bob Sales',
      email: 'ann@example.com', firstName: 'Ann', lastName: 'Lee', name: 'Ann Lee', phone: '+1 555 0100',
      'company.name': 'Acme Inc', 'company.id': 'kommo-company-5', kommo_deal_id: 20000042, customer: true, mrr: 12000, plan: 'Pro',
    });
    assert.equal(identify.timestamp, AT);
    const group = byKind(ops, 'groupAccount')!;
    assert.deepEqual([group.groupId, group.traits], ['kommo-company-5', { name: 'Acme Inc', kommo_company_id: 5 }]);
    const track = byKind(ops, 'trackEvent')!;
    assert.equal(track.name, 'Deal Won');
    assert.deepEqual(track.properties, {
      stage: 'won', stage_id: 142, stage_name: 'Closed - won', pipeline: 'Sales', currency: 'USD', deal_id: 20000042, deal_name: 'Ann Lee — annual plan',
      from_stage: 'Proposal sent', to_stage: 'Closed - won', amount: 12000, won_at: '2026-03-14T09:30:00.000Z', owner_email: 'bob@acme.example', plan: 'Pro',
    });
  });

  it('lost: customer false, "Deal Lost" with the loss reason; no mrr', async () => {
    const ops = await plan('lead.lost');
    const identify = byKind(ops, 'upsertPerson')!;
    assert.equal(identify.attributes.customer, false);
    assert.equal('mrr' in identify.attributes, false);
    const track = byKind(ops, 'trackEvent')!;
    assert.equal(track.name, 'Deal Lost');
    assert.equal(track.properties.loss_reason, 'Too expensive');
  });

  it('stage change: "Stage Changed" with deal id, from and to stage, pipeline; no customer trait', async () => {
    const ops = await plan('lead.stage_changed');
    assert.equal('customer' in byKind(ops, 'upsertPerson')!.attributes, false);
    const track = byKind(ops, 'trackEvent')!;
    assert.equal(track.name, 'Stage Changed');
    assert.deepEqual(
      { deal_id: track.properties.deal_id, from_stage: track.properties.from_stage, to_stage: track.properties.to_stage, pipeline: track.properties.pipeline },
      { deal_id: 20000042, from_stage: 'Proposal sent', to_stage: 'Negotiation', pipeline: 'Sales' },
    );
    for (const gone of ['lead_id', 'deal_value', 'previous_stage', 'previous_stage_name']) assert.equal(gone in track.properties, false, gone);
  });

  it('names the other events by the spec; lead.updated sends no event', async () => {
    assert.equal(byKind(await plan('lead.created'), 'trackEvent')?.name, 'Lead Created');
    assert.equal(byKind(await plan('lead.responsible_changed'), 'trackEvent')?.name, 'Owner Changed');
    assert.equal(byKind(await plan('lead.updated'), 'trackEvent'), undefined);
    assert.equal(byKind(await plan('lead.created'), 'trackEvent')?.properties.from_stage, undefined, 'no previous stage, no from_stage');
  });

  it('leaves out what the lead lacks (no company, no phone, no owner email)', async () => {
    const ops = await plan('lead.won', {}, { company: null, responsible: { id: 9, name: null, email: null } });
    const identify = byKind(ops, 'upsertPerson')!;
    assert.equal('company.name' in identify.attributes, false);
    assert.equal('company.id' in identify.attributes, false);
    assert.equal(byKind(ops, 'groupAccount'), undefined, 'no company, no group');
    assert.equal('owner_email' in byKind(ops, 'trackEvent')!.properties, false);
  });

  it("the user's config wins: names, dropped traits, their own events", async () => {
    const ops = await plan('lead.won', { events: { 'lead.won': 'Order Completed' }, attributes: { mrr: null, customer: '"yes"' }, properties: { 'lead.won': { revenue: 'lead.price', amount: null } } });
    const identify = byKind(ops, 'upsertPerson')!;
    assert.equal('mrr' in identify.attributes, false);
    assert.equal(identify.attributes.customer, 'yes');
    const track = byKind(ops, 'trackEvent')!;
    assert.equal(track.name, 'Order Completed');
    assert.equal(track.properties.revenue, 12000);
    assert.equal('amount' in track.properties, false);
  });

  it('the same inbox event planned twice (a crash before it was marked routed) sends the same messageIds', async () => {
    const messageIds = async () => {
      const ops = await plan('lead.won');
      const p = planBatches(ops, { vendor: 'Segment', identifyBy: 'email', wire: SEGMENT_WIRE, destination: 'segment', sendGroups: true, sentAt: new Date().toISOString(), unsupported: {} });
      return p.requests.flatMap((r) => r.body.batch.map((m) => `${m.type}:${m.messageId}`));
    };
    const first = await messageIds();
    assert.equal(first.length, 3);
    assert.deepEqual(await messageIds(), first);
  });
});
