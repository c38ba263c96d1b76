import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { destinationCommon } from '../../config/schema.js';
import { secretKeys } from '../../model/index.js';
import { compileDestinationMapping } from '../../sync/outbound.js';
import { moosend, moosendDefaults } from './index.js';
import { externalOptIn, MOOSEND_URL, moosendSettings, settingsWarnings } from './settings.js';

describe('moosend settings', () => {
  it('has the documented defaults and refuses keys it does not know', () => {
    const s = moosendSettings.parse({ apiKey: 'k' });
    assert.equal(s.baseUrl, MOOSEND_URL);
    assert.equal(s.doubleOptIn, false);
    assert.equal(s.unsubscribeSweep, 600_000);
    assert.equal(moosendSettings.parse({ apiKey: 'k', unsubscribeSweep: 0 }).unsubscribeSweep, 0);
    assert.equal(moosendSettings.parse({ apiKey: 'k', unsubscribeSweep: '30m', timeout: '2s' }).timeout, 2000);
    assert.equal(moosendSettings.safeParse({ apiKey: 'k', apikey: 'typo' }).success, false);
    assert.equal(moosendSettings.safeParse({ apiKey: '' }).success, false);
    assert.equal(moosendSettings.safeParse({ apiKey: 'k', baseUrl: 'ftp://x' }).success, false);
    assert.equal(moosendSettings.safeParse({ apiKey: 'k', automations: { 'lead.bought': 'x' } }).success, false, 'automations are keyed by CRM event kind');
  });

  it('marks only the API key secret (webhookSecret is a common key)', () => {
    assert.deepEqual(secretKeys(moosendSettings), ['apiKey']);
  });

  it('reads automation list ids written as numbers as strings', () => {
    assert.deepEqual(moosendSettings.parse({ apiKey: 'k', automations: { 'lead.won': 12345 } }).automations, { 'lead.won': '12345' });
  });

  it('flags subscribers as opted in elsewhere unless Moosend should confirm, per list or stage', () => {
    const lists = { 'Demo scheduled': 'list-demo', 'Proposal sent': 'list-proposal' };
    assert.equal(externalOptIn({ doubleOptIn: false }, 'any'), true);
    assert.equal(externalOptIn({ doubleOptIn: true }, 'any'), false);
    const perList = { doubleOptIn: { 'Demo scheduled': true, 'list-other': true, 'list-proposal': false } };
    assert.equal(externalOptIn(perList, 'list-demo', lists), false, 'named by stage');
    assert.equal(externalOptIn(perList, 'list-other', lists), false, 'named by id');
    assert.equal(externalOptIn(perList, 'list-proposal', lists), true);
    assert.equal(externalOptIn(perList, 'list-unnamed', lists), true, 'unnamed lists: no confirmation');
    assert.equal(externalOptIn({ doubleOptIn: { 'Proposal sent': false, 'list-proposal': true } }, 'list-proposal', lists), false, 'confirming wins a conflict');
  });

  it('warns about a base URL without /v3 and a sweep that is off or too eager', () => {
    assert.deepEqual(settingsWarnings(moosendSettings.parse({ apiKey: 'k' })), []);
    assert.deepEqual(settingsWarnings(moosendSettings.parse({ apiKey: 'k', baseUrl: 'http://127.0.0.1:4010/moosend/v3/' })), []);
    const w = settingsWarnings(moosendSettings.parse({ apiKey: 'k', baseUrl: 'https://api.moosend.com', unsubscribeSweep: 0 }));
    assert.equal(w.length, 2);
    assert.match(w[0]!, /does not end in \/v3/);
    assert.match(w[1]!, /only through an automation's webhook/);
    assert.match(settingsWarnings(moosendSettings.parse({ apiKey: 'k', unsubscribeSweep: '10s' }))[0]!, /a minute or more/);
  });
});

describe('moosend mapping defaults', () => {
  const compile = (common: Record<string, unknown>, settings: Record<string, unknown> = {}) => {
    const s = moosendSettings.parse({ apiKey: 'k', ...settings });
    const defaults = typeof moosend.defaults === 'function' ? moosend.defaults(s) : moosend.defaults;
    return compileDestinationMapping(destinationCommon.parse(common), (sub) => `test ${sub}`, defaults);
  };

  it('sends Name, KommoStage and DealValue plus the mapped fields, none of the core snake_case names', () => {
    const m = compile({ attributes: { Industry: 'lead.fields["Industry"]' } });
    assert.deepEqual(m.attributes.map((a) => a.name).sort(), ['DealValue', 'Industry', 'KommoStage', 'Name']);
  });

  it('keeps lists by default (leaveLists: keep); the config may say remove', () => {
    assert.equal(compile({}).leaveLists, 'keep');
    assert.equal(compile({ leaveLists: 'remove' }).leaveLists, 'remove');
  });

  it('turns automations into list subscriptions on the named CRM events', () => {
    const m = compile({}, { automations: { 'lead.won': 'list-won', 'lead.lost': 77 } });
    assert.deepEqual(m.on, { 'lead.won': { addToList: 'list-won' }, 'lead.lost': { addToList: '77' } });
    assert.equal(moosendDefaults(moosendSettings.parse({ apiKey: 'k' })).on, undefined);
  });
});
