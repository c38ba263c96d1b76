import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { crmNotesSchema, destinationCommon, type DestinationCommon } from '../config/schema.js';
import type { SyncOp, SyncOpKind } from '../destinations/types.js';
import type { EnrichedLead, StageInfo } from '../model/index.js';
import type { CrmEventKind } from '../model/index.js';
import { MappingError } from './mapping.js';
import { deterministicUlid } from '../model/index.js';
import { compileCrmNotes, compileDestinationMapping, crmNoteText, planOutbound, type SentTo } from './outbound.js';

const AT = 1_700_000_000_000;
const STAGES = {
  new: { id: 100, name: 'New lead', key: 'new_lead', pipelineId: 7, pipeline: 'Sales', type: 'incoming' },
  demo: { id: 101, name: 'Demo scheduled', key: 'demo_scheduled', pipelineId: 7, pipeline: 'Sales', type: 'open' },
  proposal: { id: 102, name: 'Proposal sent', key: 'proposal_sent', pipelineId: 7, pipeline: 'Sales', type: 'open' },
  won: { id: 142, name: 'Closed - won', key: 'closed_won', pipelineId: 7, pipeline: 'Sales', type: 'won' },
  partner: { id: 201, name: 'Signed', key: 'signed', pipelineId: 8, pipeline: 'Partners', type: 'open' },
} satisfies Record<string, StageInfo>;

function lead(kind: CrmEventKind, over: Partial<EnrichedLead> = {}): EnrichedLead {
  return {
    account: { name: 'acme', subdomain: 'acme', currency: 'USD' },
    event: { kind, at: AT },
    lead: {
      id: 42, name: 'Big deal', price: 5000, pipelineId: 7, statusId: 102, responsibleUserId: 9, createdAt: 1, updatedAt: 2,
      closedAt: null, wonAt: null, lostAt: null, lossReason: null, tags: [], deleted: false, fields: { Industry: 'Retail', Topics: ['a', 'b'] },
    },
    contact: { id: 77, name: 'Ana Lima', firstName: 'Ana', lastName: 'Lima', email: 'ana@example.com', phone: '', tags: [], fields: {} },
    company: null,
    pipeline: { id: 7, name: 'Sales' },
    stage: STAGES.proposal,
    previousStage: kind === 'lead.stage_changed' || kind === 'lead.won' ? STAGES.demo : null,
    responsible: { id: 9, name: 'Bob', email: null },
    ...over,
  };
}

const ALL: Partial<Record<SyncOpKind, true>> = {
  upsertPerson: true, trackEvent: true, triggerWorkflow: true, addToList: true, removeFromList: true, groupAccount: true,
};
const opts = { supports: ALL, dedupKey: 'kommo:lead:42:status:1700000000', destinationName: 'cio' };
const common = (c: Record<string, unknown> = {}): DestinationCommon => destinationCommon.parse(c);
const person = { email: 'ana@example.com', id: 'kommo-contact-77' };

/** Ops without messageIds, for readable tables; ids are tested on their own. */
function shape(ops: SyncOp[]): unknown[] {
  return ops.map((op) => {
    if ('messageId' in op) {
      const { messageId: _id, ...rest } = op;
      return rest;
    }
    return op;
  });
}

async function plan(e: EnrichedLead, c: Record<string, unknown> = {}, o = opts) {
  return planOutbound(e, compileDestinationMapping(common(c), 'kommo-sync.yaml:30 accounts.acme.destinations.cio'), o);
}

describe('planOutbound: attributes', () => {
  it('sends the default attributes plus custom mappings (Industry -> industry)', async () => {
    const { ops } = await plan(lead('lead.updated'), { attributes: { industry: 'lead.fields["Industry"]', topics: 'lead.fields["Topics"]' } });
    assert.deepEqual(shape(ops), [{
      kind: 'upsertPerson', person, timestamp: AT,
      attributes: {
        kommo_lead_id: 42, kommo_stage: 'proposal_sent', kommo_stage_name: 'Proposal sent', kommo_stage_id: 102,
        kommo_pipeline: 'Sales', deal_value: 5000, responsible: 'Bob', first_name: 'Ana', last_name: 'Lima',
        industry: 'Retail', topics: 'a, b',
      },
    }]);
  });

  const cases: Array<[string, Record<string, string>, Partial<EnrichedLead>, Record<string, unknown>]> = [
    ['user attributes override a default', { deal_value: 'lead.price * 100' }, {}, { deal_value: 500000 }],
    ['responsible falls back to the id', {}, { responsible: { id: 9, name: null, email: null } }, { responsible: '9' }],
    ['a missing field is left out, not sent as null', { industry: 'lead.fields["Nope"]' }, {}, { industry: undefined }],
    ['constants', { source: '"kommo"', vip: 'true' }, {}, { source: 'kommo', vip: true }],
  ];
  for (const [name, attributes, over, expected] of cases) {
    it(name, async () => {
      const { ops } = await plan(lead('lead.updated', over), { attributes });
      const up = ops[0];
      assert.equal(up?.kind, 'upsertPerson');
      for (const [k, v] of Object.entries(expected)) assert.deepEqual(up.attributes[k], v, k);
    });
  }

  it('a mapping error names the attribute', () => {
    assert.throws(() => compileDestinationMapping(common({ attributes: { industry: 'leed.fields["Industry"]' } }), 'kommo-sync.yaml:30 accounts.acme.destinations.cio'), {
      name: 'MappingError',
      message: /^kommo-sync\.yaml:30 accounts\.acme\.destinations\.cio\.attributes\.industry: unknown name `leed`.*did you mean `lead`/,
    });
    // The loader can map sub-paths to exact lines.
    assert.throws(() => compileDestinationMapping(common({ attributes: { x: 'lead.(' } }), (p) => `f.yaml:99 ${p}`), (err: unknown) =>
      err instanceof MappingError && err.message.startsWith('f.yaml:99 attributes.x: invalid expression'));
  });
});

describe('planOutbound: events', () => {
  type Row = [string, CrmEventKind, Record<string, unknown>, string | undefined];
  const cases: Row[] = [
    ['created -> default name', 'lead.created', {}, 'kommo_lead_created'],
    ['stage change -> default name', 'lead.stage_changed', {}, 'kommo_stage_changed'],
    ['won without a configured name is a stage change', 'lead.won', {}, 'kommo_stage_changed'],
    ['won with a configured name', 'lead.won', { events: { 'lead.won': 'deal_won' } }, 'deal_won'],
    ['won follows a renamed stage change', 'lead.won', { events: { 'lead.stage_changed': 'stage' } }, 'stage'],
    ['on.event overrides events', 'lead.won', { events: { 'lead.won': 'a' }, on: { 'lead.won': { event: 'b' } } }, 'b'],
    ['updated sends no event by default', 'lead.updated', {}, undefined],
    ['updated with a configured name', 'lead.updated', { events: { 'lead.updated': 'kommo_lead_updated' } }, 'kommo_lead_updated'],
    ['configured names add to the defaults', 'lead.created', { events: { 'lead.won': 'deal_won' } }, 'kommo_lead_created'],
  ];
  for (const [name, kind, cfg, expected] of cases) {
    it(name, async () => {
      const { ops } = await plan(lead(kind), cfg);
      const track = ops.filter((o) => o.kind === 'trackEvent');
      assert.deepEqual(track.map((o) => o.name), expected ? [expected] : []);
    });
  }

  it('an event name may be a template over the lead; won and lost follow it like a plain name', async () => {
    const cfg = { events: { 'lead.stage_changed': 'deal_moved_to_{{stage.key}}' } };
    const names = async (e: EnrichedLead) => (await plan(e, cfg)).ops.flatMap((o) => (o.kind === 'trackEvent' ? [o.name] : []));
    assert.deepEqual(await names(lead('lead.stage_changed')), ['deal_moved_to_proposal_sent']);
    assert.deepEqual(await names(lead('lead.won', { stage: STAGES.won })), ['deal_moved_to_closed_won']);
    const own = await plan(lead('lead.won', { stage: STAGES.won }), { ...cfg, on: { 'lead.won': { event: '{{ $uppercase(stage.key) }}' } } });
    assert.deepEqual(own.ops.flatMap((o) => (o.kind === 'trackEvent' ? [o.name] : [])), ['CLOSED_WON']);
  });

  it('plain names are sent exactly as written, and a template that renders empty sends no event', async () => {
    const plain = await plan(lead('lead.stage_changed'), { events: { 'lead.stage_changed': 'Stage {changed} }}' } });
    assert.deepEqual(plain.ops.flatMap((o) => (o.kind === 'trackEvent' ? [o.name] : [])), ['Stage {changed} }}']);
    const empty = await plan(lead('lead.stage_changed'), { events: { 'lead.stage_changed': '{{ previousStage.key }}' } });
    assert.deepEqual(empty.ops.flatMap((o) => (o.kind === 'trackEvent' ? [o.name] : [])), ['demo_scheduled'], 'a stage change has a previous stage');
    const none = await plan(lead('lead.created'), { events: { 'lead.created': ' {{ previousStage.key }} ' } });
    assert.deepEqual(none.ops.map((o) => o.kind), ['upsertPerson']);
  });

  it('a mistake in an event-name template fails at load and names the event', () => {
    assert.throws(() => compileDestinationMapping(common({ events: { 'lead.stage_changed': 'moved_to_{{ stge.key }}' } }), 'f.yaml:9'), (err: unknown) =>
      err instanceof MappingError && err.message.startsWith('f.yaml:9.events.lead.stage_changed {{ stge.key }}: unknown name `stge`'));
    assert.throws(() => compileDestinationMapping(common({}), 'f.yaml:9', { events: { 'lead.won': 'won_{{' } }), (err: unknown) =>
      err instanceof MappingError && err.message.startsWith("the destination's default events.lead.won: `{{`"));
  });

  it('event properties include the previous stage for stage events', async () => {
    const { ops } = await plan(lead('lead.stage_changed'));
    const track = ops.find((o) => o.kind === 'trackEvent');
    assert.deepEqual(track?.kind === 'trackEvent' && track.properties, {
      stage: 'proposal_sent', stage_id: 102, stage_name: 'Proposal sent', pipeline: 'Sales', lead_id: 42, deal_value: 5000, currency: 'USD',
      previous_stage: 'demo_scheduled', previous_stage_id: 101, previous_stage_name: 'Demo scheduled',
    });
  });

  it('a lost lead\'s event carries the loss reason\'s name and when it was lost', async () => {
    const lostAt = Date.UTC(2026, 10, 3, 12, 0);
    const e = lead('lead.lost', { stage: { ...STAGES.won, id: 143, name: 'Closed - lost', key: 'closed_lost', type: 'lost' } });
    e.lead = { ...e.lead, statusId: 143, closedAt: lostAt, lostAt, lossReason: 'Too expensive' };
    const { ops } = await plan(e, { events: { 'lead.lost': 'deal_lost' } });
    const track = ops.find((o) => o.kind === 'trackEvent');
    assert.equal(track?.kind === 'trackEvent' && track.name, 'deal_lost');
    assert.equal(track?.kind === 'trackEvent' && track.properties.loss_reason, 'Too expensive');
    assert.equal(track?.kind === 'trackEvent' && track.properties.lost_at, '2026-11-03T12:00:00.000Z');
  });

  it('properties are configurable like attributes: `*` for every event, a kind for one, null drops a default', async () => {
    const cfg = { properties: { '*': { plan: 'lead.fields["Industry"]', currency: null }, 'lead.stage_changed': { from: 'previousStage.name', previous_stage_id: null } } };
    const changed = (await plan(lead('lead.stage_changed'), cfg)).ops.find((o) => o.kind === 'trackEvent');
    assert.ok(changed?.kind === 'trackEvent');
    assert.equal(changed.properties.plan, 'Retail');
    assert.equal(changed.properties.from, 'Demo scheduled');
    assert.ok(!('currency' in changed.properties) && !('previous_stage_id' in changed.properties), JSON.stringify(changed.properties));
    const created = (await plan(lead('lead.created'), cfg)).ops.find((o) => o.kind === 'trackEvent');
    assert.ok(created?.kind === 'trackEvent');
    assert.equal(created.properties.plan, 'Retail');
    assert.ok(!('from' in created.properties));
  });

  it('a destination\'s own defaults sit between the built-in ones and the user\'s config', async () => {
    const defaults = {
      attributes: { kommo_stage_name: null, firstName: 'contact.firstName' },
      events: { 'lead.won': 'Deal Won' },
      properties: { 'lead.won': { amount: 'lead.price' } },
    };
    const m = compileDestinationMapping(common({ attributes: { firstName: 'contact.name' } }), 'x', defaults);
    const { ops } = await planOutbound(lead('lead.won', { stage: STAGES.won }), m, opts);
    const up = ops.find((o) => o.kind === 'upsertPerson');
    const track = ops.find((o) => o.kind === 'trackEvent');
    assert.ok(up?.kind === 'upsertPerson' && track?.kind === 'trackEvent');
    assert.equal(up.attributes.firstName, 'Ana Lima', 'the user wins over the destination default');
    assert.ok(!('kommo_stage_name' in up.attributes), 'a destination can drop a built-in attribute');
    assert.equal(track.name, 'Deal Won');
    assert.equal(track.properties.amount, 5000);
  });

  it('on[kind] starts a workflow and moves lists', async () => {
    const { ops } = await plan(lead('lead.won', { stage: STAGES.won }), { on: { 'lead.won': { event: 'deal_won', workflowId: 12345, addToList: 'customers', removeFromList: 'prospects' } } });
    assert.deepEqual(shape(ops).map((o) => (o as { kind: string }).kind), ['upsertPerson', 'trackEvent', 'triggerWorkflow', 'addToList', 'removeFromList']);
    assert.deepEqual(shape(ops)[2], {
      kind: 'triggerWorkflow', person, workflowId: '12345',
      data: { stage: 'closed_won', stage_id: 142, stage_name: 'Closed - won', pipeline: 'Sales', lead_id: 42, deal_value: 5000, currency: 'USD', previous_stage: 'demo_scheduled', previous_stage_id: 101, previous_stage_name: 'Demo scheduled' },
    });
  });

  it('a person who opted out is not subscribed to lists nor started in workflows, but still updated', async () => {
    const cfg = { on: { 'lead.stage_changed': { workflowId: 7 } }, lists: { 'Proposal sent': 'L1' } };
    const kinds = async (optedOut: boolean) => (await planOutbound(lead('lead.stage_changed'), compileDestinationMapping(common(cfg), 'x'), { ...opts, optedOut })).ops.map((o) => o.kind);
    assert.deepEqual(await kinds(false), ['upsertPerson', 'trackEvent', 'triggerWorkflow', 'addToList']);
    assert.deepEqual(await kinds(true), ['upsertPerson', 'trackEvent']);
  });

  it('lead.deleted sends nothing by default, and a configured event when asked', async () => {
    assert.deepEqual((await plan(lead('lead.deleted'))).ops, []);
    const { ops } = await plan(lead('lead.deleted'), { events: { 'lead.deleted': 'kommo_lead_deleted' } });
    assert.deepEqual(ops.map((o) => o.kind), ['trackEvent']);
  });
});

describe('planOutbound: lists follow the stage', () => {
  const lists = { 'Demo scheduled': 'L-demo', proposal_sent: 'L-proposal', 'Sales / Closed - won': 'L-won' };
  type Row = [string, EnrichedLead, Array<[string, string]>];
  const cases: Row[] = [
    ['demo -> proposal: leave demo list, join proposal list', lead('lead.stage_changed'), [['removeFromList', 'L-demo'], ['addToList', 'L-proposal']]],
    ['created in a listed stage joins it', lead('lead.created', { stage: STAGES.demo }), [['addToList', 'L-demo']]],
    ['into an unlisted stage only leaves', lead('lead.stage_changed', { stage: STAGES.new }), [['removeFromList', 'L-demo']]],
    ['"Pipeline / Stage" keys work', lead('lead.won', { stage: STAGES.won, previousStage: STAGES.proposal }), [['removeFromList', 'L-proposal'], ['addToList', 'L-won']]],
    ['same list before and after: no removal', lead('lead.stage_changed', { previousStage: STAGES.proposal }), [['addToList', 'L-proposal']]],
    ['updates do not touch lists', lead('lead.updated'), []],
  ];
  for (const [name, e, expected] of cases) {
    it(name, async () => {
      const { ops } = await plan(e, { lists });
      const moves = ops.filter((o) => o.kind === 'addToList' || o.kind === 'removeFromList');
      assert.deepEqual(moves.map((o) => [o.kind, o.listId]), expected);
    });
  }
  it('addToList carries the mapped attributes (list vendors store them on the subscriber)', async () => {
    const { ops } = await plan(lead('lead.created', { stage: STAGES.demo }), { lists });
    const add = ops.find((o) => o.kind === 'addToList');
    assert.equal(add?.kind === 'addToList' && add.attributes.first_name, 'Ana');
  });
});

describe('planOutbound: who and where', () => {
  type Row = [string, EnrichedLead, Record<string, unknown>, RegExp];
  const cases: Row[] = [
    ['no contact', lead('lead.created', { contact: null }), {}, /lead 42 has no contact/],
    ['contact without email', lead('lead.created', { contact: { ...lead('lead.created').contact!, email: '' } }), {}, /contact 77 of lead 42 has no email/],
    ['pipeline not synced', lead('lead.created', { stage: STAGES.partner }), { pipelines: ['Sales'] }, /pipeline "Partners"/],
  ];
  for (const [name, e, cfg, reason] of cases) {
    it(`${name} -> skipped`, async () => {
      const r = await plan(e, cfg);
      assert.deepEqual(r.ops, []);
      assert.match(r.skipped ?? '', reason);
    });
  }

  it('identifyBy id keeps a contact without email', async () => {
    const r = await plan(lead('lead.created', { contact: { ...lead('lead.created').contact!, email: '' } }), { identifyBy: 'id' });
    assert.deepEqual(r.ops[0]?.person, { email: '', id: 'kommo-contact-77' });
  });

  it('a listed pipeline is synced', async () => {
    assert.equal((await plan(lead('lead.created'), { pipelines: ['sales'] })).ops.length, 2);
  });

  it('groupAccount for the company, only when supported', async () => {
    const e = lead('lead.updated', { company: { id: 5, name: 'Acme Inc', fields: {} } });
    assert.deepEqual(shape((await plan(e)).ops).filter((o) => (o as SyncOp).kind === 'groupAccount'), [
      { kind: 'groupAccount', person, groupId: 'kommo-company-5', traits: { name: 'Acme Inc' }, timestamp: AT },
    ]);
    const { groupAccount: _g, ...noGroup } = ALL;
    assert.deepEqual((await plan(e, {}, { ...opts, supports: noGroup })).ops.map((o) => o.kind), ['upsertPerson']);
  });

  it('ops a destination does not support are dropped silently', async () => {
    const cfg = { on: { 'lead.won': { workflowId: 'wf', addToList: 'L' } }, lists: { 'Closed - won': 'L-won' } };
    const e = lead('lead.won', { stage: STAGES.won });
    const { ops } = await plan(e, cfg, { ...opts, supports: { upsertPerson: true, trackEvent: true } });
    assert.deepEqual(ops.map((o) => o.kind), ['upsertPerson', 'trackEvent']);
  });
});

describe('planOutbound: deterministic messageIds', () => {
  const ids = async (o = opts, e = lead('lead.won', { company: { id: 5, name: 'Acme', fields: {} } })) =>
    (await plan(e, { on: { 'lead.won': { workflowId: 'wf' } } }, o)).ops.flatMap((op) => ('messageId' in op ? [op.messageId] : []));

  it('same event, destination and op -> same ids (a retry or replay is deduped by the vendor)', async () => {
    const first = await ids();
    assert.equal(first.length, 3); // groupAccount, trackEvent, triggerWorkflow
    assert.deepEqual(await ids(), first);
    assert.equal(new Set(first).size, 3, 'each op has its own id');
  });
  it('another destination or event -> other ids', async () => {
    const first = await ids();
    for (const other of [await ids({ ...opts, destinationName: 'segment' }), await ids({ ...opts, dedupKey: 'other' })]) {
      for (const id of other) assert.ok(!first.includes(id));
    }
  });
  it('ids do not shift when a destination supports fewer ops', async () => {
    const all = await ids();
    const fewer = await ids({ ...opts, supports: { trackEvent: true, triggerWorkflow: true } });
    assert.deepEqual(fewer, all.slice(1));
  });
  it('ids are ULIDs whose time is the event time (the strictest id format a vendor asks for)', () => {
    const id = deterministicUlid(AT, 'seed');
    assert.match(id, /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/);
    const time = [...id.slice(0, 10)].reduce((t, ch) => t * 32 + '0123456789ABCDEFGHJKMNPQRSTVWXYZ'.indexOf(ch), 0);
    assert.equal(time, AT);
  });
});

describe('crmNoteText', () => {
  const notes = compileCrmNotes({ on: ['lead.won', 'lead.stage_changed'], text: 'kommo-sync: {{event.kind}} ({{stage.name}}) sent to {{destinations}}' }, 'f.yaml:5 accounts.acme.crmNotes');
  const person = { email: 'ann@example.com' };
  const cio: SentTo = { name: 'cio', ops: [{ kind: 'upsertPerson', person, attributes: {}, timestamp: AT }] };
  const iterable: SentTo = {
    name: 'iterable',
    ops: [
      { kind: 'upsertPerson', person, attributes: {}, timestamp: AT },
      { kind: 'trackEvent', person, name: 'deal_won', properties: {}, timestamp: AT, messageId: 'm1' },
      { kind: 'triggerWorkflow', person, workflowId: '12345', data: {}, messageId: 'm2' },
      { kind: 'addToList', person, listId: '111', attributes: {} },
    ],
  };
  const cases: Array<[string, EnrichedLead, SentTo[], string | null]> = [
    ['renders kind, stage and destinations', lead('lead.stage_changed'), [cio, iterable], 'kommo-sync: lead.stage_changed (Proposal sent) sent to cio, iterable'],
    ['kind not in on', lead('lead.updated'), [cio], null],
    ['no destinations (Kommo-side rules only)', lead('lead.won'), [], 'kommo-sync: lead.won (Proposal sent) sent to no destination'],
  ];
  for (const [name, e, dests, expected] of cases) it(name, async () => assert.equal(await crmNoteText(notes, e, dests), expected));
  it('the default text says what was sent where', async () => {
    const byDefault = compileCrmNotes(crmNotesSchema.parse({ on: ['lead.won'] }), 'f.yaml:5 accounts.acme.crmNotes');
    assert.equal(
      await crmNoteText(byDefault, lead('lead.won'), [iterable, cio]),
      'kommo-sync: lead.won (Proposal sent) queued for iterable (identify, event deal_won, workflow 12345, list 111); cio (identify)',
    );
  });
  it('template errors name crmNotes.text', () => {
    assert.throws(() => compileCrmNotes({ on: ['lead.won'], text: '{{destinatons}}' }, 'f.yaml:5 accounts.acme.crmNotes'), {
      message: /^f\.yaml:5 accounts\.acme\.crmNotes\.text .*unknown name `destinatons`.*did you mean `destinations`/,
    });
  });
});
