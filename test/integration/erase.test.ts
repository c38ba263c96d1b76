/**
 * `kommo-sync erase EMAIL` as a user runs it: the real CLI in its own process, next to a running
 * service, against the Kommo and Customer.io simulators over real HTTP.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { promisify } from 'node:util';
import pino from 'pino';
import { parse, stringify } from 'yaml';
import type { CustomerioSimulator } from '../../src/destinations/customerio/simulator.js';
import { startWorld, type World } from '../../src/demo/world.js';
import { startService, type Service } from '../../src/runtime/service.js';
import { BIN } from './cli.js';
import { waitFor } from './wait.js';

let world: World;
let service: Service;
let dir: string;
let cio: CustomerioSimulator;
let config: string;

async function cli(...args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout } = await promisify(execFile)(process.execPath, [BIN, ...args, '--config', config]);
    return { code: 0, out: stdout };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, out: `${e.stdout}${e.stderr}` };
  }
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'kommo-sync-erase-'));
  const store = `sqlite:${join(dir, 'ks.db')}`;
  world = await startWorld({ destinations: ['customerio'], store });
  // The CLI reads the same config and the same SQLite file as the running service.
  const cfg = parse(world.yaml) as Record<string, unknown>;
  cfg.store = store;
  config = join(dir, 'kommo-sync.yaml');
  writeFileSync(config, stringify(cfg));
  service = await startService({ loaded: world.loaded, log: pino({ level: 'silent' }), intake: true, work: true, port: 0, host: '127.0.0.1' });
  world.subscribe(service.url!);
  cio = world.vendors.get('customerio')!.sim as CustomerioSimulator;
});
after(async () => {
  await service?.close();
  await world?.close();
  rmSync(dir, { recursive: true, force: true });
});

it('deletes the person in Customer.io, notes it on every lead of theirs, and forgets the email', async () => {
  const k = world.kommo;
  const email = 'ada.lovelace@example.com';
  const contact = k.createContact({ name: 'Ada Lovelace', email: 'Ada.Lovelace@Example.com' });
  const first = k.createLead({ name: 'Engine', price: 100, contactIds: [contact.id] });
  const second = k.createLead({ name: 'Notes', price: 200, contactIds: [contact.id] });
  const bystander = k.createContact({ name: 'Charles Babbage', email: 'charles@example.com' });
  k.createLead({ name: 'Difference engine', contactIds: [bystander.id] });
  await k.flushWebhooks();
  await waitFor(() => cio.people.has(email) && cio.people.has('charles@example.com'), 'both people synced to Customer.io');
  await waitFor(async () => (await service.store.leadsByEmail(world.account, email)).length > 0, 'the email index knows Ada');

  const { code, out } = await cli('erase', ' ADA.lovelace@example.com ');
  assert.equal(code, 0, out);
  assert.match(out, /1 Kommo contact and 2 leads with ada\.lovelace@example\.com/);
  assert.match(out, /erasure queued in: customerio/);

  await waitFor(() => !cio.people.has(email), 'Ada deleted in Customer.io');
  assert.ok(cio.people.has('charles@example.com'), 'nobody else');
  const notes = (leadId: number) => [...k.notes.values()].filter((n) => n.entity_id === leadId).map((n) => String(n.params.text));
  await waitFor(() => [first.id, second.id].every((id) => notes(id).some((t) => t.includes('erased on request in customerio'))), 'a note on both leads');
  assert.deepEqual(await service.store.leadsByEmail(world.account, email), [], 'the email index forgot her');
});

it('rejects what is not an email address, and an unknown account, without touching anything', async () => {
  const bad = await cli('erase', 'not-an-email');
  assert.equal(bad.code, 1);
  assert.match(bad.out, /expected an email address, got "not-an-email"/);
  const account = await cli('erase', 'x@example.com', '--account', 'nope');
  assert.equal(account.code, 1);
  assert.match(account.out, /--account: no account "nope"/);
});
