import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import pino from 'pino';
import { encodeBracketForm } from '../kommo/form.js';
import { Metrics } from '../observability/metrics.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';
import { buildApp } from './app.js';

const SECRET = 'a-long-random-webhook-secret';
const body = encodeBracketForm({
  leads: { status: [{ id: '101', status_id: '142', pipeline_id: '7', old_status_id: '5', last_modified: '1700000000' }] },
  account: { subdomain: 'acme', id: '1' },
});

describe('intake store deadline', () => {
  const stores: Store[] = [];
  after(async () => {
    for (const s of stores) await s.close();
  });

  it('answers 503 store_unavailable within ~1.5 s when the store hangs, and 200 once it answers again', { timeout: 10_000 }, async () => {
    const real = await openStore('sqlite::memory:');
    await real.migrate();
    stores.push(real);
    let hang = true;
    // The real store, except that insertInbox never settles while `hang` is set (a database that stopped answering).
    const store = new Proxy(real, {
      get(target, prop, receiver) {
        if (prop === 'insertInbox' && hang) return () => new Promise(() => {});
        const value: unknown = Reflect.get(target, prop, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const app = await buildApp({
      log: pino({ level: 'silent' }),
      store,
      metrics: new Metrics(real, { defaultMetrics: false }),
      bodyLimit: 1_000_000,
      intake: { store, accounts: new Map([['acme', { kommoSubdomain: 'acme', kommoSecret: SECRET, sources: new Map() }]]) },
    });
    try {
      const post = () => app.inject({ method: 'POST', url: `/webhooks/acme/kommo/${SECRET}`, headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: body });
      const started = Date.now();
      const res = await post();
      const took = Date.now() - started;
      assert.equal(res.statusCode, 503);
      assert.equal(res.json().error, 'store_unavailable');
      assert.ok(took >= 1_400 && took < 1_900, `answered after ${took} ms; Kommo waits about 2 s`);
      hang = false;
      const ok = await post();
      assert.equal(ok.statusCode, 200);
      assert.deepEqual(ok.json(), { ok: true, accepted: 1, duplicates: 0 });
    } finally {
      await app.close();
    }
  });
});
