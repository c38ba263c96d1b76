import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { StaticTokenProvider } from './auth.js';
import { CatalogLookupError, KommoCatalog, editDistance, nearestName, slugify, toFieldValues } from './catalog.js';
import { KommoClient } from './client.js';
import type { KommoCustomFieldValue } from './schemas.js';
import { CircuitBreaker, SlidingWindowLimiter } from './rate-limit.js';
import { DEFAULT_ACCESS_TOKEN, KommoSimulator } from './simulator/index.js';

describe('KommoCatalog over the simulator', () => {
  const sim = new KommoSimulator({ subdomain: 'acme' });
  let client: KommoClient;
  before(async () => {
    const baseUrl = await sim.listen(0);
    client = new KommoClient({
      account: 'catalog-test',
      baseUrl,
      auth: new StaticTokenProvider(DEFAULT_ACCESS_TOKEN),
      limiter: new SlidingWindowLimiter(7),
      breaker: new CircuitBreaker(),
    });
  });
  after(() => sim.close());

  const pipelineRequests = () => sim.requests.filter((r) => r.path === '/api/v4/leads/pipelines').length;

  it('keys stages from config ("Stage" or "Pipeline / Stage"), else by slug; types won/lost/incoming', async () => {
    const catalog = new KommoCatalog(client, { stages: { 'Proposal sent': 'proposal', 'sales / qualified': 'sql' } });
    await catalog.load();
    const sales = sim.mainPipeline;
    const byName = (n: string) => catalog.stage(sales.id, sim.status(n).id);
    assert.equal(byName('Proposal sent')?.key, 'proposal');
    assert.equal(byName('Qualified')?.key, 'sql');
    assert.equal(byName('Demo scheduled')?.key, 'demo_scheduled');
    assert.equal(byName('Incoming leads')?.type, 'incoming');
    assert.equal(byName('Qualified')?.type, 'open');
    assert.deepEqual(
      { ...catalog.stage(sales.id, 142) },
      { id: 142, name: 'Closed - won', key: 'closed_won', pipelineId: sales.id, pipeline: 'Sales', type: 'won' },
    );
    assert.equal(catalog.stage(sales.id, 143)?.type, 'lost');
    assert.equal(catalog.stage(sales.id, 999), null);
    assert.deepEqual(catalog.configErrors(), []);
  });

  it('an unknown stage triggers exactly one pipelines refresh for 50 concurrent lookups', async () => {
    let now = Date.now();
    const catalog = new KommoCatalog(client, { now: () => now });
    await catalog.load();
    const partners = sim.addPipeline('Partners', ['Intro call', 'Contract']);
    const contract = sim.status('Contract', partners.id);
    const before = pipelineRequests();

    const found = await Promise.all(Array.from({ length: 50 }, () => catalog.refreshIfUnknown(partners.id, contract.id)));
    assert.ok(found.every((s) => s?.name === 'Contract' && s.pipeline === 'Partners' && s.key === 'contract'));
    assert.equal(pipelineRequests() - before, 1);

    // Within 30 s of that refresh, another unknown stage is answered from the cache.
    assert.equal(await catalog.refreshIfUnknown(partners.id, 424242), null);
    assert.equal(pipelineRequests() - before, 1);
    now += 30_000;
    assert.equal(await catalog.refreshIfUnknown(partners.id, 434343), null);
    assert.equal(pipelineRequests() - before, 2);
  });

  it('resolves stages by name, insists on "Pipeline / Stage" when ambiguous, and suggests the nearest name for a typo', async () => {
    if (![...sim.pipelines.values()].some((p) => p.name === 'Resellers')) sim.addPipeline('Resellers', ['Qualified', 'Signed']);
    const catalog = new KommoCatalog(client, { stages: { 'Proposl sent': 'p' } });
    await catalog.load();
    assert.equal(catalog.resolveStageByName('proposal SENT').name, 'Proposal sent');
    assert.equal(catalog.resolveStageByName('Resellers / Qualified').pipeline, 'Resellers');
    assert.equal(catalog.resolveStageByName('Sales/Qualified').pipeline, 'Sales');
    assert.equal(catalog.resolveStageByName('demo_scheduled').name, 'Demo scheduled');

    assert.throws(() => catalog.resolveStageByName('Qualified'), (e: unknown) =>
      e instanceof CatalogLookupError && /several pipelines/.test(e.message) && /"Resellers \/ Qualified"/.test(e.message));
    assert.throws(() => catalog.resolveStageByName('Proposl sent'), (e: unknown) =>
      e instanceof CatalogLookupError && e.suggestion === 'Proposal sent' && /did you mean "Proposal sent"\?/.test(e.message));
    assert.equal(catalog.configErrors().length, 1);
    assert.match(catalog.configErrors()[0]!, /did you mean "Proposal sent"/);
  });

  it('finds fields by name, code or id, with a suggestion for a typo, and reads values with their types', async () => {
    const catalog = new KommoCatalog(client);
    await catalog.load();
    const email = catalog.field('contacts', 'EMAIL');
    assert.equal(email.name, 'Email');
    assert.equal(catalog.field('contacts', 'email opt-in').type, 'checkbox');
    assert.equal(catalog.field('contacts', String(email.id)).id, email.id);
    assert.throws(() => catalog.field('leads', 'Industy'), /did you mean "Industry"\?/);

    const contact = sim.createContact({ name: 'Eve', email: 'eve@x.com', phone: '+100', fields: { 'Email opt-in': true } });
    const [read] = await client.getContactsByIds([contact.id]);
    const values = catalog.fieldValues('contacts', read!.custom_fields_values);
    assert.deepEqual(values['EMAIL'], ['eve@x.com']);
    assert.deepEqual(values['Email'], ['eve@x.com']);
    assert.deepEqual(values['PHONE'], ['+100']);
    assert.equal(values['Email opt-in'], true);
  });
});

describe('toFieldValues', () => {
  const cf = (field_id: number, field_name: string, field_type: string, values: unknown[], field_code: string | null = null): KommoCustomFieldValue =>
    ({ field_id, field_name, field_code, field_type, values: values.map((value) => ({ value })) }) as KommoCustomFieldValue;

  it('converts each type and keys by name and code', () => {
    const values = toFieldValues([
      cf(1, 'Industry', 'select', ['SaaS']),
      cf(2, 'Interests', 'multiselect', ['A', 'B']),
      cf(3, 'Budget', 'numeric', ['1500.5']),
      cf(4, 'VIP', 'checkbox', [true]),
      cf(5, 'Email', 'multitext', ['a@x.com'], 'EMAIL'),
      cf(6, 'Next call', 'date', [1700000000]),
      cf(7, 'Address', 'smart_address', [{ city: 'Paris' }]),
      cf(8, 'Notes', 'textarea', []),
    ]);
    assert.deepEqual(values, {
      Industry: 'SaaS',
      Interests: ['A', 'B'],
      Budget: 1500.5,
      VIP: true,
      Email: ['a@x.com'],
      EMAIL: ['a@x.com'],
      'Next call': 1700000000,
      Address: '{"city":"Paris"}',
      Notes: null,
    });
  });

  it('uses definitions when the value lacks its type or name', () => {
    const raw = [{ field_id: 9, values: [{ value: '1' }] }] as KommoCustomFieldValue[];
    assert.deepEqual(toFieldValues(raw, () => ({ name: 'Opt-in', code: null, type: 'checkbox' })), { 'Opt-in': true });
    assert.deepEqual(toFieldValues(null), {});
  });
});

describe('names', () => {
  it('slugifies, measures edit distance, and suggests only plausible names', () => {
    assert.equal(slugify('Proposal sent'), 'proposal_sent');
    assert.equal(slugify('Négociation / Final!'), 'negociation_final');
    assert.equal(slugify('Новый'), '');
    assert.equal(editDistance('kitten', 'sitting'), 3);
    assert.equal(nearestName('Qualifed', ['Qualified', 'Won']), 'Qualified');
    assert.equal(nearestName('Completely different', ['Won']), null);
  });
});
