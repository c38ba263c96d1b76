/**
 * `region: eu` reaches Iterable's EU host, over real HTTP with nothing patched: the connector sends
 * its request to https://api.eu.iterable.com/api. Without network the request fails in DNS and is
 * retried; with network Iterable refuses the made-up key. Either way the request log names the
 * host it went to, and no credential.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { iterable } from '../../src/destinations/iterable/index.js';
import { iterableSettings } from '../../src/destinations/iterable/settings.js';
import type { DestinationContext } from '../../src/destinations/types.js';

const KEY = 'region-test-key-not-a-real-one-0123456789';

function ctxFor(region: 'us' | 'eu' | undefined) {
  const lines: string[] = [];
  const ctx: DestinationContext<ReturnType<typeof iterableSettings.parse>> = {
    name: 'iterable',
    settings: iterableSettings.parse({ apiKey: KEY, ...(region ? { region } : {}) }),
    identifyBy: 'email',
    log: pino({ level: 'debug' }, { write: (l: string) => void lines.push(l) }),
    timeoutMs: 3000,
  };
  return { ctx, urls: () => lines.map((l) => (JSON.parse(l) as { url?: string }).url).filter((u): u is string => typeof u === 'string') };
}

describe('Iterable regions', () => {
  for (const [region, host] of [['eu', 'https://api.eu.iterable.com/api/'], [undefined, 'https://api.iterable.com/api/']] as const) {
    it(`${region ?? 'no region (US)'}: deliveries and the check go to ${host}`, async () => {
      const { ctx, urls } = ctxFor(region);
      const [result] = await iterable.deliver(ctx, [{ kind: 'upsertPerson', person: { email: 'eu@example.com' }, attributes: {}, timestamp: Date.now() }]);
      assert.ok(result && !('ok' in result), 'a made-up key cannot succeed');
      await assert.rejects(iterable.check(ctx), (err: Error) => err.message.includes(host.slice(0, -1)));
      assert.deepEqual(urls().map((u) => u.slice(0, host.length)), [host, host]);
      assert.ok(urls()[0]!.endsWith('/users/bulkUpdate'));
      assert.ok(urls().every((u) => !u.includes(KEY)));
    });
  }
});
