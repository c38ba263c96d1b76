/**
 * Keeps the documentation honest: the example config must load, every link and repository path
 * the docs name must exist, and every mapping example in docs/mapping.md must compile and run.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { isScalar, parse, parseDocument, visit } from 'yaml';
import { ConfigError, parseConfigText } from '../src/config/load.js';
import { crmNotesSchema, destinationCommon } from '../src/config/schema.js';
import type { EnrichedLead } from '../src/model/index.js';
import { compileEngagementRules, ENGAGEMENT_ROOTS } from '../src/sync/inbound.js';
import { compileExpression, compileTemplate } from '../src/sync/mapping.js';
import { compileCrmNotes, compileDestinationMapping } from '../src/sync/outbound.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const read = (rel: string): string => readFileSync(join(ROOT, rel), 'utf8');
const DOCS = readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`);
/** The per-destination guides and each connector's README. */
const DESTINATION_DOCS = [
  ...readdirSync(join(ROOT, 'docs/destinations')).filter((f) => f.endsWith('.md')).map((f) => `docs/destinations/${f}`),
  ...readdirSync(join(ROOT, 'src/destinations'), { withFileTypes: true }).filter((d) => d.isDirectory() && existsSync(join(ROOT, 'src/destinations', d.name, 'README.md'))).map((d) => `src/destinations/${d.name}/README.md`),
];
const MARKDOWN = ['README.md', ...DOCS, ...DESTINATION_DOCS];

// ---------------------------------------------------------------------------------------------
// kommo-sync.example.yaml

const EXAMPLE = 'kommo-sync.example.yaml';
/** Keys whose values are credentials: the example must take each from the environment. */
const SECRET_KEYS = new Set(['accessToken', 'clientSecret', 'refreshToken', 'webhookSecret', 'siteId', 'apiKey', 'webhookSigningKey', 'adminToken', 'metricsToken', 'writeKey']);

/** A value for every `${VAR}` without a default; `${VAR:-default}` keeps its default. */
function fakeEnv(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const m of text.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}/g)) {
    if (m[2] === undefined) env[m[1]!] = `test-${m[1]!.toLowerCase()}-0123456789abcdef`;
  }
  return env;
}

describe(EXAMPLE, () => {
  const text = read(EXAMPLE);

  it('is a valid configuration with a fake environment', () => {
    const env = fakeEnv(text);
    assert.ok(Object.keys(env).length >= 5, `found the variables ${Object.keys(env).join(', ')}`);
    const loaded = parseConfigText(text, EXAMPLE, env);
    const accounts = Object.keys(loaded.config.accounts);
    assert.ok(accounts.length > 0);
    for (const name of accounts) {
      const account = loaded.config.accounts[name]!;
      const destinations = loaded.destinations[name] ?? [];
      assert.ok(destinations.length > 0, `account ${name} has a destination`);
      // Mappings and templates compile as the service compiles them at start.
      for (const d of destinations) {
        compileDestinationMapping(d.common, (sub) => loaded.where(['accounts', name, 'destinations', d.name, ...sub.split('.')]));
      }
      if (account.crmNotes) compileCrmNotes(account.crmNotes, (sub) => loaded.where(['accounts', name, 'crmNotes', ...sub.split('.')]));
      compileEngagementRules(account.engagement, {
        contactField: () => ({ fieldId: 1 }),
        stage: () => ({ pipelineId: 1, statusId: 2 }),
      }, (sub) => loaded.where(['accounts', name, 'engagement', ...sub.split('.')]));
    }
  });

  it('takes every secret from the environment, without a default', () => {
    const doc = parseDocument(text);
    const found: string[] = [];
    visit(doc, {
      Pair(_key, pair) {
        if (!isScalar(pair.key) || !SECRET_KEYS.has(String(pair.key.value))) return;
        const value = isScalar(pair.value) ? String(pair.value.value) : '';
        found.push(String(pair.key.value));
        assert.match(value, /^\$\{[A-Z_][A-Z0-9_]*\}$/, `${String(pair.key.value)} must be \${VAR}, got "${value}"`);
      },
    });
    assert.ok(found.length >= 4, `secrets checked: ${found.join(', ')}`);
  });

  it('fails to load, naming the variable, when the environment lacks it', () => {
    assert.throws(() => parseConfigText(text, EXAMPLE, {}), (err: unknown) =>
      err instanceof ConfigError && err.issues.some((i) => /environment variable KOMMO_TOKEN is not set/.test(i)));
  });
});

// ---------------------------------------------------------------------------------------------
// Links and paths

/** GitHub's heading anchors: lower-case, punctuation dropped, spaces to dashes, repeats numbered. */
function anchors(markdown: string): Set<string> {
  const out = new Set<string>();
  const seen = new Map<string, number>();
  for (const line of withoutFences(markdown).split('\n')) {
    const m = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!m) continue;
    const base = m[1]!.toLowerCase().replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '').replace(/ /g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

function withoutFences(markdown: string): string {
  return markdown.replace(/^```[\s\S]*?^```/gm, '');
}

/** Relative link targets `[text](target)` outside code blocks and inline code. */
function links(markdown: string): string[] {
  const text = withoutFences(markdown).replace(/`[^`\n]*`/g, '');
  return [...text.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]!).filter((t) => !/^[a-z][a-z0-9+.-]*:/i.test(t));
}

/** Paths into this repository named anywhere (code included): `src/...`, `test/...`, ... */
function repoPaths(markdown: string): string[] {
  const out = new Set<string>();
  for (const m of markdown.matchAll(/(?<![\w./-])((?:src|test|docs|bench|bin|\.ci)\/[\w./-]*)/g)) {
    const path = m[1]!.replace(/[.,:;]+$/, '');
    if (path.includes('<')) continue; // a placeholder like src/destinations/<type>/
    out.add(path);
  }
  for (const m of markdown.matchAll(/`((?:README\.md|package\.json|kommo-sync\.example\.yaml|tsconfig\.json))`/g)) out.add(m[1]!);
  return [...out];
}

describe('documentation links and paths', () => {
  for (const file of MARKDOWN) {
    it(`${file}: relative links point at existing files and headings`, () => {
      const text = read(file);
      const targets = links(text);
      for (const target of targets) {
        const [path, anchor] = target.split('#') as [string, string | undefined];
        const abs = path ? resolve(ROOT, dirname(file), decodeURIComponent(path)) : join(ROOT, file);
        assert.ok(existsSync(abs), `${file} links to ${target}, but ${relative(ROOT, abs)} does not exist`);
        if (anchor && abs.endsWith('.md')) {
          const known = anchors(readFileSync(abs, 'utf8'));
          assert.ok(known.has(anchor), `${file} links to ${target}, but ${relative(ROOT, abs)} has no heading #${anchor}`);
        }
      }
    });

    it(`${file}: every repository path it names exists`, () => {
      for (const path of repoPaths(read(file))) {
        assert.ok(existsSync(join(ROOT, path)), `${file} names ${path}, which does not exist`);
      }
    });
  }

  it('the README links every page in docs/', () => {
    const readme = read('README.md');
    for (const doc of DOCS) assert.ok(readme.includes(`](${doc})`), `README.md does not link ${doc}`);
  });
});

// ---------------------------------------------------------------------------------------------
// docs/mapping.md examples

const MAPPING_DOC = 'docs/mapping.md';

const proposal = { id: 102, name: 'Proposal sent', key: 'proposal_sent', pipelineId: 7, pipeline: 'Sales', type: 'open' as const };
const demo = { id: 101, name: 'Demo scheduled', key: 'demo_scheduled', pipelineId: 7, pipeline: 'Sales', type: 'open' as const };
/** The sample lead docs/mapping.md describes. */
const SAMPLE: EnrichedLead = {
  account: { name: 'acme', subdomain: 'acme', currency: 'USD' },
  event: { kind: 'lead.stage_changed', at: Date.UTC(2026, 2, 14, 9, 30) },
  lead: {
    id: 20000042, name: 'Ann Lee — annual plan', price: 12000, pipelineId: 7, statusId: 102, responsibleUserId: 9,
    createdAt: Date.UTC(2026, 2, 1, 8, 0), updatedAt: Date.UTC(2026, 2, 14, 9, 30), closedAt: null, wonAt: null, lostAt: null, lossReason: null, tags: ['vip', 'webinar'], deleted: false,
    fields: { Industry: 'SaaS', Source: 'Webinar', Topics: ['Billing', 'API'], 'Contract end': 1798675200 },
  },
  contact: { id: 77, name: 'Ann Lee', firstName: 'Ann', lastName: 'Lee', email: 'ann@example.com', phone: '+1 555 0100', tags: [], fields: { Position: 'CTO' } },
  company: { id: 5, name: 'Acme Inc', fields: {} },
  pipeline: { id: 7, name: 'Sales' },
  stage: proposal,
  previousStage: demo,
  responsible: { id: 9, name: 'Bob Sales', email: 'bob@acme.example' },
};

function yamlBlocks(markdown: string): Array<{ line: number; text: string }> {
  const out: Array<{ line: number; text: string }> = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```ya?ml\s*$/.exec(lines[i]!);
    if (!open) continue;
    const indent = open[1]!.length;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length && !/^\s*```\s*$/.test(lines[j]!); j++) body.push(lines[j]!.slice(indent));
    out.push({ line: i + 1, text: body.join('\n') });
    i = j;
  }
  return out;
}

/** Every `key: value` pair at any depth of a parsed YAML value. */
function* pairs(value: unknown): Generator<[string, unknown]> {
  if (Array.isArray(value)) for (const v of value) yield* pairs(v);
  else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      yield [k, v];
      yield* pairs(v);
    }
  }
}

describe(`${MAPPING_DOC} examples`, () => {
  const blocks = yamlBlocks(read(MAPPING_DOC));

  it('has yaml blocks, each valid YAML', () => {
    assert.ok(blocks.length >= 5);
    for (const b of blocks) assert.doesNotThrow(() => parse(b.text), `${MAPPING_DOC}:${b.line}`);
  });

  it('every expression under `attributes:` compiles and runs on the sample lead', async () => {
    let compiled = 0;
    for (const b of blocks) {
      for (const [key, value] of pairs(parse(b.text))) {
        if (key !== 'attributes') continue;
        assert.ok(value && typeof value === 'object' && !Array.isArray(value), `${MAPPING_DOC}:${b.line} attributes is a map`);
        for (const [name, source] of Object.entries(value)) {
          const where = `${MAPPING_DOC}:${b.line} attributes.${name}`;
          assert.equal(typeof source, 'string', `${where}: an expression is a string in YAML (quote numbers and booleans)`);
          await compileExpression(source as string, where).evaluate(SAMPLE);
          compiled++;
        }
      }
    }
    assert.ok(compiled >= 15, `compiled ${compiled} expressions`);
  });

  it('every `events`, `on` and `lists` example is a valid destination setting', () => {
    for (const b of blocks) {
      for (const [key, value] of pairs(parse(b.text))) {
        if (!['events', 'on', 'lists'].includes(key) || !value || typeof value !== 'object' || Array.isArray(value)) continue;
        const r = destinationCommon.safeParse({ [key]: value });
        assert.ok(r.success, `${MAPPING_DOC}:${b.line} ${key}: ${r.success ? '' : r.error.message}`);
      }
    }
  });

  it('every template compiles with the names its context provides', async () => {
    let templates = 0;
    for (const b of blocks) {
      for (const [key, value] of pairs(parse(b.text))) {
        if (key === 'crmNotes') {
          const notes = compileCrmNotes(crmNotesSchema.parse(value), `${MAPPING_DOC}:${b.line} crmNotes`);
          assert.ok((await notes.text.render({ ...SAMPLE, destinations: 'cio' })).length > 0);
          templates++;
        }
        if (key === 'task' && value && typeof value === 'object' && 'text' in value) {
          compileTemplate(String(value.text), `${MAPPING_DOC}:${b.line} task.text`, { roots: ENGAGEMENT_ROOTS });
          templates++;
        }
      }
    }
    assert.ok(templates >= 2, `compiled ${templates} templates`);
  });
});

// ---------------------------------------------------------------------------------------------
// Destination guides: every config example loads

describe('destination guides', () => {
  for (const file of DESTINATION_DOCS) {
    it(`${file}: every yaml block is valid YAML, and each \`destinations:\` example loads as a config`, () => {
      for (const block of yamlBlocks(read(file))) {
        let value: unknown;
        assert.doesNotThrow(() => (value = parse(block.text)), `${file}:${block.line} is not valid YAML`);
        if (!value || typeof value !== 'object' || !('destinations' in value)) continue;
        // The example is an account's keys (destinations, maybe engagement, ...): give it a Kommo.
        const config = {
          store: 'sqlite::memory:',
          accounts: { acme: { kommo: { subdomain: 'acme', accessToken: 'test-token-0123456789abcdef', webhookSecret: 'test-webhook-secret-0123456789' }, ...value } },
        };
        const text = JSON.stringify(config);
        try {
          parseConfigText(text, `${file}:${block.line}`, fakeEnv(block.text));
        } catch (err) {
          assert.fail(`${file}:${block.line} does not load: ${err instanceof ConfigError ? err.issues.join('; ') : String(err)}`);
        }
      }
    });
  }
});
