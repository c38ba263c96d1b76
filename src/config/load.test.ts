import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fake } from '../../test/kit/fake-destination/index.js';
import { registerDestination } from '../destinations/index.js';
import { ConfigError, parseConfigText } from './load.js';

// A destination the tests own (test/kit), so these tests name no real vendor.
registerDestination(fake);

const base = (extra = '', kommoExtra = '') => `store: 'sqlite::memory:'
accounts:
  acme:
    kommo:
      subdomain: acme
      accessToken: \${KOMMO_TOKEN}
      webhookSecret: \${HOOK:-0123456789abcdef0123}
${kommoExtra}${extra}`;

function errorsOf(text: string, env: Record<string, string> = { KOMMO_TOKEN: 't0ken-value' }): string[] {
  try {
    parseConfigText(text, 'kommo-sync.yaml', env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.issues;
  }
  assert.fail('expected a ConfigError');
}

describe('config loading', () => {
  it('interpolates ${VAR} and ${VAR:-default} and applies defaults', () => {
    const { config } = parseConfigText(base(), 'kommo-sync.yaml', { KOMMO_TOKEN: 'abc' });
    const acme = config.accounts.acme!;
    assert.equal(acme.kommo.accessToken, 'abc');
    assert.equal(acme.kommo.webhookSecret, '0123456789abcdef0123');
    assert.equal(acme.kommo.rateLimit, 7);
    assert.equal(config.worker.backoff.base, 1000);
    assert.equal(config.worker.maxAge, 72 * 3_600_000);
    assert.equal(config.server.bodyLimit, 5 * 1024 * 1024);
  });

  it('names the file, line and path of a missing environment variable', () => {
    const [issue] = errorsOf(base(), {});
    assert.equal(issue, 'kommo-sync.yaml:6 accounts.acme.kommo.accessToken: environment variable KOMMO_TOKEN is not set (use ${KOMMO_TOKEN:-default} for a default)');
  });

  it('says what was expected and what was found, with the line', () => {
    const issues = errorsOf(base('', '      rateLimit: fast\n'));
    assert.equal(issues.length, 1);
    assert.match(issues[0]!, /^kommo-sync\.yaml:8 accounts\.acme\.kommo\.rateLimit: .*expected number.*; got "fast"$/i);
  });

  it('never prints a secret value in an error', () => {
    const issues = errorsOf(base().replace('${HOOK:-0123456789abcdef0123}', 'short-secret'));
    assert.match(issues[0]!, /webhookSecret: must be at least 16 characters.*; got a value of 12 characters/);
    assert.ok(!issues.join('\n').includes('short-secret'));
  });

  it('rejects unknown keys by name', () => {
    const [issue] = errorsOf(base('', '      subdomian: typo\n'));
    assert.match(issue!, /^kommo-sync\.yaml:8 accounts\.acme\.kommo\.subdomian: unknown key "subdomian"/);
  });

  it('validates destination blocks with the registry: unknown type, vendor keys, common keys', () => {
    const withDest = (block: string) => base(`    destinations:\n${block}`);
    assert.match(errorsOf(withDest('      foo:\n        apiKey: x\n'))[0]!, /destinations\.foo: unknown destination type "foo"; expected one of .*fake/);
    assert.match(errorsOf(withDest('      mine:\n        type: fake\n        baseUrl: https://x.test\n'))[0]!, /destinations\.mine\.passphrase: .*got nothing/);
    assert.match(errorsOf(withDest('      mine:\n        type: fake\n        passphrase: p\n        baseUrl: ftp://x\n'))[0]!, /:\d+ accounts\.acme\.destinations\.mine\.baseUrl: /);
    const ok = parseConfigText(withDest('      mine:\n        type: fake\n        passphrase: p\n        baseUrl: https://x.test\n        attributes:\n          industry: lead.fields["Industry"]\n'), 'f.yaml', { KOMMO_TOKEN: 'x' });
    assert.equal(ok.destinations.acme![0]!.type, 'fake');
    assert.equal(ok.destinations.acme![0]!.common.attributes!.industry, 'lead.fields["Industry"]');
  });

  it('reports YAML syntax errors with their line', () => {
    const [issue] = errorsOf('accounts:\n  acme: [unclosed\n');
    assert.match(issue!, /^kommo-sync\.yaml:\d+ YAML syntax: /);
  });

  it('requires exactly one of accessToken and oauth', () => {
    const text = base('', '      oauth:\n        clientId: id\n        clientSecret: s\n        refreshToken: r\n        redirectUri: https://example.com/cb\n');
    assert.match(errorsOf(text).join('\n'), /set exactly one of accessToken .* or oauth/);
  });
});

describe('secret masking in config errors', () => {
  it('masks values of keys a destination declares secret, whatever their name', () => {
    const text = base(`    destinations:\n      mine:\n        type: fake\n        passphrase: 12345678\n        baseUrl: https://x.test\n`);
    const issues = errorsOf(text);
    const joined = issues.join('\n');
    assert.match(joined, /destinations\.mine\.passphrase: .*got a value of 8 characters/);
    assert.ok(!joined.includes('12345678'));
  });

  it('warns about a secret written in the file instead of ${VAR}, naming where', () => {
    const text = base(`    destinations:\n      mine:\n        type: fake\n        passphrase: literal-passphrase\n        baseUrl: https://x.test\n        webhookToken: \${HOOK_TOKEN}\n`);
    const { warnings } = parseConfigText(text, 'kommo-sync.yaml', { KOMMO_TOKEN: 't', HOOK_TOKEN: 'from-env' });
    assert.equal(warnings.length, 1, warnings.join('\n'));
    assert.match(warnings[0]!, /^kommo-sync\.yaml:\d+ accounts\.acme\.destinations\.mine\.passphrase: a secret is written in the file/);
    assert.ok(!warnings[0]!.includes('literal-passphrase'));
  });
});
