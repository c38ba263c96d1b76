/**
 * Exactly once into Segment across a crash: the service (`kommo-sync serve`, a child process on a
 * SQLite file) sends a won deal, Segment applies it, and the process is killed (-9) before the
 * answer arrives. After the restart the job's lease expires and it is sent again: with the same
 * messageIds, so Segment drops the copies and the deal is counted once.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { parse, stringify } from 'yaml';
import { startWorld, type World } from '../../src/demo/world.js';
import type { SegmentSimulator } from '../../src/destinations/segment/simulator.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { BIN, freePort } from './cli.js';
import { waitFor } from './wait.js';

let world: World;
let dir: string;
let child: ChildProcess | null = null;

function serve(config: string, port: number): ChildProcess {
  const p = spawn(process.execPath, [BIN, 'serve', '--config', config, '--port', String(port)], { stdio: ['ignore', 'ignore', 'pipe'] });
  p.stderr?.on('data', (d: Buffer) => process.stderr.write(`[child] ${d}`));
  return p;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'kommo-sync-segment-crash-'));
  world = await startWorld({ destinations: ['segment'] });
});
after(async () => {
  child?.kill('SIGKILL');
  await world?.close();
  rmSync(dir, { recursive: true, force: true });
});

it('a won deal sent, applied, then a kill -9 before the answer: resent with the same messageIds, counted once', { timeout: 90_000 }, async () => {
  const seg = world.vendors.get('segment')!.sim as SegmentSimulator;
  const dbFile = join(dir, 'ks.db');
  const cfg = parse(world.yaml) as Record<string, unknown>;
  cfg.store = `sqlite:${dbFile}`;
  cfg.server = { port: 0, host: '127.0.0.1' };
  cfg.worker = { lease: '1s', poll: '50ms', backoff: { base: '100ms', factor: 2, max: '1s' } };
  const configFile = join(dir, 'kommo-sync.yaml');
  writeFileSync(configFile, stringify(cfg));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const store = await openSqliteStore(dbFile);
  const drained = async () => {
    const s = await store.stats(Date.now());
    return s.inboxPending === 0 && s.jobs.pending === 0 && s.jobs.leased === 0;
  };

  child = serve(configFile, port);
  await waitFor(async () => (await fetch(`${url}/readyz`).catch(() => null))?.status === 200, 'service ready', 20_000);
  world.subscribe(url);
  const k = world.kommo;
  const contact = k.createContact({ name: 'Crash Test', email: 'crash@example.com' });
  const lead = k.createLead({ name: 'Crash deal', price: 777, contactIds: [contact.id] });
  await k.flushWebhooks();
  await waitFor(() => seg.messages.some((m) => m.userId === 'crash@example.com'), 'the new lead reached Segment', 20_000);
  await waitFor(drained, 'queue drained before the crash', 20_000);

  // From now on Segment applies what it gets but the answers never come back.
  seg.holdAnswers(true);
  const itemsBefore = seg.items.length;
  k.moveLead(lead.id, 142);
  await k.flushWebhooks();
  await waitFor(() => seg.items.slice(itemsBefore).some((i) => i.kind === 'trackEvent' && i.target === 'deal_won' && i.ok), 'Segment applied deal_won', 20_000);
  const firstSend = seg.items.slice(itemsBefore).filter((i) => !i.duplicate);
  const dealId = seg.messages.find((m) => m.type === 'track' && m.event === 'deal_won')!.messageId;
  child.kill('SIGKILL');
  await new Promise((r) => child!.once('exit', r));
  seg.holdAnswers(false);
  const atKill = await store.stats(Date.now());
  assert.ok(atKill.jobs.leased > 0, 'the job was still leased: its completion was never recorded');

  child = serve(configFile, port);
  await waitFor(async () => seg.items.slice(itemsBefore).filter((i) => i.duplicate).length >= firstSend.length, 'the job was sent again after the restart', 30_000);
  await waitFor(drained, 'queue drained after the restart', 30_000);

  const deals = seg.messages.filter((m) => m.type === 'track' && m.event === 'deal_won' && m.userId === 'crash@example.com');
  assert.equal(deals.length, 1, 'the deal is counted once');
  const resent = seg.items.slice(itemsBefore).filter((i) => i.duplicate);
  assert.deepEqual(resent.map((i) => `${i.kind}:${i.target ?? ''}`).sort(), firstSend.map((i) => `${i.kind}:${i.target ?? ''}`).sort(), 'every message of the job came back as a duplicate');
  // Requests are recorded when answered, so the held first send is listed too.
  const dealSends = seg.requests
    .flatMap((r) => (r.body as { batch: Array<{ type: string; event?: string; messageId: string }> }).batch)
    .filter((m) => m.type === 'track' && m.event === 'deal_won');
  assert.deepEqual(dealSends.map((m) => m.messageId), [dealId, dealId], 'sent twice, both times with the same messageId');
  assert.equal((await store.stats(Date.now())).jobs.dead, 0);
  await store.close();
});
