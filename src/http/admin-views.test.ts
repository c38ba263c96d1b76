import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AdminAuth } from './admin-auth.js';
import { scrubber } from './admin.js';
import { answerOf, describeEvent, describeOp, operationsOf, overview, percentile, reasonClass, SeriesCache } from './admin-views.js';
import { openStore } from '../store/open.js';

describe('dashboard views', () => {
  it('groups dead letters by what their reasons share: emails, ids and numbers blanked, HTTP statuses kept', () => {
    const a = reasonClass('invalid: HTTP 400: email "ann@x.io" is not valid (id 123456)');
    const b = reasonClass('invalid: HTTP 400: email "bob@y.org" is not valid (id 98)');
    assert.equal(a, b);
    assert.match(a, /HTTP 400/);
    assert.notEqual(reasonClass('auth: HTTP 401: bad key'), reasonClass('auth: HTTP 403: bad key'));
    assert.equal(reasonClass(null), 'unknown');
  });

  it('says what the vendor answered, once', () => {
    assert.equal(answerOf({ status: 'ok', httpStatus: 200, error: null }), 'HTTP 200 ok');
    assert.equal(answerOf({ status: 'failed', httpStatus: 400, error: 'invalid: HTTP 400: bad email' }), 'invalid: HTTP 400: bad email');
    assert.equal(answerOf({ status: 'retry', httpStatus: 503, error: 'busy' }), 'HTTP 503: busy');
    assert.equal(answerOf({ status: 'retry', httpStatus: null, error: 'timeout after 15 s' }), 'timeout after 15 s');
  });

  it('describes events and operations in words, stage names resolved', () => {
    const stage = (_a: string, p: number, s: number) => (p === 7 ? ({ 1: 'Qualified', 2: 'Proposal sent' } as Record<number, string>)[s] ?? null : null);
    assert.equal(describeEvent('acme', 'lead.stage_changed', { pipelineId: 7, statusId: 2, oldStatusId: 1 }, stage), 'stage changed from "Qualified" to "Proposal sent"');
    assert.equal(describeEvent('acme', 'lead.created', { pipelineId: 7, statusId: 9 }, stage), 'lead created in "stage 9"');
    assert.equal(describeEvent('acme', 'email.opened', { subject: 'Hi' }, stage), 'email opened "Hi"');
    assert.equal(describeOp({ kind: 'trackEvent', name: 'deal_won' }), 'event "deal_won"');
    assert.equal(describeOp({ kind: 'addNote', text: 'x'.repeat(100) }), `note "${'x'.repeat(77)}..."`);
    assert.equal(describeOp(null), 'operation');
  });

  it('percentiles by nearest rank', () => {
    assert.equal(percentile([], 50), null);
    assert.equal(percentile([1, 2, 3, 4], 50), 2);
    assert.equal(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 95), 10);
  });

  it('lists backfill and reconciliation per account: plain fields only, "off" told from "not known"', () => {
    const backfill = {
      filter: 'all leads', status: 'running' as const, leads: 500, total: 1_000, synced: 490, skipped: 10, jobs: 980,
      waiting: 'waiting for deliveries to acme/mail', error: null, startedAt: 1, updatedAt: 2, finishedAt: null,
      // Whatever else a stored record might carry stays out of the answer.
      run: 'internal-run-id', requests: 7,
    };
    const ops = operationsOf(['acme', 'beta', 'gamma'], {
      backfill: { acme: backfill },
      reconcile: { acme: { at: 5, read: 40, found: 2, totalFound: 3 }, beta: null },
    }, { acme: 600_000, beta: 0 });
    assert.deepEqual(ops.map((o) => o.account), ['acme', 'beta', 'gamma']);
    assert.equal(ops[0]!.backfill?.synced, 490);
    assert.equal(ops[0]!.backfill?.waiting, 'waiting for deliveries to acme/mail');
    assert.ok(!JSON.stringify(ops).includes('internal-run-id'));
    assert.deepEqual(ops[0]!.reconcile, { everyMs: 600_000, last: { at: 5, read: 40, found: 2, totalFound: 3 } });
    assert.deepEqual(ops[1], { account: 'beta', backfill: null, reconcile: { everyMs: 0, last: null } });
    assert.deepEqual(ops[2]!.reconcile, { everyMs: null, last: null });
  });

  it('a failed backfill makes its account warn, with the error and what to do', async () => {
    const store = await openStore('sqlite::memory:');
    try {
      const destinations = [{ key: 'acme/kommo', account: 'acme', name: 'kommo', type: 'kommo', title: 'Kommo', inbound: true }];
      const live = { paused: [], breakers: [], kommo: [] };
      const backfill = { filter: 'all leads', status: 'failed' as const, leads: 250, total: 1_000, synced: 250, skipped: 0, jobs: 250, waiting: null, error: 'Kommo answered 500', startedAt: 1, updatedAt: 2, finishedAt: null };
      const read = (status: 'failed' | 'done') => ({ read: async () => ({ backfill: { acme: { ...backfill, status } }, reconcile: {} }), reconcileEveryMs: { acme: 0 } });
      const failed = await overview(store, new SeriesCache(), destinations, live, Date.now(), read('failed'));
      assert.equal(failed.accounts[0]!.status, 'warn');
      assert.match(failed.problems.join('\n'), /acme: backfill failed: Kommo answered 500 \(run `kommo-sync backfill` again to resume\)/);
      assert.equal(failed.status, 'warn');
      const done = await overview(store, new SeriesCache(), destinations, live, Date.now(), read('done'));
      assert.equal(done.accounts[0]!.status, 'ok');
      assert.deepEqual(done.problems, []);
    } finally {
      await store.close();
    }
  });

  it('scrubs secret values from any text, longest first', () => {
    const scrub = scrubber(['abcdefgh', 'abcdefghij', 'ab']);
    assert.equal(scrub('x abcdefghij y abcdefgh z ab'), 'x ******** y ******** z ab');
  });
});

describe('dashboard sessions', () => {
  it('a session expires, a tampered one is refused, a login code works once', () => {
    let now = 1_000_000;
    const auth = new AdminAuth('the-token', { now: () => now });
    const s = auth.newSession();
    const req = (cookie: string) => ({ headers: { cookie } }) as unknown as Parameters<AdminAuth['identify']>[0];
    assert.equal(auth.identify(req(`ks_session=${s.value}`))?.via, 'cookie');
    assert.equal(auth.identify(req(`ks_session=${s.value.slice(0, -2)}xx`)), null);
    assert.equal(new AdminAuth('another-token', { now: () => now }).identify(req(`ks_session=${s.value}`)), null, 'a new token logs everyone out');
    now = s.expiresAt + 1;
    assert.equal(auth.identify(req(`ks_session=${s.value}`)), null);
    const code = auth.issueCode();
    assert.equal(auth.redeemCode(code), true);
    assert.equal(auth.redeemCode(code), false);
    const old = auth.issueCode();
    now += 11 * 60_000;
    assert.equal(auth.redeemCode(old), false, 'codes expire after 10 minutes');
  });

  it('brakes repeated failed logins from one address', () => {
    const auth = new AdminAuth('t');
    for (let i = 0; i < 10; i++) auth.recordFailure('1.2.3.4');
    assert.equal(auth.throttled('1.2.3.4'), true);
    assert.equal(auth.throttled('5.6.7.8'), false);
  });
});
