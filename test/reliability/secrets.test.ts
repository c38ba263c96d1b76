/**
 * Secrets stay secret: the whole service runs with distinctive secret values (Kommo token, webhook
 * secrets, every destination's credentials, the admin token) through a demo scenario in both
 * directions; none of them appears in the logs (at debug level), the admin API's answers, the
 * dashboard page, the metrics, or what the store keeps (job payloads, inbox payloads, the
 * delivery log). The secret values are found through the config schemas' `secret()` marks.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, it } from 'node:test';
import { configSchema } from '../../src/config/schema.js';
import { Scenario } from '../../src/demo/scenario.js';
import { startWorld, type World } from '../../src/demo/world.js';
import { getDestination, registerDestination } from '../../src/destinations/index.js';
import { secretPaths } from '../../src/model/index.js';
import { createLogger } from '../../src/observability/logger.js';
import { secretRedactPaths } from '../../src/runtime/secrets.js';
import { startService, type Service } from '../../src/runtime/service.js';
import { fake } from '../kit/fake-destination/index.js';
import { waitFor } from '../integration/wait.js';

registerDestination(fake);

const ADMIN = 'ADMIN-SECRET-a1b2c3d4e5f6a7b8c9d0';
let world: World;
let service: Service;
const lines: string[] = [];

/** Every value at a secret path of `value` per `schema` ('*' matches any key). */
function valuesAt(value: unknown, paths: string[][]): string[] {
  const out: string[] = [];
  const walk = (v: unknown, rest: string[]) => {
    if (rest.length === 0) {
      if (typeof v === 'string') out.push(v);
      return;
    }
    if (!v || typeof v !== 'object') return;
    const [head, ...tail] = rest;
    for (const [k, child] of Object.entries(v)) if (head === '*' || head === k) walk(child, tail);
  };
  for (const p of paths) walk(value, p);
  return out;
}

before(async () => {
  world = await startWorld({
    kommoAccessToken: 'KOMMO-SECRET-token-9f8e7d6c5b4a',
    overrides: { server: { port: 0, host: '127.0.0.1', adminToken: ADMIN, metricsToken: 'METRICS-SECRET-0f1e2d3c4b5a6978' }, log: { level: 'debug' } },
  });
  const log = createLogger({ level: 'debug', redact: secretRedactPaths(), destination: new Writable({ write: (c: Buffer, _e, cb) => { lines.push(c.toString()); cb(); } }) });
  service = await startService({ loaded: world.loaded, log, intake: true, work: true, port: 0, host: '127.0.0.1' });
  world.subscribe(service.url!);
});
after(async () => {
  await service?.close();
  await world?.close();
});

it('no secret in logs, API answers, the dashboard, metrics or the store, after traffic both ways', { timeout: 120_000 }, async () => {
  // The secrets, found by the schemas' marks (core config and each destination's own settings).
  const secrets = new Set(valuesAt(world.loaded.config, secretPaths(configSchema)));
  for (const d of world.loaded.destinations[world.account] ?? []) {
    for (const v of valuesAt(d.settings, secretPaths(getDestination(d.type)!.settings))) secrets.add(v);
    if (d.common.webhookSecret) secrets.add(d.common.webhookSecret);
  }
  assert.ok(secrets.size >= 6, `found ${secrets.size} secrets`);
  assert.ok(secrets.has('KOMMO-SECRET-token-9f8e7d6c5b4a') && secrets.has(ADMIN));

  const scenario = new Scenario(world, service.url!, () => {});
  for (let i = 0; i < 10; i++) await scenario.step();
  await waitFor(async () => (await service.store.stats(Date.now())).jobs.done > 20, 'traffic both ways');
  await waitFor(async () => {
    const s = await service.store.stats(Date.now());
    return s.inboxPending === 0 && s.jobs.pending === 0 && s.jobs.leased === 0;
  }, 'drained');

  const auth = { authorization: `Bearer ${ADMIN}` };
  const pages: Array<[string, Record<string, string>]> = [
    ['/', auth], ['/api/status', auth], ['/api/jobs?limit=500', auth], ['/api/jobs?state=done&limit=500', auth], ['/api/deliveries?limit=500', auth],
    ['/metrics', { authorization: 'Bearer METRICS-SECRET-0f1e2d3c4b5a6978' }], ['/readyz', {}], ['/healthz', {}],
  ];
  const answers = await Promise.all(pages.map(async ([path, headers]) => {
    const res = await fetch(`${service.url}${path}`, { headers });
    assert.equal(res.status, 200, path);
    return [path, await res.text()] as const;
  }));
  const jobs = JSON.stringify(await service.store.listJobs({ limit: 5000 }));
  const deliveries = JSON.stringify(await service.store.listDeliveries({ limit: 5000 }));
  const logs = lines.join('');
  assert.match(logs, /vendor request/, 'vendor requests were logged at debug level');
  for (const secret of secrets) {
    const show = `${secret.slice(0, 4)}…`;
    assert.ok(!logs.includes(secret), `${show} in the logs`);
    for (const [path, body] of answers) assert.ok(!body.includes(secret), `${show} in ${path}`);
    assert.ok(!jobs.includes(secret), `${show} in a stored job`);
    assert.ok(!deliveries.includes(secret), `${show} in the delivery log`);
  }
});
