import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import jsonata from 'jsonata';
import { z } from 'zod';
import type { EnrichedLead } from '../model/index.js';
import {
  compileExpression,
  compileTemplate,
  fieldNamesReferenced,
  humanDuration,
  JSONATA_BUILTINS,
  LEAD_ROOTS,
  MappingError,
  type MappingValue,
} from './mapping.js';

const WHERE = 'kommo-sync.yaml:23 accounts.acme.destinations.cio.attributes.industry';

const stage = { id: 501, name: 'Proposal sent', key: 'proposal_sent', pipelineId: 7, pipeline: 'Sales', type: 'open' as const };
const input: EnrichedLead = {
  account: { name: 'acme', subdomain: 'acme', currency: 'USD' },
  event: { kind: 'lead.stage_changed', at: 1_700_000_000_000 },
  lead: {
    id: 42, name: 'Big deal', price: 5000, pipelineId: 7, statusId: 501, responsibleUserId: 9, createdAt: 1, updatedAt: 2,
    closedAt: null, wonAt: null, lostAt: null, lossReason: null, tags: ['vip', 'q4'], deleted: false,
    fields: { Industry: 'Retail', "Owner's note": 'hi', 'Budget "max"': 10, Topics: ['a', 'b'], Empty: null },
  },
  contact: { id: 77, name: 'Ana Lima', firstName: 'Ana', lastName: 'Lima', email: 'ana@example.com', phone: '', tags: [], fields: { Position: 'CTO' } },
  company: { id: 5, name: 'Acme Inc', fields: {} },
  pipeline: { id: 7, name: 'Sales' },
  stage,
  previousStage: null,
  responsible: { id: 9, name: null, email: null },
};

describe('compileExpression: evaluation', () => {
  const cases: Array<[string, MappingValue]> = [
    ['lead.fields["Industry"]', 'Retail'],
    ["lead.fields['Industry']", 'Retail'],
    ['lead.fields[ "Industry" ]', 'Retail'],
    ['lead.fields.`Industry`', 'Retail'],
    [`lead.fields["Owner's note"]`, 'hi'],
    [`lead.fields['Budget "max"']`, 10],
    ['lead.fields["Budget \\"max\\""]', 10],
    ['lead.fields["Topics"]', ['a', 'b']],
    ['lead.fields["Topics"][0]', 'a'],
    ['lead.fields["Missing"]', undefined],
    ['lead.fields["Empty"]', null],
    ['contact.fields["Position"]', 'CTO'],
    ['$uppercase(lead.fields["Industry"])', 'RETAIL'],
    ['lead.fields["Industry"] in ["Retail", "Food"]', true],
    ['["x", "y"]', ['x', 'y']],
    ['lead.tags', ['vip', 'q4']],
    ['"constant"', 'constant'],
    ["'single'", 'single'],
    ['42', 42],
    ['true', true],
    ['false', false],
    ['lead.price * 2', 10000],
    ['stage.key', 'proposal_sent'],
    ['previousStage.key', undefined],
    ['responsible.name ? responsible.name : $string(responsible.id)', '9'],
    ['company', '{"id":5,"name":"Acme Inc","fields":{}}'],
    ['$lookup(lead.fields, "Industry")', 'Retail'],
    ['($p := lead.price; $p > 1000 ? "big" : "small")', 'big'],
    ['$map(lead.tags, function($t){ $uppercase($t) })', ['VIP', 'Q4']],
    ['"a[\\"b\\"]"', 'a["b"]'], // brackets inside a string are text
    ['/* note */ lead.id', 42],
  ];
  for (const [source, expected] of cases) {
    it(`${source} -> ${JSON.stringify(expected)}`, async () => {
      assert.deepEqual(await compileExpression(source, WHERE).evaluate(input), expected);
    });
  }
});

describe('compileExpression: errors name the location', () => {
  const cases: Array<[string, RegExp[]]> = [
    ['lead.price +', [/kommo-sync\.yaml:23 accounts\.acme\.destinations\.cio\.attributes\.industry/, /Unexpected end of expression/, /at character 12/]],
    ['lead.fields["Industry"] +', [/Unexpected end of expression/, /at character 25/]],
    ['"abc', [/String literal must be terminated/]],
    ['leed.price', [/unknown name `leed`/, /did you mean `lead`\?/, /expected one of account, event, lead, contact, company, pipeline, stage, previousStage, responsible/]],
    ['$uppercase(contct.name)', [/unknown name `contct`/, /did you mean `contact`/]],
    ['lead.price > 0 ? stge.key : ""', [/unknown name `stge`/, /did you mean `stage`/]],
    ['$uppercse(lead.name)', [/unknown function or variable `\$uppercse`/, /did you mean `\$uppercase`/]],
    ['{{', [/invalid expression/]],
  ];
  for (const [source, patterns] of cases) {
    it(source, () => {
      assert.throws(() => compileExpression(source, WHERE), (err: unknown) => {
        assert.ok(err instanceof MappingError, String(err));
        assert.ok(err.message.startsWith(WHERE), err.message);
        for (const p of patterns) assert.match(err.message, p);
        return true;
      });
    });
  }

  it('names relative to a predicate, bound variables and $/$$ are not roots', () => {
    for (const s of ['lead.tags[$ = "vip"]', 'stage[name = "Won"].key', '$$.lead.id', 'lead@$l.tags', '($x := 1; $x)']) {
      compileExpression(s, WHERE);
    }
  });

  it('checks every step of a path against the enriched lead, naming the nearest valid path', () => {
    const cases: Array<[string, RegExp[]]> = [
      ['lead.feilds["Industry"]', [/unknown name `lead\.feilds` in `lead\.feilds\["Industry"\]`/, /did you mean `lead\.fields`\?/, /`lead` has id, name, price, /]],
      ['$lookup(lead.feilds, "Industry")', [/did you mean `lead\.fields`\?/]],
      ['contact.emial', [/did you mean `contact\.email`\?/]],
      ['previousStage.kye', [/did you mean `previousStage\.key`\?/]],
      ['account.curency', [/did you mean `account\.currency`\?/]],
      ['stage[nmae = "Won"].key', [/unknown name `stage\.nmae`/, /did you mean `stage\.name`\?/]],
      ['lead.(prize * 2)', [/did you mean `lead\.price`\?/]],
      ['lead{name: prize}', [/did you mean `lead\.price`\?/]],
      ['$$.lead.nme', [/did you mean `lead\.name`\?/]],
      ['$.lead.nme', [/did you mean `lead\.name`\?/]],
      ['$uppercase(responsible.nam)', [/did you mean `responsible\.name`\?/]],
      ['lead.price.amount', [/`lead\.price` is a number: it has no `amount`/]],
      ['lead.tags.name', [/`lead\.tags` is a list of plain values \(a string\): it has no `name`/]],
    ];
    for (const [source, patterns] of cases) {
      assert.throws(() => compileExpression(source, WHERE), (err: unknown) => {
        assert.ok(err instanceof MappingError, `${source}: ${String(err)}`);
        assert.ok(err.message.startsWith(`${WHERE}: `), err.message);
        for (const p of patterns) assert.match(err.message, p, source);
        return true;
      }, source);
    }
  });

  it('keeps JSONata features: any field name, functions, variables, predicates, indexes, grouping, sorting', () => {
    for (const s of [
      'lead.fields["Anything at all"]', 'lead.fields.Whatever.deeper', 'lead.fields["Topics"][0]', 'company.fields["Size"]',
      'previousStage.key', 'stage.type = "won"', 'lead[price > 5].name', 'lead.(price * 2)', 'lead.tags^($)', 'lead.tags[$ = "vip"]',
      'lead{name: price}', '$lookup(contact.fields, "X")', '$map(lead.tags, function($t){ $uppercase($t) })', '$count(lead.tags)',
      '($l := lead; $l.whatever)', 'lead@$l.tags', 'lead#$i.id', '$$.lead.fields.X', 'lead.fields.*', '{"a": lead.id}.a', 'lead.$string(id)',
    ]) {
      compileExpression(s, WHERE);
    }
  });

  it('extra roots are checked by name only; another input can bring its own schema', () => {
    compileTemplate('{{destinations}} {{lead.name}}', WHERE, { roots: [...LEAD_ROOTS, 'destinations'] });
    assert.throws(() => compileTemplate('{{lead.nme}}', WHERE, { roots: [...LEAD_ROOTS, 'destinations'] }), /did you mean `lead\.name`/);
    const input = z.object({ count: z.number(), lead: z.object({ id: z.number() }) });
    compileExpression('count + lead.id', WHERE, { roots: ['count', 'lead'], input });
    assert.throws(() => compileExpression('lead.price', WHERE, { roots: ['count', 'lead'], input }), /unknown name `lead\.price`.*`lead` has id$/);
    // Without a schema, other roots are checked by name only.
    compileExpression('lead.price', WHERE, { roots: ['count', 'lead'] });
  });

  it('other inputs declare their own roots', async () => {
    const e = compileExpression('count', WHERE, { roots: ['count'] });
    assert.equal(await e.evaluate({ count: 3 }), 3);
    assert.throws(() => compileExpression('lead.id', WHERE, { roots: ['count'] }), /unknown name `lead`/);
  });

  it('one expression text compiled in many places (every account of an agency) evaluates each input on its own, concurrently', async () => {
    const a = compileExpression('count * 2', WHERE, { roots: ['count'] });
    const b = compileExpression('count * 2', 'accounts.other.destinations.x.attributes.y', { roots: ['count'] });
    // JSONata evaluation is async: these interleave, as deliveries do.
    const inputs = Array.from({ length: 50 }, (_, i) => ({ count: i }));
    const out = await Promise.all(inputs.map((x, i) => (i % 2 ? a : b).evaluate(x)));
    assert.deepEqual(out, inputs.map((x) => x.count * 2));
    await assert.rejects(b.evaluate({ count: 'x' }), /accounts\.other\.destinations\.x\.attributes\.y/);
  });

  it('a run-time failure is a MappingError with the location', async () => {
    await assert.rejects(compileExpression('lead.name + 1', WHERE).evaluate(input), (err: unknown) => {
      assert.ok(err instanceof MappingError);
      assert.match(err.message, new RegExp(`^${WHERE.replace(/\./g, '\\.')}: expression .* failed: .*"\\+" operator`));
      return true;
    });
  });
});

describe('compileTemplate', () => {
  const cases: Array<[string, string]> = [
    ['plain text', 'plain text'],
    ['{{event.kind}} ({{stage.name}})', 'lead.stage_changed (Proposal sent)'],
    ['Industry: {{ lead.fields["Industry"] }}!', 'Industry: Retail!'],
    ['missing: [{{lead.fields["Nope"]}}] [{{previousStage.name}}]', 'missing: [] []'],
    ['tags: {{lead.tags}}', 'tags: vip, q4'],
    ['{{ "}}" }} and {{ {"a": 1}.a }}', '}} and 1'],
    ['{{lead.price}} / {{true}}', '5000 / true'],
  ];
  for (const [text, expected] of cases) {
    it(text, async () => assert.equal(await compileTemplate(text, WHERE).render(input), expected));
  }

  it('errors carry the location', () => {
    const cases: Array<[string, RegExp]> = [
      ['Hi {{ lead.name ', /^kommo-sync\.yaml:23 .*: `\{\{` at character 4 .*no matching `}}`/],
      ['Hi {{ leed.name }}', /^kommo-sync\.yaml:23 .*\{\{ leed\.name }}: unknown name `leed`/],
      ['Hi {{ }}', /^kommo-sync\.yaml:23 .*empty/],
    ];
    for (const [text, message] of cases) assert.throws(() => compileTemplate(text, WHERE), { name: 'MappingError', message });
  });
});

describe('fieldNamesReferenced', () => {
  const cases: Array<[string, Array<{ entity: string; name: string }>]> = [
    ['lead.fields["Industry"]', [{ entity: 'lead', name: 'Industry' }]],
    ['lead.fields.Source & contact.fields["Position"]', [{ entity: 'lead', name: 'Source' }, { entity: 'contact', name: 'Position' }]],
    ['$lookup(contact.fields, "Phone type")', [{ entity: 'contact', name: 'Phone type' }]],
    ['lead.price', []],
  ];
  for (const [source, expected] of cases) {
    it(source, () => assert.deepEqual(fieldNamesReferenced(compileExpression(source, WHERE)), expected));
  }
  it('reads templates too', () => {
    const t = compileTemplate('{{lead.fields["A"]}} {{lead.fields["A"]}} {{contact.fields["B"]}}', WHERE);
    assert.deepEqual(fieldNamesReferenced(t), [{ entity: 'lead', name: 'A' }, { entity: 'contact', name: 'B' }]);
  });
});

describe('helpers', () => {
  it('every listed built-in exists in the installed jsonata', async () => {
    for (const name of JSONATA_BUILTINS) {
      assert.equal(await jsonata(`$type($${name})`).evaluate({}), 'function', name);
    }
  });
  const durations: Array<[number, string]> = [[48 * 3_600_000, '48h'], [24 * 3_600_000, '24h'], [3 * 86_400_000, '3d'], [30 * 60_000, '30m'], [10_000, '10s'], [250, '250ms']];
  for (const [ms, text] of durations) it(`humanDuration(${ms}) = ${text}`, () => assert.equal(humanDuration(ms), text));
});
