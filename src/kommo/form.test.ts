import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { encodeBracketForm, FormParseError, listOf, parseBracketForm } from './form.js';

const fixture = (name: string): string => readFileSync(new URL(`../../test/fixtures/kommo/${name}`, import.meta.url), 'utf8');

/** Leaf strings in a parsed form, with their paths. */
function leaves(value: unknown, path = ''): Array<[string, string]> {
  if (typeof value === 'string') return [[path, value]];
  if (typeof value !== 'object' || value === null) return [];
  return Object.entries(value).flatMap(([k, v]) => leaves(v, path === '' ? k : `${path}[${k}]`));
}

describe('encodeBracketForm', () => {
  it('encodes like PHP http_build_query', () => {
    assert.equal(
      encodeBracketForm({ a: { b: [1, 'x y'], ok: true, no: false, skip: null, gone: undefined }, c: 'é&=+' }),
      'a%5Bb%5D%5B0%5D=1&a%5Bb%5D%5B1%5D=x+y&a%5Bok%5D=1&a%5Bno%5D=0&c=%C3%A9%26%3D%2B',
    );
    assert.equal(encodeBracketForm({ t: "it's (a)*!~" }), 't=it%27s+%28a%29%2A%21%7E');
  });

  it('can leave brackets literal', () => {
    assert.equal(encodeBracketForm({ leads: { status: [{ id: 7 }] } }, { rawBrackets: true }), 'leads[status][0][id]=7');
  });

  it('skips empty containers and rejects dates', () => {
    assert.equal(encodeBracketForm({ a: [], b: {}, c: 'x' }), 'c=x');
    assert.throws(() => encodeBracketForm({ at: new Date(0) }), TypeError);
  });
});

describe('parseBracketForm', () => {
  it('round-trips encode -> parse, with every value a string and indices as keys', () => {
    const value = {
      leads: { update: [{ id: 10, name: 'Ana & Bo', price: 1.5, tags: [{ id: 1, name: 'vip' }, { id: 2, name: 'a b' }] }] },
      account: { subdomain: 'acme', _links: { self: 'https://acme.kommo.com/?x=1&y=2' } },
    };
    const expected = {
      leads: { update: { '0': { id: '10', name: 'Ana & Bo', price: '1.5', tags: { '0': { id: '1', name: 'vip' }, '1': { id: '2', name: 'a b' } } } } },
      account: { subdomain: 'acme', _links: { self: 'https://acme.kommo.com/?x=1&y=2' } },
    };
    assert.deepEqual(parseBracketForm(encodeBracketForm(value)), expected);
    assert.deepEqual(parseBracketForm(encodeBracketForm(value, { rawBrackets: true })), expected);
  });

  it('decodes + and percent escapes in keys and values', () => {
    assert.deepEqual(parseBracketForm('a%5Bname%5D=Ana+Souza&a[mail]=ana%40x.com&a[ok]=%E2%9C%93'), {
      a: { name: 'Ana Souza', mail: 'ana@x.com', ok: '✓' },
    });
  });

  it('decodes plain keys exactly as URLSearchParams does, malformed escapes and bad UTF-8 included', () => {
    const bodies = ['a=%ZZ&b=%E2%82&c=a+b%20c', 'k=%&j=%4&m=100%25', 'x=1&&y=2&=skipped&z', 'q=%F0%9F%98%80+%C3%A9', 'd=a=b=c&e=%3D%26'];
    for (const body of bodies) {
      const expected = Object.fromEntries([...new URLSearchParams(body)].filter(([k]) => k !== ''));
      assert.deepEqual(parseBracketForm(body), expected, body);
    }
  });

  it('gives the same result for a repeated key layout (the path cache) and still checks depth per call', () => {
    const body = 'leads%5Bstatus%5D%5B0%5D%5Bid%5D=1';
    assert.deepEqual(parseBracketForm(body), { leads: { status: { '0': { id: '1' } } } });
    assert.deepEqual(parseBracketForm(body.replace('=1', '=2')), { leads: { status: { '0': { id: '2' } } } });
    assert.throws(() => parseBracketForm(body, { maxDepth: 2 }), FormParseError);
  });

  it('keeps sparse indices, and listOf orders them numerically', () => {
    const parsed = parseBracketForm('cf[10][id]=c&cf[0][id]=a&cf[2][id]=b');
    assert.deepEqual(parsed, { cf: { '0': { id: 'a' }, '2': { id: 'b' }, '10': { id: 'c' } } });
    assert.deepEqual(listOf(parsed.cf), [{ id: 'a' }, { id: 'b' }, { id: 'c' }]);
  });

  it('appends k[] values after the highest index', () => {
    assert.deepEqual(parseBracketForm('k[]=a&k[]=b&k[5]=c&k[]=d&m[][x]=1&m[][x]=2'), {
      k: { '0': 'a', '1': 'b', '5': 'c', '6': 'd' },
      m: { '0': { x: '1' }, '1': { x: '2' } },
    });
  });

  it('keeps 7-level keys from the captured status body', () => {
    const parsed = parseBracketForm(fixture('status-change.txt'));
    const leads = parsed.leads as Record<string, Record<string, Record<string, unknown>>>;
    assert.deepEqual(leads.status?.['0']?.custom_fields, {
      '0': { id: '66339', name: 'Source', values: { '0': { value: 'Site', enum: '139517' } } },
      '2': { id: '72333', values: { '0': '1542067200' } },
    });
    assert.deepEqual(parsed.account, { subdomain: 'apfitness' });
  });

  it('keeps every one of more than 1000 parameters', () => {
    const raw = fixture('big-lead.txt');
    const rawCount = raw.split('&').length;
    assert.equal(rawCount, 1689);
    const parsed = parseBracketForm(raw);
    const all = leaves(parsed);
    assert.equal(all.length, rawCount);
    assert.ok(all.some(([k, v]) => k === 'leads[update][1][custom_fields][149][values][1][value]' && v === 'value 1.149.1'));
    const lead = (parsed.leads as Record<string, Record<string, Record<string, unknown>>>).update?.['1'];
    assert.equal(listOf(lead?.custom_fields).length, 150);
    assert.equal(listOf(lead?.tags).length, 40);
  });

  it('throws FormParseError past maxParams', () => {
    assert.deepEqual(parseBracketForm('a=1&b=2', { maxParams: 2 }), { a: '1', b: '2' });
    assert.throws(() => parseBracketForm('a=1&b=2&c=3', { maxParams: 2 }), {
      name: 'FormParseError',
      message: 'too many parameters: more than maxParams=2',
    });
    const many = Array.from({ length: 20001 }, (_, i) => `p[${i}]=1`).join('&');
    assert.throws(() => parseBracketForm(many), /maxParams=20000/);
    assert.equal(listOf(parseBracketForm(many, { maxParams: 20001 }).p).length, 20001);
  });

  it('throws FormParseError past maxDepth', () => {
    const key = (depth: number): string => 'a' + '[x]'.repeat(depth);
    assert.doesNotThrow(() => parseBracketForm(`${key(20)}=1`));
    assert.throws(() => parseBracketForm(`${key(21)}=1`), (err: unknown) => {
      assert.ok(err instanceof FormParseError);
      assert.equal(err.message, `key "${key(21)}" is nested 21 levels deep, over maxDepth=20`);
      return true;
    });
    assert.throws(() => parseBracketForm('a[b][c][d]=1', { maxDepth: 2 }), /nested 3 levels deep, over maxDepth=2/);
  });

  it('rejects prototype-polluting keys and leaves Object.prototype alone', () => {
    for (const raw of ['__proto__[polluted]=yes', 'a[__proto__][polluted]=yes', 'constructor[prototype][polluted]=yes', 'a[%5F%5Fproto%5F%5F][polluted]=yes']) {
      assert.throws(() => parseBracketForm(raw), FormParseError, raw);
    }
    assert.equal(Object.prototype.hasOwnProperty.call(Object.prototype, 'polluted'), false);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    // Other inherited names are just own keys.
    const parsed = parseBracketForm('toString=1&a[hasOwnProperty]=2');
    assert.equal(parsed.toString, '1');
    assert.deepEqual(Object.keys(parsed.a as object), ['hasOwnProperty']);
  });

  it('reports key conflicts instead of crashing', () => {
    assert.throws(() => parseBracketForm('a=1&a[b]=2'), {
      name: 'FormParseError',
      message: 'key conflict: "a[b]" nests under "a", which already holds a value',
    });
    assert.throws(() => parseBracketForm('a[b][c]=2&a[b]=1'), {
      name: 'FormParseError',
      message: 'key conflict: "a[b]" sets a value where "a[b]" already has nested keys',
    });
  });

  it('treats malformed bracket keys as literal names and lets the last repeated key win', () => {
    assert.deepEqual(parseBracketForm('a[b=1&c]d=2&e=1&e=2&=x'), { 'a[b': '1', 'c]d': '2', e: '2' });
  });
});

describe('listOf', () => {
  it('handles arrays, empties, bare objects and scalars', () => {
    assert.deepEqual(listOf(['a', 'b']), ['a', 'b']);
    assert.deepEqual(listOf(undefined), []);
    assert.deepEqual(listOf(null), []);
    assert.deepEqual(listOf({}), []);
    assert.deepEqual(listOf({ value: 'x', enum: '1' }), [{ value: 'x', enum: '1' }]);
    assert.deepEqual(listOf('x'), ['x']);
  });
});
