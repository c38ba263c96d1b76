import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fake } from '../../test/kit/fake-destination/index.js';
import { registerDestination } from '../destinations/index.js';
import { ConfigError, parseConfigText, parseStoreConfigText } from './load.js';

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
    assert.match(errorsOf(withDest('      mine:\n        type: fake\n        baseUrl: https://x.test\n'))[0]!, /:9 accounts\.acme\.destinations\.mine\.passphrase: required: /);
    assert.match(errorsOf(withDest('      mine:\n        type: fake\n        passphrase: p\n        baseUrl: ftp://x\n'))[0]!, /:\d+ accounts\.acme\.destinations\.mine\.baseUrl: /);
    const ok = parseConfigText(withDest('      mine:\n        type: fake\n        passphrase: p\n        baseUrl: https://x.test\n        attributes:\n          industry: lead.fields["Industry"]\n'), 'f.yaml', { KOMMO_TOKEN: 'x' });
    assert.equal(ok.destinations.acme![0]!.type, 'fake');
    assert.equal(ok.destinations.acme![0]!.common.attributes!.industry, 'lead.fields["Industry"]');
  });

  it('reports YAML syntax errors with their line', () => {
    const [issue] = errorsOf('accounts:\n  acme: [unclosed\n');
    assert.match(issue!, /^kommo-sync\.yaml:\d+ YAML syntax: /);
  });

  it('names the deeper line when a key is indented one space too far (not the line above it)', () => {
    const text = base(`    destinations:
      mine:
        type: fake
         passphrase: my-passphrase
        baseUrl: https://x.test
`);
    const issues = errorsOf(text);
    assert.equal(issues.length, 1, issues.join('\n'));
    assert.equal(issues[0], 'kommo-sync.yaml:11 YAML syntax: `passphrase` is indented 9 spaces, deeper than `type` on line 10 (8); keys of one map must start in the same column');
    assert.ok(!issues[0]!.includes('my-passphrase'), 'the value (maybe a secret) is not shown');
  });

  it('says what a missing or empty required key expects, not just "got nothing"', () => {
    const kommoWithout = (line: RegExp) => base().split('\n').filter((l) => !line.test(l)).join('\n');
    assert.deepEqual(errorsOf(kommoWithout(/subdomain/)), ['kommo-sync.yaml:4 accounts.acme.kommo.subdomain: required: the account subdomain, e.g. "acme" for acme.kommo.com']);
    assert.match(errorsOf(kommoWithout(/webhookSecret/))[0]!, /kommo\.webhookSecret: required: a long random string for the Kommo webhook URL/);
    assert.match(errorsOf(`store: 'sqlite::memory:'\naccounts: {}\n`)[0]!, /^kommo-sync\.yaml:2 accounts: at least one account is required: a map of your name for each Kommo account to its settings, e\.g\. .*; got an empty map$/);
    assert.match(errorsOf(`store: 'sqlite::memory:'\naccounts:\n`)[0]!, /^kommo-sync\.yaml:2 accounts: required: a map of your name for each Kommo account .*\(the key is there, but empty\)$/);
    assert.match(errorsOf(`store: 'sqlite::memory:'\n`)[0]!, /^kommo-sync\.yaml:1 accounts: required: a map of your name for each Kommo account/);
    assert.match(errorsOf(`accounts:\n  acme:\n    stages: {}\n`)[0]!, /accounts\.acme\.kommo: required: the Kommo connection: subdomain, accessToken \(or oauth\) and webhookSecret/);
    assert.match(errorsOf(base('    crmNotes: { text: hi }\n'))[0]!, /crmNotes\.on: required: a list of CRM event kinds/);
    // A destination's own key without a hint: its type, and for a secret where it belongs.
    assert.match(errorsOf(base('    destinations:\n      mine:\n        type: fake\n        baseUrl: https://x.test\n'))[0]!, /destinations\.mine\.passphrase: required: a secret \(put it in the environment and write \$\{VAR\} here\)$/);
    for (const text of [kommoWithout(/subdomain/), `accounts: {}\n`, `accounts:\n`, base('    crmNotes: { text: hi }\n')]) {
      assert.ok(!errorsOf(text).join('\n').includes('got nothing'), text);
    }
  });

  it('requires exactly one of accessToken and oauth', () => {
    const text = base('', '      oauth:\n        clientId: id\n        clientSecret: s\n        refreshToken: r\n        redirectUri: https://example.com/cb\n');
    assert.match(errorsOf(text).join('\n'), /set exactly one of accessToken .* or oauth/);
  });
});

describe('the store-only load (status, replay)', () => {
  it('needs neither the secrets nor a valid rest of the file', () => {
    const text = `store: \${STORE:-sqlite:./x.db}
accounts:
  acme:
    kommo:
      subdomain: acme
      accessToken: \${KOMMO_TOKEN}
      rateLimit: not-a-number
    destinations:
      mail:
        type: iterable
        apiKey: \${ITERABLE_KEY}
      mine:
        type: fake
  other: {}
`;
    assert.throws(() => parseConfigText(text, 'kommo-sync.yaml', {}), ConfigError);
    assert.deepEqual(parseStoreConfigText(text, 'kommo-sync.yaml', {}), { file: 'kommo-sync.yaml', store: 'sqlite:./x.db', accounts: { acme: ['mail', 'mine'], other: [] } });
    assert.equal(parseStoreConfigText('accounts: {}\n', 'k.yaml', {}).store, 'sqlite:./data/kommo-sync.db', 'the schema default');
  });

  it('still needs the store itself', () => {
    assert.throws(() => parseStoreConfigText('store: ${DATABASE_URL}\n', 'k.yaml', {}), (err: unknown) =>
      err instanceof ConfigError && err.issues[0] === 'k.yaml:1 store: environment variable DATABASE_URL is not set (use ${DATABASE_URL:-default} for a default)');
    assert.throws(() => parseStoreConfigText('store: 42\n', 'k.yaml', {}), (err: unknown) => err instanceof ConfigError && /k\.yaml:1 store: expected a store URL/.test(err.issues[0]!));
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

  it('names the first ten literal secrets and counts the rest in one line (a generated agency config)', () => {
    const blocks = Array.from({ length: 15 }, (_, i) => `      mine${i}:\n        type: fake\n        passphrase: literal-passphrase-${i}\n        baseUrl: https://x.test\n`).join('');
    const { warnings } = parseConfigText(base(`    destinations:\n${blocks}`), 'kommo-sync.yaml', { KOMMO_TOKEN: 't' });
    assert.equal(warnings.length, 11, warnings.join('\n'));
    assert.match(warnings[9]!, /destinations\.mine9\.passphrase: a secret is written/);
    assert.equal(warnings[10], 'kommo-sync.yaml: 5 more secrets are written in the file (15 in all); put them in the environment too');
  });
});
