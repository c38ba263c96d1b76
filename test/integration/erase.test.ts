/**
 * `kommo-sync erase EMAIL` as a user runs it: the real CLI in its own process, next to a running
 * service, against the Kommo and Customer.io simulators over real HTTP.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import pino from 'pino';
import { parse, stringify } from 'yaml';
import type { CustomerioSimulator } from '../../src/destinations/customerio/simulator.js';
import { getDestination } from '../../src/destinations/index.js';
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
  await waitFor(async () => (await service.store.listDeliveries({ subject: email })).length > 0, 'Ada\'s deliveries logged');
  await waitFor(async () => (await service.store.listInbox({ email })).length > 0, 'Ada\'s events routed');
  const charlesLines = (await service.store.listDeliveries({ subject: 'charles@example.com' })).length;
  assert.ok(charlesLines > 0);

  const erasedAt = Date.now();
  const { code, out } = await cli('erase', ' ADA.lovelace@example.com ');
  assert.equal(code, 0, out);
  assert.match(out, /1 Kommo contact and 2 leads with ada\.lovelace@example\.com/);
  assert.match(out, /erasure queued in: customerio/);
  // Our own history of her goes too: her stored events are emptied, her finished jobs and log lines deleted.
  const removed = /removed from kommo-sync's log: (\d+) stored events? emptied, (\d+) finished jobs? and (\d+) delivery lines? deleted/.exec(out);
  assert.ok(removed, out);
  assert.ok(Number(removed[1]) > 0 && Number(removed[2]) > 0 && Number(removed[3]) > 0, out);
  assert.deepEqual(await service.store.listInbox({ email }), [], 'no stored event is found by her address');
  // Only the erasure's own jobs (its erase and its notes, delivered from now on) may name her.
  assert.deepEqual((await service.store.listDeliveries({ subject: email })).filter((d) => d.at < erasedAt), [], 'no line from before the erasure names her');
  assert.equal((await service.store.listDeliveries({ subject: 'charles@example.com' })).length, charlesLines, 'nobody else\'s history');

  await waitFor(() => !cio.people.has(email), 'Ada deleted in Customer.io');
  assert.ok(cio.people.has('charles@example.com'), 'nobody else');
  const notes = (leadId: number) => [...k.notes.values()].filter((n) => n.entity_id === leadId).map((n) => String(n.params.text));
  await waitFor(() => [first.id, second.id].every((id) => notes(id).some((t) => t.includes('erased on request in customerio'))), 'a note on both leads');
  assert.deepEqual(await service.store.leadsByEmail(world.account, email), [], 'the email index forgot her');
});

it('rejects what is not an email address, and an unknown account, without touching anything (exit 2, as every usage error)', async () => {
  const bad = await cli('erase', 'not-an-email');
  assert.equal(bad.code, 2);
  assert.match(bad.out, /expected an email address, got "not-an-email"/);
  const account = await cli('erase', 'x@example.com', '--account', 'nope');
  assert.equal(account.code, 2);
  assert.match(account.out, /--account: no account "nope"/);
});

describe('with every registered destination', () => {
  let all: World;
  let allService: Service;
  let allDir: string;
  let allConfig: string;

  before(async () => {
    allDir = mkdtempSync(join(tmpdir(), 'kommo-sync-erase-all-'));
    const store = `sqlite:${join(allDir, 'ks.db')}`;
    all = await startWorld({ store, account: 'omni' });
    const cfg = parse(all.yaml) as Record<string, unknown>;
    allConfig = join(allDir, 'kommo-sync.yaml');
    writeFileSync(allConfig, stringify(cfg));
    allService = await startService({ loaded: all.loaded, log: pino({ level: 'silent' }), intake: true, work: true, port: 0, host: '127.0.0.1' });
    all.subscribe(allService.url!);
  });
  after(async () => {
    await allService?.close();
    await all?.close();
    rmSync(allDir, { recursive: true, force: true });
  });

  it('reaches every simulator that can erase, says plainly which cannot, notes it in Kommo and reports each outcome (--wait)', { timeout: 120_000 }, async () => {
    const k = all.kommo;
    const email = 'grace.hopper@example.com';
    const contact = k.createContact({ name: 'Grace Hopper', email });
    const lead = k.createLead({ name: 'Compiler', price: 500, contactIds: [contact.id] });
    // A stage with a list everywhere that has lists (Moosend keeps people only in lists).
    k.moveLead(lead.id, k.status('Demo scheduled').id);
    await k.flushWebhooks();
    const types = [...all.vendors.keys()];
    await waitFor(() => types.every((t) => all.vendors.get(t)!.sim.items.some((i) => i.person === email && i.ok)), `the person synced to ${types.join(', ')}`, 60_000);
    const drained = async () => {
      const s = await allService.store.stats(Date.now());
      return s.jobs.pending + s.jobs.leased === 0;
    };
    await waitFor(drained, 'the queue drained', 60_000);

    let out = '';
    let code = 0;
    try {
      out = (await promisify(execFile)(process.execPath, [BIN, 'erase', email, '--wait', '--json', '--config', allConfig], { timeout: 90_000 })).stdout;
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      code = e.code;
      out = e.stdout + e.stderr;
    }
    const report = JSON.parse(out) as { accounts: Array<{ erasedIn: string[]; skipped: Array<{ destination: string; reason: string }>; outcome: Record<string, { state: string }> }> };
    const [r] = report.accounts;
    const canErase = types.filter((t) => getDestination(t)!.supports.erasePerson);
    const cannot = types.filter((t) => !getDestination(t)!.supports.erasePerson);
    assert.deepEqual([...r!.erasedIn].sort(), [...canErase].sort());
    assert.deepEqual(r!.skipped.map((s) => s.destination).sort(), [...cannot].sort());
    for (const s of r!.skipped) assert.match(s.reason, /cannot delete/);
    assert.equal(code, cannot.length ? 1 : 0, 'not erased everywhere: a non-zero exit');
    for (const t of canErase) {
      assert.deepEqual(r!.outcome[t], { state: 'done' }, `${t}: the erasure was delivered`);
      assert.ok(all.vendors.get(t)!.sim.items.some((i) => i.kind === 'erasePerson' && i.person === email && i.ok), `${t}: the simulator erased the person`);
    }
    assert.deepEqual(r!.outcome.kommo, { state: 'done' }, 'the note in Kommo');
    for (const t of cannot) assert.equal(r!.outcome[t], undefined, `${t}: nothing sent`);
    const note = [...k.notes.values()].find((n) => n.entity_id === lead.id && String(n.params.text).includes('erased on request'));
    assert.ok(note, 'a note on the lead');
    assert.match(String(note.params.text), new RegExp(`not erased in ${cannot.join(', ')}`));
    assert.deepEqual(await allService.store.leadsByEmail(all.account, email), [], 'kommo-sync forgot the email');
  });
});
