/**
 * `kommo-sync doctor` against the simulators: credentials, names, and whether Kommo still sends
 * its webhooks to us (Kommo disables a webhook after many failed deliveries, silently).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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

async function doctor(file = config, ...flags: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout } = await promisify(execFile)(process.execPath, [BIN, 'doctor', '--config', file, ...flags]);
    return { code: 0, out: stdout };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, out: `${e.stdout}${e.stderr}` };
  }
}

before(async () => {
  world = await startWorld({ destinations: ['customerio', 'encharge'] });
  dir = mkdtempSync(join(tmpdir(), 'kommo-sync-doctor-'));
  const cfg = parse(world.yaml) as Record<string, unknown>;
  cfg.store = `sqlite:${join(dir, 'ks.db')}`;
  // Where Kommo is told to send webhooks: doctor compares the whole URL with it.
  cfg.server = { ...(cfg.server as Record<string, unknown>), publicUrl: 'http://127.0.0.1:9' };
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
  assert.match(r.out, /ok {4}stages, pipelines, fields and lists named in the config exist/);
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

it('a Kommo webhook with the wrong host, path or secret is not "registered": doctor says which part differs, never the secret', { timeout: 90_000 }, async () => {
  const right = world.kommoWebhookUrl('http://127.0.0.1:9');
  const secret = world.kommoWebhookSecret;
  const wrongSecret = `${secret.slice(0, -4)}zzzz`;
  const cases: Array<[string, string, RegExp]> = [
    ['another host', right.replace('127.0.0.1:9', 'old-sync.example.com'), /its scheme, host or port \(http:\/\/old-sync\.example\.com, expected http:\/\/127\.0\.0\.1:9\)/],
    ['another port', right.replace('127.0.0.1:9', '127.0.0.1:8080'), /its scheme, host or port \(http:\/\/127\.0\.0\.1:8080, expected http:\/\/127\.0\.0\.1:9\)/],
    ['https instead of http', right.replace('http://', 'https://'), /its scheme, host or port \(https:\/\/127\.0\.0\.1:9, expected http:\/\/127\.0\.0\.1:9\)/],
    ['another path', right.replace('/webhooks/', '/sync/webhooks/'), /its path \(\/sync\/webhooks\/acme\/kommo\/\*\*\*, expected \/webhooks\/acme\/kommo\/\*\*\*\)/],
    ['an old secret', right.replace(secret, wrongSecret), /its secret \(it is not the configured kommo\.webhookSecret\)/],
  ];
  for (const [name, registered, differs] of cases) {
    for (const h of [right, ...cases.map((c) => c[1])]) world.kommo.unsubscribe(h);
    world.kommo.subscribe(registered, ['add_lead', 'status_lead']);
    const r = await doctor();
    assert.equal(r.code, 1, `${name}: ${r.out}`);
    const fail = r.out.split('\n').find((l) => l.includes('FAIL') && l.includes('Kommo sends webhooks to'));
    assert.ok(fail, `${name}: ${r.out}`);
    assert.match(fail, differs, name);
    assert.ok(!fail.includes(secret) && !fail.includes(wrongSecret), `${name}: no secret in ${fail}`);
    assert.doesNotMatch(r.out, /ok {4}Kommo sends webhooks/);
  }
  for (const c of cases) world.kommo.unsubscribe(c[1]);
  world.kommo.subscribe(right, ['add_lead']);
  assert.equal((await doctor()).code, 0);
});

it('a misspelt path in a mapping is a config error, before "configuration is valid"', { timeout: 30_000 }, async () => {
  const cfg = parse(readFileSync(config, 'utf8')) as { accounts: { acme: { destinations: { customerio: { attributes: Record<string, string> } } } } };
  cfg.accounts.acme.destinations.customerio.attributes.industry = 'lead.feilds["Industry"]';
  const typo = join(dir, 'typo.yaml');
  writeFileSync(typo, stringify(cfg));
  const r = await doctor(typo);
  assert.equal(r.code, 2, r.out);
  assert.match(r.out, /attributes\.industry: unknown name `lead\.feilds` in `lead\.feilds\["Industry"\]` \(did you mean `lead\.fields`\?\)/);
  assert.doesNotMatch(r.out, /configuration is valid/);
});

/** The parts of the test config the variants change. */
interface TestConfig {
  server: { publicUrl?: string };
  accounts: { acme: { stages?: Record<string, string>; destinations: { customerio: { pipelines?: string[] } } } };
}

/** The test config with `edit` applied, as a new file. */
function variant(name: string, edit: (cfg: TestConfig) => void): string {
  const cfg = parse(readFileSync(config, 'utf8')) as TestConfig;
  edit(cfg);
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, stringify(cfg));
  return file;
}

it('a misspelt stage or pipeline name fails with the nearest existing name, exit status 1', { timeout: 60_000 }, async () => {
  const file = variant('misspelt', (cfg) => {
    const acme = cfg.accounts.acme;
    acme.stages = { 'Proposal snet': 'proposal_sent' };
    acme.destinations.customerio.pipelines = ['Sails'];
  });
  const r = await doctor(file);
  assert.equal(r.code, 1, r.out);
  assert.match(r.out, /configuration is valid/);
  assert.match(r.out, /FAIL {2}\S+misspelt\.yaml:\d+ accounts\.acme\.stages: stages: stage "Proposal snet" not found in Kommo; did you mean "Proposal sent"\?/);
  assert.match(r.out, /FAIL {2}\S+misspelt\.yaml:\d+ accounts\.acme\.destinations\.customerio\.pipelines\[0\]: pipeline "Sails" not found in Kommo; did you mean "Sales"\?/);
  assert.match(r.out, /ok {4}Kommo credentials accepted/);
});

it('--fix registers the Kommo webhook (and Encharge\'s event subscriptions) at server.publicUrl; without publicUrl it says it cannot', { timeout: 90_000 }, async () => {
  for (const h of world.kommo.webhooks) world.kommo.unsubscribe(h.destination);
  const enc = world.vendors.get('encharge')!.sim as unknown as { subscriptions: ReadonlyArray<{ eventType: string; url: string }> };
  const noPublic = variant('no-public-url', (cfg) => {
    delete cfg.server.publicUrl;
  });
  let r = await doctor(noPublic, '--fix');
  assert.equal(r.code, 1, r.out);
  assert.match(r.out, /WARN {2}--fix cannot register webhooks without server\.publicUrl/);
  assert.match(r.out, /FAIL {2}Kommo has no webhook pointing at kommo-sync yet; --fix cannot register it without server\.publicUrl/);
  assert.equal(world.kommo.webhooks.length, 0);

  r = await doctor(config);
  assert.equal(r.code, 1, r.out);
  assert.match(r.out, /FAIL {2}Kommo has no webhook pointing at kommo-sync yet: add the URL below in Settings > Integrations > Web hooks, or run doctor --fix/);
  assert.match(r.out, /WARN {2}encharge \(encharge\): Encharge's API cannot list event subscriptions/);

  r = await doctor(config, '--fix');
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /FIXED registered the Kommo webhook: http:\/\/127\.0\.0\.1:9\/webhooks\/acme\/kommo\/\*\*\* \(add_lead, update_lead, status_lead, responsible_lead, delete_lead, restore_lead, update_contact\)/);
  assert.match(r.out, /FIXED encharge \(encharge\): registered its webhook http:\/\/127\.0\.0\.1:9\/webhooks\/acme\/encharge\/\*\*\*/);
  assert.match(r.out, /All checks passed\. 2 fixed\./);
  const hook = world.kommo.webhooks.find((h) => h.destination === world.kommoWebhookUrl('http://127.0.0.1:9'));
  assert.ok(hook && !hook.disabled, 'the simulator has the webhook');
  assert.ok(['add_lead', 'status_lead', 'update_contact'].every((e) => hook.settings.includes(e)));
  const encharge = world.vendors.get('encharge')!;
  assert.ok(enc.subscriptions.some((sub) => sub.url.startsWith(`http://127.0.0.1:9/webhooks/acme/encharge/${encharge.webhookSecret}?event=`)), 'Encharge has the subscription');
  // No secret in the checks' lines (only in the URLs to paste, on purpose).
  const checks = r.out.split('webhook URLs to paste')[0]!;
  assert.ok(!checks.includes(world.kommoWebhookSecret) && !checks.includes(encharge.webhookSecret));

  r = await doctor(config);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /ok {4}Kommo sends webhooks to kommo-sync \(add_lead, update_lead, status_lead/);

  // A disabled webhook is re-enabled by --fix.
  world.kommo.setWebhookDisabled(hook.destination, true);
  r = await doctor(config, '--fix');
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /WARN {2}Kommo has DISABLED the webhook/);
  assert.match(r.out, /FIXED re-enabled the Kommo webhook/);
  assert.equal(world.kommo.webhooks.find((h) => h.destination === hook.destination)?.disabled, false);
});
