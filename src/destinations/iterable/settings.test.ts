import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { secretKeys } from '../../model/index.js';
import { iterable } from './index.js';
import { apiRoot, iterableSettings } from './settings.js';

describe('iterable settings', () => {
  it('needs only the API key, and refuses keys it does not know', () => {
    const s = iterableSettings.parse({ apiKey: 'k' });
    assert.deepEqual(s, { apiKey: 'k', milestones: [], erase: 'delete' });
    assert.equal(iterableSettings.safeParse({ apiKey: 'k', apikey: 'typo' }).success, false);
    assert.equal(iterableSettings.safeParse({ apiKey: 'k', region: 'europe' }).success, false);
    assert.equal(iterableSettings.safeParse({ apiKey: 'k', baseUrl: 'ftp://x' }).success, false);
    assert.equal(iterableSettings.safeParse({ apiKey: '' }).success, false);
  });

  it('reads list ids given as numbers or quoted numbers, durations, milestones', () => {
    const s = iterableSettings.parse({ apiKey: 'k', suppressListId: '1900', timeout: '2s', milestones: [' completed onboarding '], erase: 'forget' });
    assert.deepEqual([s.suppressListId, s.timeout, s.milestones, s.erase], [1900, 2000, ['completed onboarding'], 'forget']);
    assert.equal(iterableSettings.parse({ apiKey: 'k', suppressListId: 1900 }).suppressListId, 1900);
    assert.equal(iterableSettings.safeParse({ apiKey: 'k', suppressListId: 'newsletter' }).success, false);
  });

  it('marks the credentials as secrets (masked everywhere from that mark)', () => {
    assert.deepEqual(secretKeys(iterableSettings).sort(), ['apiKey', 'webhookAuthToken']);
  });

  it('resolves the API root from region or baseUrl (which may carry a path prefix)', () => {
    assert.equal(apiRoot({}), 'https://api.iterable.com/api');
    assert.equal(apiRoot({ region: 'us' }), 'https://api.iterable.com/api');
    assert.equal(apiRoot({ region: 'eu' }), 'https://api.eu.iterable.com/api');
    assert.equal(apiRoot({ region: 'eu', baseUrl: 'http://127.0.0.1:4010/iterable' }), 'http://127.0.0.1:4010/iterable');
  });

  it('warns about config that works but is probably incomplete', () => {
    const warnings = iterable.configWarnings(iterableSettings.parse({ apiKey: 'k', erase: 'forget' }));
    assert.equal(warnings.length, 4);
    assert.match(warnings.join('\n'), /region is not set/);
    assert.match(warnings.join('\n'), /suppressListId is not set/);
    assert.match(warnings.join('\n'), /webhookAuthToken is not set/);
    assert.match(warnings.join('\n'), /1000 per day/);
    assert.deepEqual(iterable.configWarnings(iterableSettings.parse({ apiKey: 'k', region: 'eu', suppressListId: 1, webhookAuthToken: 't' })), []);
  });
});
