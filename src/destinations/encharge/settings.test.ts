import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { destinationCommon } from '../../config/schema.js';
import { secretKeys, type EnrichedLead } from '../../model/index.js';
import { compileDestinationMapping, planOutbound } from '../../sync/outbound.js';
import { redactHeaders } from '../http.js';
import { TOKEN_HEADER, urlOf } from './client.js';
import { enchargeDefaults } from './defaults.js';
import { encharge } from './index.js';
import { enchargeSettings } from './settings.js';

describe('encharge settings', () => {
  it('defaults the documented roots and the unsubscribe subscription, and refuses unknown keys', () => {
    const s = enchargeSettings.parse({ apiKey: 'k', writeKey: 'w' });
    assert.equal(s.baseUrl, 'https://api.encharge.io/v1');
    assert.equal(s.ingestUrl, 'https://ingest.encharge.io/v1');
    assert.deepEqual(s.webhookEvents, ['unsubscribedUser']);
    assert.equal(enchargeSettings.safeParse({ apiKey: 'k', writeKey: 'w', apikey: 'typo' }).success, false);
    assert.equal(enchargeSettings.safeParse({ apiKey: 'k' }).success, false, 'the write key is required: events need it');
    assert.equal(enchargeSettings.safeParse({ apiKey: 'k', writeKey: 'w', ingestUrl: 'ftp://x' }).success, false);
    assert.equal(enchargeSettings.safeParse({ apiKey: 'k', writeKey: 'w', webhookEvents: ['added tag'] }).success, false);
    assert.equal(enchargeSettings.parse({ apiKey: 'k', writeKey: 'w', timeout: '2s' }).timeout, 2000);
  });

  it('marks both keys as secrets (masked everywhere from that mark)', () => {
    assert.deepEqual(secretKeys(enchargeSettings).sort(), ['apiKey', 'writeKey']);
  });

  it('builds URLs on either root, keeping a path prefix and encoding bracketed query keys', () => {
    const s = { baseUrl: 'http://127.0.0.1:4010/enc/v1/', ingestUrl: 'http://127.0.0.1:4010/enc/ingest/v1' };
    assert.equal(urlOf(s, { api: 'rest', path: '/people' }), 'http://127.0.0.1:4010/enc/v1/people');
    assert.equal(urlOf(s, { api: 'ingest', path: '/' }), 'http://127.0.0.1:4010/enc/ingest/v1/');
    assert.equal(urlOf(s, { api: 'rest', path: '/people', query: [['people[0][email]', 'a+b@x.co'], ['force', 'true']] }),
      'http://127.0.0.1:4010/enc/v1/people?people%5B0%5D%5Bemail%5D=a%2Bb%40x.co&force=true');
  });

  it('the X-Encharge-Token header is redacted in logs', () => {
    assert.deepEqual(redactHeaders({ [TOKEN_HEADER]: 'sekret', 'content-type': 'application/json' }), { [TOKEN_HEADER]: '[redacted]', 'content-type': 'application/json' });
  });

  it('warns about a config that works but is probably wrong', () => {
    const warn = (extra: Record<string, unknown>) => encharge.configWarnings(enchargeSettings.parse({ apiKey: 'k', writeKey: 'w', ...extra }));
    assert.deepEqual(warn({}), []);
    assert.match(warn({ writeKey: 'k' }).join('\n'), /writeKey equals apiKey/);
    assert.match(warn({ baseUrl: 'https://ingest.encharge.io/v1', ingestUrl: 'https://api.encharge.io/v1' }).join('\n'), /baseUrl points at the Ingest host[\s\S]*ingestUrl points at the REST host/);
    assert.match(warn({ webhookEvents: ['added-tag-clicked-pricing'] }).join('\n'), /leaves out unsubscribedUser/);
  });
});

describe('encharge default attributes', () => {
  const stage = { id: 102, name: 'Proposal sent', key: 'proposal_sent', pipelineId: 7, pipeline: 'Sales', type: 'open' as const };
  const lead = (contact: { name: string; firstName?: string; lastName?: string }): EnrichedLead => ({
    account: { name: 'acme', subdomain: 'acme', currency: 'USD' },
    event: { kind: 'lead.stage_changed', at: 1_700_000_000_000 },
    lead: {
      id: 42, name: 'Deal', price: 5000, pipelineId: 7, statusId: 102, responsibleUserId: 9, createdAt: 1, updatedAt: 2,
      closedAt: null, wonAt: null, lostAt: null, lossReason: null, tags: [], deleted: false, fields: { Industry: 'SaaS' },
    },
    contact: { id: 77, firstName: '', lastName: '', email: 'ann@example.com', phone: '', tags: [], fields: {}, ...contact },
    company: { id: 5, name: 'Acme Inc', fields: { Size: '50-200' } },
    pipeline: { id: 7, name: 'Sales' },
    stage,
    previousStage: null,
    responsible: { id: 9, name: 'Bob', email: null },
  });
  const mapping = compileDestinationMapping(
    destinationCommon.parse({ attributes: { companySize: 'company.fields["Size"]', industry: 'lead.fields["Industry"]' } }),
    'kommo-sync.yaml:40 accounts.acme.destinations.encharge',
    enchargeDefaults,
  );
  const attributesOf = async (e: EnrichedLead) => {
    const { ops } = await planOutbound(e, mapping, { supports: encharge.supports, dedupKey: 'k', destinationName: 'encharge' });
    const up = ops.find((o) => o.kind === 'upsertPerson');
    assert.ok(up?.kind === 'upsertPerson');
    return up.attributes;
  };

  const names: Array<[string, { name: string; firstName?: string; lastName?: string }, string | undefined, string | undefined]> = [
    ['one word', { name: 'Ann' }, 'Ann', undefined],
    ['first and last', { name: 'Ann Lee' }, 'Ann', 'Lee'],
    ['a middle name goes with the last name', { name: 'Ann Marie Lee' }, 'Ann', 'Marie Lee'],
    ['no name at all', { name: '' }, undefined, undefined],
    ['stray whitespace', { name: '  Ann \t Lee  ' }, 'Ann', 'Lee'],
    ['Kommo\'s own first and last name win', { name: 'Dr Ann Lee', firstName: 'Ann', lastName: 'Lee' }, 'Ann', 'Lee'],
    ['first name set, the rest of the name is the last name', { name: 'Ann Marie Lee', firstName: 'Ann Marie' }, 'Ann Marie', 'Lee'],
    ['first name set, a name that does not start with it gives no last name', { name: 'Lee, Ann', firstName: 'Ann' }, 'Ann', undefined],
  ];
  for (const [what, contact, first, last] of names) {
    it(`${what}: ${JSON.stringify(contact)} -> ${first ?? '-'} / ${last ?? '-'}`, async () => {
      const a = await attributesOf(lead(contact));
      assert.equal(a.firstName, first);
      assert.equal(a.lastName, last);
      assert.ok(!('firstName' in a) || first !== undefined, 'a missing name is left out, not sent empty');
    });
  }

  it('sends the lead id, the current stage and the mapped fields, in Encharge\'s camelCase for names', async () => {
    const a = await attributesOf(lead({ name: 'Ann Lee' }));
    assert.equal(a.kommo_lead_id, 42);
    assert.equal(a.kommo_current_stage, 'proposal_sent');
    assert.equal(a.companySize, '50-200');
    assert.equal(a.industry, 'SaaS');
    for (const dropped of ['first_name', 'last_name', 'kommo_stage']) assert.ok(!(dropped in a), `${dropped} is not sent`);
  });
});
