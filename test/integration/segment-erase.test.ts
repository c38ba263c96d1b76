/**
 * `kommo-sync erase EMAIL` with Segment and RudderStack configured: their tracking APIs cannot
 * delete, so the report (and the note in Kommo) says so and where to do it, and nothing is claimed
 * or sent.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { promisify } from 'node:util';
import { parse, stringify } from 'yaml';
import { startWorld, type World } from '../../src/demo/world.js';
import type { SegmentSimulator } from '../../src/destinations/segment/simulator.js';
import { BIN } from './cli.js';

let world: World;
let dir: string;
let config: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'kommo-sync-segment-erase-'));
  const store = `sqlite:${join(dir, 'ks.db')}`;
  world = await startWorld({ destinations: ['segment', 'rudderstack'], store });
  const cfg = parse(world.yaml) as Record<string, unknown>;
  cfg.store = store;
  config = join(dir, 'kommo-sync.yaml');
  writeFileSync(config, stringify(cfg));
});
after(async () => {
  await world?.close();
  rmSync(dir, { recursive: true, force: true });
});

it('reports that Segment and RudderStack cannot erase, where to do it instead, and sends them nothing', async () => {
  const k = world.kommo;
  const contact = k.createContact({ name: 'Ada Lovelace', email: 'ada@example.com' });
  k.createLead({ name: 'Engine', contactIds: [contact.id] });
  let out = '';
  let code = 0;
  try {
    out = (await promisify(execFile)(process.execPath, [BIN, 'erase', 'ada@example.com', '--config', config, '--json'])).stdout;
  } catch (err) {
    const e = err as { code: number; stdout: string };
    code = e.code;
    out = e.stdout;
  }
  assert.equal(code, 1, 'a person left undeleted somewhere is a non-zero exit');
  const report = JSON.parse(out) as { accounts: Array<{ erasedIn: string[]; skipped: Array<{ destination: string; reason: string }>; jobs: number }> };
  const [account] = report.accounts;
  assert.deepEqual(account!.erasedIn, []);
  const reasons = Object.fromEntries(account!.skipped.map((s) => [s.destination, s.reason]));
  assert.match(reasons.segment!, /^Segment's tracking API cannot delete anyone, so nothing was deleted there: .*End User Privacy/);
  assert.match(reasons.rudderstack!, /^RudderStack's tracking API cannot delete anyone.*User Suppression API/);
  assert.equal(account!.jobs, 1, 'only the note on the lead');
  const seg = world.vendors.get('segment')!.sim as SegmentSimulator;
  assert.equal(seg.requests.length, 0);
});
