/**
 * Iterable's naming defaults as the core applies them: compiled with the core's layering and run on
 * an enriched lead, so the table shows what a won, lost or moved deal really sends.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { destinationCommon } from '../../config/schema.js';
import type { CrmEventKind, EnrichedLead, SyncOp } from '../../model/index.js';
import { compileDestinationMapping, planOutbound } from '../../sync/outbound.js';
import { iterable } from './index.js';
import { iterableDefaults } from './defaults.js';
import { iterableSettings } from './settings.js';

const sales = { pipelineId: 7, pipeline: 'Sales' };
const STAGES = {
  demo: { id: 101, name: 'Demo scheduled', key: 'demo_scheduled', type: 'open' as const, ...sales },
  proposal: { id: 102, name: 'Proposal sent', key: 'proposal_sent', type: 'open' as const, ...sales },
  won: { id: 142, name: 'Closed - won', key: 'closed_won', type: 'won' as const, ...sales },
  lost: { id: 143, name: 'Closed - lost', key: 'closed_lost', type: 'lost' as const, ...sales },
};
const AT = Date.UTC(2026, 2, 14, 9, 30, 5);

function lead(kind: CrmEventKind, stage: keyof typeof STAGES, previous: keyof typeof STAGES | null): EnrichedLead {
  const closed = stage === 'won' || stage === 'lost' ? AT : null;
  return {
    account: { name: 'acme', subdomain: 'acme', currency: 'EUR' },
    event: { kind, at: AT },
    lead: {
      id: 4242, name: 'Annual plan', price: 12000, pipelineId: 7, statusId: STAGES[stage].id, responsibleUserId: 9,
      createdAt: AT - 86_400_000, updatedAt: AT, closedAt: closed, wonAt: stage === 'won' ? closed : null, lostAt: stage === 'lost' ? closed : null,
      lossReason: stage === 'lost' ? 'Too expensive' : null, tags: [], deleted: false, fields: { Plan: 'Pro', Industry: 'SaaS' },
    },
    contact: { id: 77, name: 'Ann Lee', firstName: 'Ann', lastName: 'Lee', email: 'ann@example.com', phone: '', tags: [], fields: {} },
    company: { id: 5, name: 'Acme Inc', fields: {} },
    pipeline: { id: 7, name: 'Sales' },
    stage: STAGES[stage],
    previousStage: previous ? STAGES[previous] : null,
    responsible: { id: 9, name: 'Bob Sales', email: 'bob@acme.example' },
  };
}

async function plan(e: EnrichedLead, user: Record<string, unknown> = {}, settings: Record<string, unknown> = {}): Promise<SyncOp[]> {
  const common = destinationCommon.parse({ workflows: { 'lead.won': 12345 }, lists: { 'Demo scheduled': 111 }, ...user });
  const defaults = iterableDefaults(iterableSettings.parse({ apiKey: 'k', ...settings }));
  const mapping = compileDestinationMapping(common, 'test', defaults);
  return (await planOutbound(e, mapping, { supports: iterable.supports, dedupKey: 'kommo:1', destinationName: 'iterable' })).ops;
}
const ofKind = <K extends SyncOp['kind']>(ops: SyncOp[], kind: K) => ops.filter((o): o is Extract<SyncOp, { kind: K }> => o.kind === kind);

describe('iterable defaults', () => {
  it('won: the user gets the deal fields and isCustomer, deal_won its properties, the workflow the same data', async () => {
    const ops = await plan(lead('lead.won', 'won', 'proposal'), {}, { planField: 'Plan' });
    assert.deepEqual(ops.map((o) => o.kind), ['upsertPerson', 'trackEvent', 'triggerWorkflow']);
    const [user] = ofKind(ops, 'upsertPerson');
    assert.deepEqual(user!.attributes, {
      kommo_stage: 'closed_won', kommo_stage_name: 'Closed - won', kommo_stage_id: 142, kommo_pipeline: 'Sales', responsible: 'Bob Sales',
      firstName: 'Ann', lastName: 'Lee', company: 'Acme Inc', crmDealId: 4242, dealValue: 12000, wonAt: '2026-03-14 09:30:05 +00:00', isCustomer: true, plan: 'Pro',
    });
    const [event] = ofKind(ops, 'trackEvent');
    assert.equal(event!.name, 'deal_won');
    assert.deepEqual(event!.properties, {
      stage: 'closed_won', pipeline: 'Sales', currency: 'EUR', dealId: 4242, stageId: 142, stageName: 'Closed - won', dealValue: 12000,
      previousStage: 'proposal_sent', previousStageId: 102, previousStageName: 'Proposal sent', wonAt: '2026-03-14 09:30:05 +00:00', plan: 'Pro',
    });
    const [workflow] = ofKind(ops, 'triggerWorkflow');
    assert.deepEqual([workflow!.workflowId, workflow!.data], ['12345', event!.properties]);
  });

  it('lost: isCustomer false and deal_lost with the loss reason\'s name', async () => {
    const ops = await plan(lead('lead.lost', 'lost', 'proposal'));
    const [user] = ofKind(ops, 'upsertPerson');
    assert.equal(user!.attributes.isCustomer, false);
    assert.equal('wonAt' in user!.attributes, false);
    const [event] = ofKind(ops, 'trackEvent');
    assert.equal(event!.name, 'deal_lost');
    assert.equal(event!.properties.lossReason, 'Too expensive');
    assert.equal(event!.properties.lostAt, '2026-03-14 09:30:05 +00:00');
    assert.equal('loss_reason' in event!.properties, false);
    assert.equal(ofKind(ops, 'triggerWorkflow').length, 0);
  });

  it('stage change: crm_stage_changed with stage id and name, pipeline and deal id; lists follow the stage', async () => {
    const ops = await plan(lead('lead.stage_changed', 'demo', 'proposal'));
    const [user] = ofKind(ops, 'upsertPerson');
    assert.equal('isCustomer' in user!.attributes, false, 'isCustomer is left alone outside won/lost');
    const [event] = ofKind(ops, 'trackEvent');
    assert.equal(event!.name, 'crm_stage_changed');
    assert.deepEqual([event!.properties.stageId, event!.properties.stageName, event!.properties.pipeline, event!.properties.dealId], [101, 'Demo scheduled', 'Sales', 4242]);
    assert.deepEqual(ofKind(ops, 'addToList').map((o) => o.listId), ['111']);
    const left = await plan(lead('lead.stage_changed', 'proposal', 'demo'));
    assert.deepEqual(ofKind(left, 'removeFromList').map((o) => o.listId), ['111']);
    const kept = await plan(lead('lead.stage_changed', 'proposal', 'demo'), { leaveLists: 'keep' });
    assert.equal(ofKind(kept, 'removeFromList').length, 0);
  });

  it('new lead: the user and crm_lead_created', async () => {
    const ops = await plan(lead('lead.created', 'demo', null));
    assert.deepEqual(ops.map((o) => o.kind), ['upsertPerson', 'trackEvent', 'addToList']);
    assert.equal(ofKind(ops, 'trackEvent')[0]!.name, 'crm_lead_created');
  });

  it('the user\'s config wins over the defaults, and null drops one', async () => {
    const ops = await plan(lead('lead.won', 'won', 'proposal'), {
      events: { 'lead.won': 'closed_deal' }, attributes: { plan: 'lead.fields["Plan"]', company: null, industry: 'lead.fields["Industry"]' },
    });
    const [user] = ofKind(ops, 'upsertPerson');
    assert.deepEqual([user!.attributes.plan, user!.attributes.industry, 'company' in user!.attributes], ['Pro', 'SaaS', false]);
    assert.equal(ofKind(ops, 'trackEvent')[0]!.name, 'closed_deal');
  });

  it('first and last name fall back to the full name; nothing is sent rather than an empty name', async () => {
    const names = async (name: string) => {
      const e = lead('lead.updated', 'demo', null);
      e.contact = { ...e.contact!, name, firstName: '', lastName: '' };
      const [user] = ofKind(await plan(e), 'upsertPerson');
      return [user!.attributes.firstName, user!.attributes.lastName];
    };
    assert.deepEqual(await names('Ann Marie Lee'), ['Ann', 'Marie Lee']);
    assert.deepEqual(await names('Cher'), ['Cher', undefined]);
    assert.deepEqual(await names(''), [undefined, undefined]);
  });

  it('without planField there is no plan default (no field is assumed to exist in Kommo)', async () => {
    const ops = await plan(lead('lead.won', 'won', 'proposal'));
    assert.equal('plan' in ofKind(ops, 'trackEvent')[0]!.properties, false);
  });
});
