import { secretKeys } from '../../model/index.js';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { joinUrl } from '../http.js';
import { authorization, trackUrl } from './client.js';
import { customerio } from './index.js';
import { customerioSettings, regionMismatch } from './settings.js';


describe('customerio settings', () => {
  it('defaults to the US region and refuses keys it does not know', () => {
    const s = customerioSettings.parse({ siteId: 's', apiKey: 'k' });
    assert.equal(s.region, 'us');
    assert.equal(customerioSettings.safeParse({ siteId: 's', apiKey: 'k', apikey: 'typo' }).success, false);
    assert.equal(customerioSettings.safeParse({ siteId: 's', apiKey: 'k', baseUrl: 'ftp://x' }).success, false);
    assert.equal(customerioSettings.parse({ siteId: 's', apiKey: 'k', timeout: '2s' }).timeout, 2000);
  });

  it('marks the credentials as secrets in the schema (masked everywhere from that mark)', () => {
    assert.deepEqual(secretKeys(customerioSettings).sort(), ['apiKey', 'siteId', 'webhookSigningKey']);
  });

  it('resolves the Track root from region or baseUrl (which may carry a path prefix)', () => {
    assert.equal(trackUrl({ region: 'us' }), 'https://track.customer.io');
    assert.equal(trackUrl({ region: 'eu' }), 'https://track-eu.customer.io');
    assert.equal(trackUrl({ region: 'eu', baseUrl: 'http://127.0.0.1:4010/cio/' }), 'http://127.0.0.1:4010/cio/');
    assert.equal(joinUrl('http://127.0.0.1:4010/cio/', '/api/v2/batch'), 'http://127.0.0.1:4010/cio/api/v2/batch');
    assert.equal(joinUrl('https://track-eu.customer.io', 'api/v1/accounts/region'), 'https://track-eu.customer.io/api/v1/accounts/region');
    assert.equal(authorization({ siteId: 'site', apiKey: 'key' }), `Basic ${Buffer.from('site:key').toString('base64')}`);
  });

  it('names a region mismatch (redirects are not followed), unless baseUrl chose the host', () => {
    assert.equal(regionMismatch({ region: 'us' }, 'us'), null);
    assert.equal(regionMismatch({ region: 'eu' }, 'EU'), null);
    assert.equal(regionMismatch({ region: 'us' }, undefined), null);
    assert.match(regionMismatch({ region: 'us' }, 'eu') ?? '', /account is in the "eu" region but region is "us": set region: eu/);
    assert.equal(regionMismatch({ region: 'us', baseUrl: 'http://127.0.0.1:4010/cio/' }, 'eu'), null);
  });
});
