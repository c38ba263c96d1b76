import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { destinationCommon, engagementSchema } from '../config/schema.js';
import type { KommoOp } from '../model/index.js';
import type { EngagementEvent, EngagementKind } from '../model/index.js';
import {
  compileEngagementRules,
  findLeadForEmail,
  planEngagement,
  type EngagementDeps,
  type EngagementResolver,
  type FindLeadDeps,
  type LeadMatch,
  type LeadRow,
} from './inbound.js';

const H = 3_600_000;
const T0 = 1_700_000_000_000;
const WHERE = 'kommo-sync.yaml:40 accounts.acme.engagement';

/**
 * In-memory hitCounter/tryMark with the Store's semantics. The store's own conformance suite tests
 * the real ones; here the rule logic is the subject.
 */
function fakeCounters(): EngagementDeps {
  const hits = new Map<string, number[]>();
  const marks = new Map<string, number>();
  return {
    async hitCounter(key, at, windowMs) {
      const list = [...(hits.get(key) ?? []), at];
      hits.set(key, list);
      return list.filter((t) => t >= at - windowMs && t <= at).length;
    },
    async tryMark(key, now, ttlMs) {
      const until = marks.get(key);
      if (until !== undefined && until > now) return false;
      marks.set(key, now + ttlMs);
      return true;
    },
  };
}

const resolver: EngagementResolver = {
  contactField(name) {
    if (name === 'Email opt-in') return { fieldId: 555 };
    if (name === 'OPT_IN') return { fieldCode: 'OPT_IN' };
    throw new Error(`no contact field "${name}"; did you mean "Email opt-in"?`);
  },
  stage(name) {
    if (name === 'Unsubscribed') return { pipelineId: 7, statusId: 999 };
    throw new Error(`no stage "${name}"`);
  },
};

const rules = (cfg: Record<string, unknown>) => compileEngagementRules(engagementSchema.parse(cfg), resolver, WHERE);
const match: LeadMatch = { leadId: 42, contactId: 77, responsibleUserId: 9, pipelineId: 7, statusId: 101 };
const ev = (kind: EngagementKind, over: Partial<EngagementEvent> = {}): EngagementEvent => ({
  type: 'engagement', kind, email: 'ana@example.com', occurredAt: T0, vendorEventId: `e-${Math.random()}`, source: 'cio', ...over,
});

describe('planEngagement: notes', () => {
  const r = rules({ notes: ['email.opened', 'email.clicked', 'email.unsubscribed', 'email.bounced'] });
  const cases: Array<[EngagementEvent, string | null]> = [
    [ev('email.opened', { subject: 'Spring offer' }), 'Email opened: Spring offer (via cio)'],
    [ev('email.clicked', { subject: 'Spring offer', link: 'https://x.test/p' }), 'Email link clicked: https://x.test/p (Spring offer) (via cio)'],
    [ev('email.unsubscribed', { source: 'iterable' }), 'Unsubscribed from email (via iterable)'],
    [ev('email.unsubscribed', { source: 'iterable', detail: 'EmailLink, channel 27447' }), 'Unsubscribed from email: EmailLink, channel 27447 (via iterable)'],
    [ev('email.bounced', { detail: 'mailbox full' }), 'Email bounced: mailbox full (via cio)'],
    [ev('email.delivered'), null],
  ];
  for (const [e, text] of cases) {
    it(`${e.kind} -> ${text}`, async () => {
      const ops = await planEngagement(e, match, r, fakeCounters(), T0);
      assert.deepEqual(ops, text ? [{ kind: 'addNote', leadId: 42, text }] : []);
    });
  }
});

describe('planEngagement: hot lead', () => {
  const r = rules({ notes: [], hotLead: { on: 'email.opened', count: 3, within: '48h', cooldown: '24h', task: { text: 'Hot: {{count}} opens in {{within}} by {{email}} (lead {{lead.id}})', due: '8h', typeId: 2 } } });

  /** Opens at the given hours after T0 (each processed at its own time); which ones produced a task. */
  async function run(hours: number[]): Promise<Array<[number, KommoOp[]]>> {
    const deps = fakeCounters();
    const out: Array<[number, KommoOp[]]> = [];
    for (const h of hours) out.push([h, await planEngagement(ev('email.opened', { occurredAt: T0 + h * H }), match, r, deps, T0 + h * H)]);
    return out;
  }
  const tasksAt = async (hours: number[]) => (await run(hours)).filter(([, ops]) => ops.length).map(([h]) => h);

  const cases: Array<[string, number[], number[]]> = [
    ['3 opens -> one task on the 3rd', [0, 1, 2], [2]],
    ['a 4th open within the cooldown -> none', [0, 1, 2, 3], [2]],
    ['after the cooldown -> a new task', [0, 1, 2, 3, 27], [2, 27]],
    ['opens outside the window do not count', [0, 30, 60], []],
    ['the window slides: the 3 latest within 48h count', [0, 30, 60, 70], [70]],
    ['2 opens -> nothing yet', [0, 1], []],
  ];
  for (const [name, hours, expected] of cases) it(name, async () => assert.deepEqual(await tasksAt(hours), expected));

  it('the task: text, due time in unix seconds, responsible, type', async () => {
    const [, , [, ops]] = (await run([0, 1, 2])) as [unknown, unknown, [number, KommoOp[]]];
    assert.deepEqual(ops, [{
      kind: 'addTask', leadId: 42, text: 'Hot: 3 opens in 48h by ana@example.com (lead 42)',
      completeTill: Math.floor((T0 + 2 * H + 8 * H) / 1000), responsibleUserId: 9, taskTypeId: 2,
    }]);
  });

  it('other kinds do not count', async () => {
    const deps = fakeCounters();
    for (let i = 0; i < 5; i++) assert.deepEqual(await planEngagement(ev('email.clicked'), match, r, deps, T0 + i), []);
  });

  it('counts are per lead', async () => {
    const deps = fakeCounters();
    const other = { ...match, leadId: 43 };
    const got: number[] = [];
    for (const [i, m] of [match, other, match, other, match].entries()) {
      const ops = await planEngagement(ev('email.opened', { occurredAt: T0 + i }), m, r, deps, T0 + i);
      if (ops.length) got.push(m.leadId);
    }
    assert.deepEqual(got, [42]);
  });
});

describe('planEngagement: unsubscribe and bounce', () => {
  type Row = [string, Record<string, unknown>, EngagementEvent, LeadMatch, KommoOp[]];
  const cases: Row[] = [
    ['unsubscribe -> field + tag + note',
      { unsubscribe: { contactField: 'Email opt-in', value: false, tag: 'Email Unsubscribed' } }, ev('email.unsubscribed'), match, [
        { kind: 'updateContact', contactId: 77, fields: [{ fieldId: 555, value: false }], tagsToAdd: ['Email Unsubscribed'] },
        { kind: 'addNote', leadId: 42, text: 'Unsubscribed from email (via cio)' },
      ]],
    ['field by code, no tag',
      { unsubscribe: { contactField: 'OPT_IN', value: 'no' } }, ev('email.unsubscribed'), match, [
        { kind: 'updateContact', contactId: 77, fields: [{ fieldCode: 'OPT_IN', value: 'no' }] },
        { kind: 'addNote', leadId: 42, text: 'Unsubscribed from email (via cio)' },
      ]],
    ['no contact known: note only',
      { unsubscribe: { contactField: 'Email opt-in', tag: 'Email Unsubscribed' } }, ev('email.unsubscribed'), { ...match, contactId: null }, [
        { kind: 'addNote', leadId: 42, text: 'Unsubscribed from email (via cio)' },
      ]],
    ['note: false silences the note even when listed in notes',
      { notes: ['email.unsubscribed'], unsubscribe: { tag: 'U', note: false } }, ev('email.unsubscribed'), match, [
        { kind: 'updateContact', contactId: 77, tagsToAdd: ['U'] },
      ]],
    ['task and stage move',
      { notes: [], unsubscribe: { note: false, task: { text: 'Call {{email}} about unsubscribing', due: '24h' }, moveToStage: 'Unsubscribed' } }, ev('email.unsubscribed'), match, [
        { kind: 'addTask', leadId: 42, text: 'Call ana@example.com about unsubscribing', completeTill: Math.floor((T0 + 24 * H) / 1000), responsibleUserId: 9, taskTypeId: 1 },
        { kind: 'moveLead', leadId: 42, pipelineId: 7, statusId: 999 },
      ]],
    ['a won lead is not moved',
      { notes: [], unsubscribe: { note: false, moveToStage: 'Unsubscribed' } }, ev('email.unsubscribed'), { ...match, statusId: 142 }, []],
    ['bounce -> tag + note',
      { bounce: {} }, ev('email.bounced', { detail: 'mailbox full' }), match, [
        { kind: 'updateContact', contactId: 77, tagsToAdd: ['Email Bounced'] },
        { kind: 'addNote', leadId: 42, text: 'Email bounced: mailbox full (via cio)' },
      ]],
    ['default notes without rules: unsubscribe note only',
      {}, ev('email.unsubscribed'), match, [{ kind: 'addNote', leadId: 42, text: 'Unsubscribed from email (via cio)' }]],
  ];
  for (const [name, cfg, e, m, expected] of cases) {
    it(name, async () => assert.deepEqual(await planEngagement(e, m, rules(cfg), fakeCounters(), T0), expected));
  }
});

describe('compileEngagementRules: errors carry the location', () => {
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ unsubscribe: { contactField: 'Email optin' } }, /^kommo-sync\.yaml:40 accounts\.acme\.engagement\.unsubscribe\.contactField: no contact field "Email optin"; did you mean "Email opt-in"\?/],
    [{ unsubscribe: { moveToStage: 'Unsubscribd' } }, /^kommo-sync\.yaml:40 accounts\.acme\.engagement\.unsubscribe\.moveToStage: no stage/],
    [{ hotLead: { task: { text: 'Hot {{cont}}' } } }, /^kommo-sync\.yaml:40 accounts\.acme\.engagement\.hotLead\.task\.text .*unknown name `cont` \(did you mean `count`\?\); expected one of count, within/],
    [{ unsubscribe: { task: { text: '{{ lead.id' } } }, /unsubscribe\.task\.text: .*no matching `}}`/],
    // Engagement templates see the matched lead's ids, not the enriched lead: checked against that.
    [{ hotLead: { task: { text: '{{lead.price}}' } } }, /hotLead\.task\.text .*unknown name `lead\.price`.*`lead` has id, responsibleUserId, pipelineId, statusId/],
    [{ hotLead: { task: { text: '{{event.kidn}}' } } }, /did you mean `event\.kind`\?/],
  ];
  for (const [cfg, message] of cases) it(JSON.stringify(cfg), () => assert.throws(() => rules(cfg), { name: 'MappingError', message }));
  it('every name engagement templates document compiles', () => {
    rules({ hotLead: { task: { text: '{{count}} {{within}} {{email}} {{source}} {{subject}} {{link}} {{campaign}} {{detail}} {{signal}} {{event.kind}} {{event.occurredAt}} {{lead.id}} {{lead.responsibleUserId}} {{contact.id}}' } } });
  });
});

describe('findLeadForEmail', () => {
  const row = (id: number, updatedAt: number, over: Partial<LeadRow> = {}): LeadRow => ({
    id, statusId: 101, pipelineId: 7, updatedAt, responsibleUserId: 9, closed: false, ...over,
  });

  function deps(index: number[], contacts: Array<{ id: number; leadIds: number[] }>, leads: LeadRow[]) {
    const remembered: Array<[string, number, number]> = [];
    const calls: string[] = [];
    const d: FindLeadDeps = {
      async indexed() { calls.push('indexed'); return index; },
      async searchContacts() { calls.push('search'); return contacts; },
      async getLeads(ids) { calls.push(`getLeads(${ids.join(',')})`); return leads.filter((l) => ids.includes(l.id)); },
      async remember(email, leadId, updatedAt) { remembered.push([email, leadId, updatedAt]); },
    };
    return { d, remembered, calls };
  }

  type Row = [string, number[], Array<{ id: number; leadIds: number[] }>, LeadRow[], Partial<LeadMatch> | null];
  const cases: Row[] = [
    ['several leads: the open one wins over a more recent won one',
      [], [{ id: 77, leadIds: [1, 2, 3] }], [row(1, 100), row(2, 300, { statusId: 142, closed: true }), row(3, 200)], { leadId: 3, contactId: 77 }],
    ['several open leads: most recently updated',
      [], [{ id: 77, leadIds: [1] }, { id: 78, leadIds: [2] }], [row(1, 100), row(2, 200)], { leadId: 2, contactId: 78 }],
    ['only closed leads: the most recent closed one',
      [], [{ id: 77, leadIds: [1, 2] }], [row(1, 100, { statusId: 143, closed: true }), row(2, 200, { statusId: 142, closed: true })], { leadId: 2, statusId: 142 }],
    ['nothing found', [], [], [], null],
    ['index hit: its lead, contact from the lead\'s main contact',
      [5], [], [row(5, 50, { mainContactId: 70 })], { leadId: 5, contactId: 70 }],
    ['stale index (lead deleted): falls back to the search',
      [9], [{ id: 77, leadIds: [1] }], [row(1, 100)], { leadId: 1, contactId: 77 }],
  ];
  for (const [name, index, contacts, leads, expected] of cases) {
    it(name, async () => {
      const { d } = deps(index, contacts, leads);
      const m = await findLeadForEmail('ana@example.com', d);
      if (expected === null) assert.equal(m, null);
      else for (const [k, v] of Object.entries(expected)) assert.equal(m?.[k as keyof LeadMatch], v, k);
    });
  }

  it('an index hit asks Kommo no search; a search result is remembered', async () => {
    const hit = deps([5], [], [row(5, 50)]);
    await findLeadForEmail('ana@example.com', hit.d);
    assert.deepEqual(hit.calls, ['indexed', 'getLeads(5)']);

    const miss = deps([], [{ id: 77, leadIds: [1, 3] }], [row(1, 100), row(3, 200)]);
    const m = await findLeadForEmail('ana@example.com', miss.d);
    assert.deepEqual(m, { leadId: 3, contactId: 77, responsibleUserId: 9, pipelineId: 7, statusId: 101 });
    assert.deepEqual(miss.remembered, [['ana@example.com', 3, 200]]);
  });
});

describe('planEngagement: unified engagement across tools', () => {
  const hot = { on: 'email.opened', count: 3, within: '48h', cooldown: '24h', task: { text: 'Hot', due: '8h' } };

  it('opens from different tools count toward the same lead\'s hot-lead window', async () => {
    const r = rules({ notes: [], hotLead: hot });
    const deps = fakeCounters();
    const a = await planEngagement(ev('email.opened', { source: 'cio' }), match, r, deps, T0);
    const b = await planEngagement(ev('email.opened', { source: 'iterable', occurredAt: T0 + H }), match, r, deps, T0 + H);
    const c = await planEngagement(ev('email.opened', { source: 'encharge', occurredAt: T0 + 2 * H }), match, r, deps, T0 + 2 * H);
    assert.deepEqual([a.length, b.length], [0, 0]);
    assert.deepEqual(c.map((o) => o.kind), ['addTask']);
  });

  it('machine opens (privacy proxies, prefetch) never count toward a hot lead', async () => {
    const r = rules({ notes: ['email.opened'], hotLead: hot });
    const deps = fakeCounters();
    const ops: KommoOp[] = [];
    for (let i = 0; i < 5; i++) ops.push(...await planEngagement(ev('email.opened', { machine: true, occurredAt: T0 + i }), match, r, deps, T0 + i));
    assert.ok(!ops.some((o) => o.kind === 'addTask'), JSON.stringify(ops));
    assert.match((ops[0] as Extract<KommoOp, { kind: 'addNote' }>).text, /automated: not counted/);
    // Two human opens after five machine ones are still only two.
    for (let i = 0; i < 2; i++) ops.push(...await planEngagement(ev('email.opened', { occurredAt: T0 + 10 + i }), match, r, deps, T0 + 10 + i));
    assert.ok(!ops.some((o) => o.kind === 'addTask'));
  });

  it('a spam complaint applies the unsubscribe rule', async () => {
    const r = rules({ notes: [], unsubscribe: { contactField: 'Email opt-in', tag: 'Email Unsubscribed' } });
    const ops = await planEngagement(ev('email.spammed'), match, r, fakeCounters(), T0);
    assert.deepEqual(ops.map((o) => o.kind), ['updateContact', 'addNote']);
    assert.deepEqual((ops[1] as Extract<KommoOp, { kind: 'addNote' }>).text, 'Email marked as spam (via cio)');
  });

  it('opt-outs propagate to other tools unless turned off', () => {
    assert.equal(rules({}).propagateOptOut, true);
    assert.equal(rules({ unsubscribe: { propagate: false } }).propagateOptOut, false);
  });
});

describe('planEngagement: intent signals', () => {
  const signals = [{
    source: 'encharge',
    cfg: destinationCommon.parse({ signals: { tags: ['clicked-pricing'], emails: ['Proposal', 'pricing'], task: { text: 'Signal: {{signal}} by {{email}}' } } }).signals!,
    where: (sub: string) => `f.yaml:9 signals.${sub}`,
  }];
  const r = compileEngagementRules(engagementSchema.parse({ notes: ['email.clicked', 'tag.added'] }), resolver, WHERE, signals);

  it('a configured tag becomes one task and one note naming it; a second within the cooldown none', async () => {
    const deps = fakeCounters();
    const first = await planEngagement(ev('tag.added', { source: 'encharge', detail: 'Clicked-Pricing' }), match, r, deps, T0);
    assert.deepEqual(first.map((o) => o.kind), ['addNote', 'addTask']);
    assert.equal((first[0] as Extract<KommoOp, { kind: 'addNote' }>).text, 'Intent signal: tag Clicked-Pricing (ana@example.com, via encharge)');
    const task = first[1] as Extract<KommoOp, { kind: 'addTask' }>;
    assert.equal(task.text, 'Signal: tag Clicked-Pricing by ana@example.com');
    assert.equal(task.completeTill, Math.floor((T0 + 2 * H) / 1000), 'due in 2 h by default');
    assert.equal(task.responsibleUserId, 9);
    const second = await planEngagement(ev('tag.added', { source: 'encharge', detail: 'clicked-pricing' }), match, r, deps, T0 + H);
    assert.deepEqual(second.map((o) => o.kind), ['addNote'], 'only the usual tag note');
  });

  it('a click in a configured email is a signal; a newsletter open or another tool\'s tag is not', async () => {
    const click = await planEngagement(ev('email.clicked', { source: 'encharge', subject: 'Your proposal from Acme', link: 'https://acme.test/pricing' }), match, r, fakeCounters(), T0);
    assert.deepEqual(click.map((o) => o.kind), ['addNote', 'addTask']);
    const newsletter = await planEngagement(ev('email.opened', { source: 'encharge', subject: 'March newsletter' }), match, r, fakeCounters(), T0);
    assert.deepEqual(newsletter, []);
    const elsewhere = await planEngagement(ev('tag.added', { source: 'cio', detail: 'clicked-pricing' }), match, r, fakeCounters(), T0);
    assert.deepEqual(elsewhere.map((o) => o.kind), ['addNote']);
  });
});
