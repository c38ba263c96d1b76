/**
 * `kommo-sync replay` and `status` as operators run them (real CLI processes) on a store whose
 * contents the test sets up: dead letters of several leads and destinations, a paused account, a
 * backfill under way, the reconciliation's findings, recent deliveries.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { promisify } from 'node:util';
import { requestBackfill } from '../../src/runtime/backfill.js';
import { sweepStatsKey } from '../../src/runtime/sweeper.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';
import { BIN } from './cli.js';
import { waitFor } from './wait.js';

let dir: string;
let config: string;
let store: Store;
const dead: Record<string, number> = {};

async function cli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [BIN, ...args, '--config', config], { timeout: 30_000 });
    return { code: 0, out: stdout, err: stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, out: x.stdout, err: x.stderr };
  }
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'kommo-sync-replay-'));
  const db = join(dir, 'ks.db');
  // Only `store` and the names are read: the secrets may be unset.
  config = join(dir, 'kommo-sync.yaml');
  writeFileSync(config, `store: sqlite:${db}
accounts:
  acme:
    kommo: { subdomain: acme, accessToken: "\${UNSET_TOKEN}", webhookSecret: "\${UNSET_SECRET}" }
    destinations:
      cio: { type: customerio, siteId: "\${UNSET_SITE}", apiKey: "\${UNSET_KEY}" }
`);
  store = await openStore(`sqlite:${db}`);
  const job = (destination: string, lead: number, subject: string) => ({ account: 'acme', destination, type: 'sync.ops@1', orderingKey: `lead:${lead}`, payload: { subject, ops: [] } });
  const ids = await store.enqueueJobs([job('acme/cio', 42, 'ann@example.com'), job('acme/cio', 7, 'bob@example.com'), job('acme/kommo', 42, 'lead 42')]);
  const now = Date.now();
  for (const d of ['acme/cio', 'acme/kommo']) await store.claimJobs({ destination: d, limit: 10, leaseMs: 60_000, workerId: 'w', now });
  await store.completeJobs('w', [
    { id: ids[0]!, outcome: 'dead', error: 'invalid: HTTP 400: attribute too long' },
    { id: ids[1]!, outcome: 'dead', error: 'auth: HTTP 401: Unauthorized' },
    { id: ids[2]!, outcome: 'dead', error: 'auth: Kommo /api/v4/leads/notes: 401 unauthorized' },
  ]);
  Object.assign(dead, { ann: ids[0]!, bob: ids[1]!, note: ids[2]! });
  await store.kvSet('paused:acme', JSON.stringify({ account: 'acme', status: 401, reason: 'token expired', since: now - 60_000, credential: 'x', checkedAt: now }));
  await store.logDeliveries([
    { jobId: null, account: 'acme', destination: 'acme/cio', op: 'upsertPerson', subject: 'x@example.com', status: 'ok', httpStatus: 200, latencyMs: 5, error: null, at: now - 1_000 },
    { jobId: null, account: 'acme', destination: 'acme/cio', op: 'upsertPerson', subject: 'y@example.com', status: 'ok', httpStatus: 200, latencyMs: 5, error: null, at: now - 2_000 },
    { jobId: null, account: 'acme', destination: 'acme/cio', op: 'trackEvent', subject: 'y@example.com', status: 'retry', httpStatus: 503, latencyMs: 5, error: 'down', at: now - 3_000 },
  ]);
  await requestBackfill(store, 'acme', {});
  await store.kvSet(sweepStatsKey('acme', 'kommo'), JSON.stringify({ at: now - 30_000, read: 12, found: 1, totalFound: 3 }));
});
after(async () => {
  await store?.close();
  rmSync(dir, { recursive: true, force: true });
});

it('status shows depth, rates per minute, failures, the paused account, the backfill and missed webhooks found', { timeout: 30_000 }, async () => {
  const json = await cli('status', '--json');
  assert.equal(json.code, 0, json.err);
  const s = JSON.parse(json.out) as {
    deadByDestination: Record<string, number>;
    perMinute: Record<string, { ok: number; retry: number; failed: number }>;
    failuresLastHour: Record<string, number>;
    pausedAccounts: Array<{ account: string; status: number }>;
    backfill: Record<string, { status: string }>;
    reconcile: Record<string, { totalFound: number }>;
  };
  assert.deepEqual(s.deadByDestination, { 'acme/cio': 2, 'acme/kommo': 1 });
  assert.deepEqual(s.perMinute['acme/cio'], { ok: 2, retry: 1, failed: 0 });
  assert.equal(s.failuresLastHour['acme/cio'], 1);
  assert.deepEqual(s.pausedAccounts.map((p) => [p.account, p.status]), [['acme', 401]]);
  assert.equal(s.backfill.acme?.status, 'running');
  assert.equal(s.reconcile.acme?.totalFound, 3);

  const text = await cli('status');
  assert.equal(text.code, 0, text.err);
  assert.match(text.out, /PAUSED account acme since .*: Kommo refused its credentials \(401\): token expired/);
  assert.match(text.out, /acme\/cio +0 +2 +2 +1 +1\n/);
  assert.match(text.out, /backfill acme: all leads: running, 0 leads, 0 synced/);
  assert.match(text.out, /missed webhooks acme: checked \d+ s ago \(12 Kommo events read, 1 no webhook had brought\); 3 found in all/);
});

it('status --watch redraws until Ctrl-C, then exits 0', { timeout: 30_000 }, async () => {
  const child = spawn(process.execPath, [BIN, 'status', '--watch', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const exit = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  await waitFor(() => (out.match(/^jobs: /gm) ?? []).length >= 2, 'two frames', 20_000);
  child.kill('SIGINT');
  assert.equal(await exit, 0);
});

it('replay --dry-run lists the dead letters with their reasons and changes nothing', { timeout: 30_000 }, async () => {
  const r = await cli('replay', '--dry-run');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^3 dead-lettered jobs would be re-queued \(dry run: nothing changed\):/);
  assert.match(r.out, new RegExp(`#${dead.ann} acme/cio lead:42 ann@example\\.com: invalid: HTTP 400: attribute too long`));
  assert.match(r.out, new RegExp(`#${dead.bob} acme/cio lead:7 bob@example\\.com: auth: HTTP 401: Unauthorized`));
  assert.equal((await store.getJob(dead.ann!))?.state, 'dead');
  assert.notEqual(await store.kvGet('paused:acme'), null, 'a dry run resumes nothing');
});

it('replay --lead re-queues that lead\'s dead letters only, says which, and resumes the paused account', { timeout: 30_000 }, async () => {
  const bad = await cli('replay', '--lead', 'forty-two');
  assert.equal(bad.code, 2);
  assert.match(bad.err, /--lead: expected a Kommo lead id \(a number\), got "forty-two"/);

  const r = await cli('replay', '--lead', '42');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^2 dead-lettered jobs re-queued of lead 42\. A running serve or worker process delivers them now\./);
  assert.match(r.out, new RegExp(`#${dead.note} acme/kommo lead:42 lead 42: auth: Kommo`));
  assert.match(r.out, /Account acme was paused \(Kommo refused its credentials\): resumed/);
  assert.equal((await store.getJob(dead.ann!))?.state, 'pending');
  assert.equal((await store.getJob(dead.note!))?.state, 'pending');
  assert.equal((await store.getJob(dead.bob!))?.state, 'dead', 'another lead is left alone');
  assert.equal(await store.kvGet('paused:acme'), null);

  const cio = await cli('replay', '--destination', 'cio', '--lead', '42');
  assert.match(cio.out, /^0 dead-lettered jobs re-queued for acme\/cio of lead 42\./);
});
