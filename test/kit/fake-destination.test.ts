/**
 * The vendor test kit, proven with a fake vendor added exactly as a real one is: a folder
 * (test/kit/fake-destination/) and one registry line, no other file touched. The core then treats
 * it like any built-in destination: the conformance suite, the demo world in both directions,
 * unified opt-outs, `erase`, `bench/burst`, and no secret of it in logs, metrics or API answers.
 * (The scale-out test registers it too: test/integration/scale-out.test.ts.)
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { parse, stringify } from 'yaml';
import { ConfigError, parseConfigText } from '../../src/config/load.js';
import { Scenario } from '../../src/demo/scenario.js';
import { startWorld, type World } from '../../src/demo/world.js';
import type { CustomerioSimulator } from '../../src/destinations/customerio/simulator.js';
import { destinationTypes, registerDestination } from '../../src/destinations/index.js';
import { createLogger } from '../../src/observability/logger.js';
import { secretRedactPaths } from '../../src/runtime/secrets.js';
import { startService, type Service } from '../../src/runtime/service.js';
import { BIN } from '../integration/cli.js';
import { waitFor } from '../integration/wait.js';
import { fake } from './fake-destination/index.js';
import type { FakeSimulator } from './fake-destination/simulator.js';

// The one registry line.
registerDestination(fake);

// The conformance suite, for the fake alone (the suite's own run covers the built-in ones).
process.env.CONFORMANCE_TYPES = 'fake';
await import('../conformance/destinations.test.js');

const PLUGIN = new URL('./fake-destination/index.ts', import.meta.url).pathname;
/** A CLI child process loads the fake the way a user loads a plugin (TypeScript here, so through tsx). */
const pluginEnv = { ...process.env, KOMMO_SYNC_DESTINATIONS: PLUGIN, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import tsx`.trim() };
const ADMIN_TOKEN = 'kit-admin-token-0123456789abcdef';

describe('a destination added as one folder and one registry line', () => {
  let world: World;
  let service: Service;
  let sim: FakeSimulator;
  let cio: CustomerioSimulator;
  let dir: string;
  const logLines: string[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kommo-sync-kit-'));
    world = await startWorld({
      destinations: ['customerio', 'fake'],
      store: `sqlite:${join(dir, 'ks.db')}`,
      overrides: { server: { port: 0, host: '127.0.0.1', adminToken: ADMIN_TOKEN }, log: { level: 'debug' } },
    });
    // The service's own logger, redaction included, at debug: every vendor request is logged.
    const log = createLogger({ level: 'debug', redact: secretRedactPaths(), destination: new Writable({ write: (chunk: Buffer, _e, cb) => { logLines.push(chunk.toString()); cb(); } }) });
    service = await startService({ loaded: world.loaded, log, intake: true, work: true, port: 0, host: '127.0.0.1' });
    world.subscribe(service.url!);
    sim = world.vendors.get('fake')!.sim as FakeSimulator;
    cio = world.vendors.get('customerio')!.sim as CustomerioSimulator;
  });
  after(async () => {
    await service?.close();
    await world?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is registered, and the config loader validates its block without printing its secret', () => {
    assert.ok(destinationTypes().includes('fake'));
    const yaml = parse(world.yaml) as { accounts: { acme: { destinations: { fake: Record<string, unknown> } } } };
    yaml.accounts.acme.destinations.fake.passphrase = 12345678;
    yaml.accounts.acme.destinations.fake.unknownKey = 'x';
    try {
      parseConfigText(stringify(yaml), 'kit.yaml', {});
      assert.fail('expected a ConfigError');
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      const text = err.issues.join('\n');
      assert.match(text, /destinations\.fake\.passphrase: .*got a value of 8 characters/);
      assert.match(text, /destinations\.fake\.unknownKey: unknown key/);
      assert.ok(!text.includes('12345678'));
    }
  });

  it('the demo scenario delivers to it in both directions', async () => {
    const scenario = new Scenario(world, service.url!, () => {});
    for (let i = 0; i < 8; i++) {
      await scenario.step();
      await new Promise((r) => setTimeout(r, 150));
    }
    await waitFor(() => sim.items.some((i) => i.ok && i.kind === 'upsertPerson'), 'Kommo -> fake');
    await waitFor(async () => scenario.counts.engagement.opened + scenario.counts.engagement.clicked > 0, 'the tools answered');
    await waitFor(async () => (await service.store.listDeliveries({ destination: 'acme/fake', limit: 5 })).some((d) => d.status === 'ok'), 'deliveries logged');
    await waitFor(() => [...world.kommo.notes.values()].some((n) => String(n.params.text).includes('(via fake)')) || [...world.kommo.tasks.values()].length > 0, 'fake -> Kommo (a note or a hot-lead task)');
  });

  it('an opt-out in one tool suppresses the person in every other tool, both ways', async () => {
    const k = world.kommo;
    const ann = 'ann.kit@example.com';
    const bob = 'bob.kit@example.com';
    for (const [name, email] of [['Ann Kit', ann], ['Bob Kit', bob]] as const) {
      const c = k.createContact({ name, email, fields: { 'Email opt-in': true } });
      k.createLead({ name: `${name} deal`, contactIds: [c.id] });
    }
    await k.flushWebhooks();
    await waitFor(() => cio.people.has(ann) && sim.people.has(bob), 'both people synced to both tools');

    assert.equal(await cio.sendEngagement(world.vendorWebhookUrl(service.url!, 'customerio'), 'unsubscribed', ann), 200);
    await waitFor(() => sim.items.some((i) => i.kind === 'suppress' && i.person === ann && i.ok), 'Customer.io unsubscribe -> suppress in the fake');
    assert.ok(!sim.items.some((i) => i.kind === 'suppress' && i.person === bob));

    assert.equal(await sim.sendEngagement!(world.vendorWebhookUrl(service.url!, 'fake'), 'unsubscribed', bob), 200);
    await waitFor(() => cio.suppressed.has(bob), 'fake unsubscribe -> suppressed in Customer.io');
    assert.ok(!sim.items.some((i) => i.kind === 'suppress' && i.person === bob), 'not sent back to the tool that reported it');

    // The fake reports our suppress of Ann back as an opt-out of its own: an echo, not news.
    const notesOf = (email: string) => [...k.notes.values()].filter((n) => String(n.params.text).includes('Unsubscribed') && [...k.leads.values()].some((l) => l.id === n.entity_id && l.name.startsWith(email === ann ? 'Ann Kit' : 'Bob Kit'))).length;
    const annNotes = notesOf(ann);
    const cioRequests = cio.requests.length;
    assert.equal(await sim.sendEngagement!(world.vendorWebhookUrl(service.url!, 'fake'), 'unsubscribed', ann), 200);
    await waitFor(async () => {
      const s = await service.store.stats(Date.now());
      return s.inboxPending === 0 && s.jobs.pending === 0 && s.jobs.leased === 0;
    }, 'the echo routed');
    assert.equal(notesOf(ann), annNotes, 'no second opt-out note for the echo');
    assert.equal(cio.requests.length, cioRequests, 'nothing sent back to Customer.io');
  });

  it('erase reaches it (the CLI loads it as a plugin)', async () => {
    const k = world.kommo;
    const email = 'erase.kit@example.com';
    const c = k.createContact({ name: 'Erase Kit', email });
    k.createLead({ name: 'Erase deal', contactIds: [c.id] });
    await k.flushWebhooks();
    await waitFor(() => sim.people.has(email), 'synced to the fake');
    const config = join(dir, 'kommo-sync.yaml');
    const cfg = parse(world.yaml) as Record<string, unknown>;
    writeFileSync(config, stringify(cfg));
    const { stdout } = await promisify(execFile)(process.execPath, [BIN, 'erase', email, '--config', config], { env: pluginEnv });
    assert.match(stdout, /erasure queued in: .*fake/);
    await waitFor(() => sim.items.some((i) => i.kind === 'erasePerson' && i.person === email && i.ok), 'erased in the fake');
  });

  it('never shows its secrets in logs, metrics or API answers', async () => {
    const secrets = [sim.credentials.token, sim.credentials.webhookToken];
    const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
    const answers = await Promise.all(['/metrics', '/api/status', '/api/jobs?limit=500', '/api/deliveries?limit=500', '/api/jobs?state=done&limit=500'].map(async (path) => {
      const res = await fetch(`${service.url}${path}`, { headers: auth });
      assert.equal(res.status, 200, path);
      return res.text();
    }));
    const logs = logLines.join('');
    assert.match(logs, /vendor request/, 'the fake\'s requests were logged');
    for (const secret of secrets) {
      assert.ok(!logs.includes(secret), 'a fake secret in the logs');
      for (const a of answers) assert.ok(!a.includes(secret), 'a fake secret in an API answer');
    }
  });
});

it('bench/burst delivers to it, nothing lost', { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kommo-sync-kit-burst-'));
  try {
    const out = join(dir, 'burst.json');
    const bench = new URL('../../bench/burst.ts', import.meta.url).pathname;
    await promisify(execFile)(process.execPath, ['--import', 'tsx', bench, '--events', '60', '--destinations', 'fake', '--timeout', '60', '--json', out], { env: pluginEnv, timeout: 170_000 });
    const summary = JSON.parse(readFileSync(out, 'utf8')) as { checks: Record<string, boolean>; results: { destinations: Record<string, { missingPeople: number; items: number }> } };
    assert.ok(Object.values(summary.checks).every(Boolean), JSON.stringify(summary.checks));
    assert.equal(summary.results.destinations.fake?.missingPeople, 0);
    assert.ok((summary.results.destinations.fake?.items ?? 0) >= 60);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
