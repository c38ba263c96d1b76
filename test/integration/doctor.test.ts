/**
 * `kommo-sync doctor` against the simulators: credentials, names, and whether Kommo still sends
 * its webhooks to us (Kommo disables a webhook after many failed deliveries, silently).
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
import { BIN } from './cli.js';

let world: World;
let dir: string;
let config: string;

async function doctor(): Promise<{ code: number; out: string }> {
  try {
    const { stdout } = await promisify(execFile)(process.execPath, [BIN, 'doctor', '--config', config]);
    return { code: 0, out: stdout };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, out: `${e.stdout}${e.stderr}` };
  }
}

before(async () => {
  world = await startWorld({ destinations: ['customerio'] });
  dir = mkdtempSync(join(tmpdir(), 'kommo-sync-doctor-'));
  const cfg = parse(world.yaml) as Record<string, unknown>;
  cfg.store = `sqlite:${join(dir, 'ks.db')}`;
  config = join(dir, 'kommo-sync.yaml');
  writeFileSync(config, stringify(cfg));
});
after(async () => {
  await world.close();
  rmSync(dir, { recursive: true, force: true });
});

it('checks credentials and names, and reports a missing, then a disabled Kommo webhook', { timeout: 60_000 }, async () => {
  let r = await doctor();
  assert.match(r.out, /ok {4}Kommo credentials accepted/);
  assert.match(r.out, /ok {4}stages, fields and lists named in the config exist/);
  assert.match(r.out, /ok {4}customerio \(customerio\) credentials accepted/);
  assert.match(r.out, /FAIL {2}Kommo has no webhook pointing at kommo-sync yet/);
  assert.equal(r.code, 1);

  const url = world.kommoWebhookUrl('http://127.0.0.1:9');
  world.subscribe('http://127.0.0.1:9');
  r = await doctor();
  assert.match(r.out, /ok {4}Kommo sends webhooks to kommo-sync/);
  assert.match(r.out, /All checks passed/);
  assert.equal(r.code, 0);

  world.kommo.setWebhookDisabled(url, true);
  r = await doctor();
  assert.match(r.out, /FAIL {2}Kommo has DISABLED the webhook/);
  assert.equal(r.code, 1);
});
