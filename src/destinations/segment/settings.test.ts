import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { secretKeys } from '../../model/index.js';
import { authorization, rudderstackBatchUrl, segmentBatchUrl } from './client.js';
import { rudderstack, segment } from './index.js';
import { rudderstackSettings, segmentSettings } from './settings.js';

describe('segment settings', () => {
  it('needs a write key, defaults group on, leaves region unset, refuses unknown keys', () => {
    const s = segmentSettings.parse({ writeKey: 'k' });
    assert.deepEqual(s, { writeKey: 'k', group: true });
    assert.equal(segmentSettings.safeParse({}).success, false);
    assert.equal(segmentSettings.safeParse({ writeKey: '' }).success, false);
    assert.equal(segmentSettings.safeParse({ writeKey: 'k', writekey: 'typo' }).success, false);
    assert.equal(segmentSettings.safeParse({ writeKey: 'k', region: 'mars' }).success, false);
    assert.equal(segmentSettings.safeParse({ writeKey: 'k', baseUrl: 'ftp://x' }).success, false);
    assert.equal(segmentSettings.parse({ writeKey: 'k', timeout: '2s', group: false }).timeout, 2000);
  });

  it('resolves the Tracking API from region or baseUrl (which may carry a path prefix)', () => {
    assert.equal(segmentBatchUrl(segmentSettings.parse({ writeKey: 'k' })), 'https://api.segment.io/v1/batch');
    assert.equal(segmentBatchUrl(segmentSettings.parse({ writeKey: 'k', region: 'us' })), 'https://api.segment.io/v1/batch');
    assert.equal(segmentBatchUrl(segmentSettings.parse({ writeKey: 'k', region: 'eu' })), 'https://events.eu1.segmentapis.com/v1/batch');
    assert.equal(segmentBatchUrl(segmentSettings.parse({ writeKey: 'k', region: 'eu', baseUrl: 'http://127.0.0.1:4010/seg/v1/' })), 'http://127.0.0.1:4010/seg/v1/batch');
  });

  it('authenticates with Basic writeKey: (empty password, colon kept)', () => {
    assert.equal(authorization('abc'), `Basic ${Buffer.from('abc:').toString('base64')}`);
  });

  it('warns when region is not set (EU events sent to the US host vanish), not when it is', () => {
    const warnings = (raw: Record<string, unknown>) => segment.configWarnings?.(segmentSettings.parse({ writeKey: 'k', ...raw })) ?? [];
    assert.match(warnings({}).join('\n'), /region is not set.*EU.*never appear/s);
    assert.deepEqual(warnings({ region: 'us' }), []);
    assert.deepEqual(warnings({ region: 'eu' }), []);
    assert.deepEqual(warnings({ baseUrl: 'https://proxy.example/v1' }), []);
    assert.match(warnings({ region: 'eu', baseUrl: 'https://proxy.example/v1' }).join(), /baseUrl overrides region "eu"/);
  });

  it('marks the write key as the only secret', () => {
    assert.deepEqual(secretKeys(segmentSettings), ['writeKey']);
    assert.deepEqual(secretKeys(rudderstackSettings), ['writeKey']);
  });
});

describe('rudderstack settings', () => {
  it('requires the data plane URL and takes no region', () => {
    assert.equal(rudderstackSettings.safeParse({ writeKey: 'k' }).success, false);
    assert.equal(rudderstackSettings.safeParse({ writeKey: 'k', dataPlaneUrl: 'https://dp.example', region: 'eu' }).success, false);
    const s = rudderstackSettings.parse({ writeKey: 'k', dataPlaneUrl: 'https://acme.dataplane.rudderstack.com' });
    assert.equal(rudderstackBatchUrl(s), 'https://acme.dataplane.rudderstack.com/v1/batch');
    assert.equal(rudderstackBatchUrl({ ...s, dataPlaneUrl: 'http://127.0.0.1:4010/rudder/' }), 'http://127.0.0.1:4010/rudder/v1/batch');
  });

  it('warns about a data plane URL that already ends in /v1, and about http:// off this machine', () => {
    const warnings = (dataPlaneUrl: string) => rudderstack.configWarnings?.(rudderstackSettings.parse({ writeKey: 'k', dataPlaneUrl })) ?? [];
    assert.deepEqual(warnings('https://dp.example'), []);
    assert.deepEqual(warnings('http://127.0.0.1:8080'), []);
    assert.match(warnings('https://dp.example/v1').join(), /appends \/v1\/batch/);
    assert.match(warnings('https://dp.example/v1/batch').join(), /appends \/v1\/batch/);
    assert.match(warnings('http://dp.example').join(), /clear text/);
  });
});
