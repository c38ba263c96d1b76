import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import type { CrmEvent, NormalizedInbound } from '../model/index.js';
import { encodeBracketForm, parseBracketForm } from './form.js';
import { parseKommoWebhook, WebhookBodyError } from './webhook.js';

const fixture = (name: string): string => readFileSync(new URL(`../../test/fixtures/kommo/${name}`, import.meta.url), 'utf8');
const fromFixture = (name: string) => parseKommoWebhook(parseBracketForm(fixture(name)));
/** Encodes then parses, as the HTTP layer would. */
const fromForm = (body: Record<string, unknown>) => parseKommoWebhook(parseBracketForm(encodeBracketForm(body)));

function crm(inbound: NormalizedInbound | undefined): CrmEvent {
  assert.ok(inbound, 'expected an event');
  assert.equal(inbound.event.type, 'crm');
  return inbound.event as CrmEvent;
}

const account = { subdomain: 'acme', id: 555 };
const lead = { id: 77, pipeline_id: 900, status_id: 901, responsible_user_id: 11, last_modified: 1700000000 };

describe('parseKommoWebhook: leads', () => {
  it('maps the captured status body to lead.won with every field filled', () => {
    const result = fromFixture('status-change.txt');
    assert.deepEqual(result.account, { subdomain: 'apfitness', id: 17769199 });
    assert.equal(result.ignored, 0);
    assert.equal(result.events.length, 1);
    assert.equal(result.events[0]?.dedupKey, 'kommo:apfitness:lead:10701093:stage:9217056:142:1539782664');
    assert.deepEqual(crm(result.events[0]), {
      type: 'crm',
      kind: 'lead.won',
      entityId: 10701093,
      entityType: 'lead',
      pipelineId: 9217056,
      statusId: 142,
      oldStatusId: 20067736,
      responsibleUserId: 2079676,
      price: 22500,
      updatedAt: 1539782664,
      kommoAccountId: 17769199,
      subdomain: 'apfitness',
      entity: {
        id: '10701093',
        name: 'Seminar',
        status_id: '142',
        old_status_id: '20067736',
        price: '22500',
        responsible_user_id: '2079676',
        last_modified: '1539782664',
        modified_user_id: '2079718',
        created_user_id: '2076025',
        date_create: '1539782209',
        pipeline_id: '9217056',
        tags: [{ id: '80147', name: 'repeat' }],
        account_id: '17769199',
        custom_fields: [
          { id: '66339', name: 'Source', values: [{ value: 'Site', enum: '139517' }] },
          { id: '72333', values: ['1542067200'] },
        ],
      },
    });
  });

  it('gives the status hook and its update twin the same kind and dedup key', () => {
    const status = crm(fromFixture('status-change.txt').events[0]);
    const updates = fromFixture('lead-update-stage.txt').events;
    assert.equal(updates.length, 1);
    assert.equal(updates[0]?.dedupKey, fromFixture('status-change.txt').events[0]?.dedupKey);
    assert.equal(crm(updates[0]).kind, status.kind);
    assert.equal(crm(updates[0]).oldStatusId, 20067736);
  });

  it('tells won (142), lost (143) and other stages apart, keeping the pipeline', () => {
    const kindOf = (status_id: number) => {
      const r = fromForm({ leads: { status: [{ ...lead, status_id, old_status_id: 901 }] }, account });
      return [crm(r.events[0]).kind, r.events[0]?.dedupKey];
    };
    assert.deepEqual(kindOf(142), ['lead.won', 'kommo:acme:lead:77:stage:900:142:1700000000']);
    assert.deepEqual(kindOf(143), ['lead.lost', 'kommo:acme:lead:77:stage:900:143:1700000000']);
    assert.deepEqual(kindOf(902), ['lead.stage_changed', 'kommo:acme:lead:77:stage:900:902:1700000000']);
  });

  it('reads stage moves, reassignments and plain edits out of leads[update]', () => {
    const update = (extra: Record<string, unknown>) => fromForm({ leads: { update: [{ ...lead, ...extra }] }, account }).events[0];

    const moved = update({ old_status_id: 800 });
    assert.equal(crm(moved).kind, 'lead.stage_changed');
    assert.equal(moved?.dedupKey, 'kommo:acme:lead:77:stage:900:901:1700000000');

    const otherPipeline = update({ old_status_id: 901, old_pipeline_id: 899 });
    assert.equal(crm(otherPipeline).kind, 'lead.stage_changed');
    assert.equal(crm(otherPipeline).oldPipelineId, 899);

    const reassigned = update({ old_status_id: 901, old_responsible_user_id: 10 });
    assert.equal(crm(reassigned).kind, 'lead.responsible_changed');
    assert.equal(crm(reassigned).oldResponsibleUserId, 10);
    const viaResponsible = fromForm({ leads: { responsible: [{ ...lead, old_responsible_user_id: 10 }] }, account }).events[0];
    assert.equal(crm(viaResponsible).kind, 'lead.responsible_changed');
    assert.equal(reassigned?.dedupKey, 'kommo:acme:lead:77:responsible:11:1700000000');
    assert.equal(viaResponsible?.dedupKey, reassigned?.dedupKey);

    const edited = update({ old_status_id: 901, price: 10.5 });
    assert.equal(crm(edited).kind, 'lead.updated');
    assert.equal(crm(edited).price, 10.5);
    assert.equal(edited?.dedupKey, 'kommo:acme:lead:77:updated:1700000000');
  });

  it('maps add, restore and delete', () => {
    const added = fromFixture('lead-add.txt');
    assert.equal(added.events[0]?.dedupKey, 'kommo:acme:lead:31500001:created');
    const created = crm(added.events[0]);
    assert.equal(created.kind, 'lead.created');
    assert.equal(created.kommoAccountId, 29876543);
    assert.equal(created.updatedAt, 1717430400);
    assert.equal(created.entity.name, 'Website form: Ana Souza');
    assert.deepEqual(created.entity.custom_fields, [{ id: '512001', name: 'utm_source', values: [{ value: 'google ads' }] }]);

    const r = fromForm({ leads: { restore: [lead], delete: [{ id: 78, status_id: 143, pipeline_id: 900 }] }, account });
    assert.deepEqual(
      r.events.map((e) => [crm(e).kind, e.dedupKey]),
      [
        ['lead.updated', 'kommo:acme:lead:77:updated:1700000000'],
        ['lead.deleted', 'kommo:acme:lead:78:deleted'],
      ],
    );
  });

  it('prefers updated_at over last_modified', () => {
    const r = fromForm({ leads: { update: [{ ...lead, updated_at: 1700000099 }] }, account });
    assert.equal(crm(r.events[0]).updatedAt, 1700000099);
    assert.equal(r.events[0]?.dedupKey, 'kommo:acme:lead:77:updated:1700000099');
  });

  it('keeps every entity of a >1000-parameter batch', () => {
    const r = fromFixture('big-lead.txt');
    assert.deepEqual(
      r.events.map((e) => [crm(e).kind, e.dedupKey]),
      [
        ['lead.updated', 'kommo:acme:lead:31600000:updated:1717520000'],
        ['lead.updated', 'kommo:acme:lead:31600001:updated:1717520001'],
      ],
    );
    const entity = crm(r.events[1]).entity as { custom_fields: Array<{ values: Array<{ value: string }> }>; tags: unknown[] };
    assert.equal(entity.custom_fields.length, 150);
    assert.equal(entity.custom_fields[149]?.values[1]?.value, 'value 1.149.1');
    assert.equal(entity.tags.length, 40);
  });
});

describe('parseKommoWebhook: contacts and ignored entities', () => {
  it('maps contacts[update] to contact.updated with readable custom fields', () => {
    const r = fromFixture('contact-update.txt');
    assert.equal(r.events.length, 1);
    assert.equal(r.events[0]?.dedupKey, 'kommo:apfitness:contact:22334455:updated:1539790000');
    const event = crm(r.events[0]);
    assert.equal(event.kind, 'contact.updated');
    assert.equal(event.entityType, 'contact');
    assert.equal(event.entityId, 22334455);
    assert.equal(event.responsibleUserId, 2079676);
    assert.equal(event.updatedAt, 1539790000);
    assert.equal(event.kommoAccountId, 17769199);
    const fields = event.entity.custom_fields as Array<{ code?: string; values: Array<{ value: string; enum?: string }> }>;
    const byCode = (code: string) => fields.find((f) => f.code === code)?.values.map((v) => v.value);
    assert.deepEqual(byCode('EMAIL'), ['Maria.Oliveira@example.com']);
    assert.deepEqual(byCode('PHONE'), ['+5511999990000', '+5511888880000']);
    assert.deepEqual(event.entity.linked_leads_id, { '10701093': { ID: '10701093' }, '10701111': { ID: '10701111' } });
    assert.equal(event.entity.company_name, 'Oliveira & Filhos');
  });

  it('tells companies from contacts by type, and maps add/restore/responsible too', () => {
    const r = fromForm({
      contacts: {
        add: [{ id: 1, type: 'company', last_modified: 5 }],
        restore: [{ id: 2, last_modified: 6 }],
        responsible: [{ id: 3, type: 'contact', responsible_user_id: 9, old_responsible_user_id: 8, last_modified: 7 }],
      },
      account,
    });
    assert.deepEqual(
      r.events.map((e) => [crm(e).kind, crm(e).entityType, e.dedupKey]),
      [
        ['contact.updated', 'company', 'kommo:acme:company:1:updated:5'],
        ['contact.updated', 'contact', 'kommo:acme:contact:2:updated:6'],
        ['contact.updated', 'contact', 'kommo:acme:contact:3:updated:7'],
      ],
    );
    assert.equal(crm(r.events[2]).oldResponsibleUserId, 8);
  });

  it('counts contact deletes, notes, tasks and other entities as ignored', () => {
    const r = fromForm({
      contacts: { delete: [{ id: 1, type: 'contact' }, { id: 2, type: 'company' }], note: [{ note: { id: 3, text: 'hi' } }] },
      leads: { note: [{ note: { id: 4 } }], status: [{ ...lead, old_status_id: 1 }] },
      task: { add: [{ id: 5 }], update: [{ id: 6 }, { id: 7 }] },
      unsorted: { delete: [{ uid: 'x', action: 'accept' }] },
      account,
    });
    assert.equal(r.events.length, 1);
    assert.equal(r.ignored, 8);
  });

  it('accepts a body with only ignored entities', () => {
    const r = fromForm({ task: { add: [{ id: 5, text: 'call' }] }, account });
    assert.deepEqual(r, { account: { subdomain: 'acme', id: 555 }, events: [], ignored: 1 });
  });
});

describe('parseKommoWebhook: JSON bodies, accounts and fallbacks', () => {
  it('gives a Kommo-shaped JSON body the same result as the form body', () => {
    const json = {
      leads: {
        status: [
          {
            id: 10701093,
            name: 'Seminar',
            status_id: 142,
            old_status_id: '20067736',
            price: 22500,
            responsible_user_id: 2079676,
            last_modified: 1539782664,
            modified_user_id: 2079718,
            created_user_id: 2076025,
            date_create: 1539782209,
            pipeline_id: 9217056,
            tags: [{ id: 80147, name: 'repeat' }],
            account_id: 17769199,
            custom_fields: [
              { id: 66339, name: 'Source', values: [{ value: 'Site', enum: 139517 }] },
              { id: 72333, values: ['1542067200'] },
            ],
          },
        ],
      },
      account: { subdomain: 'apfitness' },
    };
    assert.deepEqual(parseKommoWebhook(json), fromFixture('status-change.txt'));
  });

  it('uses account[id] over the entity account_id, and tolerates a missing account block', () => {
    const withAccount = fromForm({ leads: { add: [{ ...lead, account_id: 1 }] }, account: { id: 555 } });
    assert.equal(crm(withAccount.events[0]).kommoAccountId, 555);
    assert.equal(withAccount.events[0]?.dedupKey, 'kommo:555:lead:77:created');

    const without = fromForm({ leads: { add: [{ ...lead, account_id: 1 }] } });
    assert.deepEqual(without.account, { id: 1 });
    assert.equal(crm(without.events[0]).subdomain, undefined);
    assert.equal(without.events[0]?.dedupKey, 'kommo:1:lead:77:created');
  });

  it('falls back to a stable sha256 of the entity when there is no timestamp', () => {
    const body = { leads: { update: [{ id: 77, name: 'A', custom_fields: [{ id: 1, values: [{ value: 'x' }] }] }] }, account };
    const key = fromForm(body).events[0]?.dedupKey ?? '';
    assert.match(key, /^kommo:acme:lead:77:updated:[0-9a-f]{64}$/);
    assert.equal(parseKommoWebhook(body).events[0]?.dedupKey, key, 'JSON and form hash alike');
    const renamed = { leads: { update: [{ id: 77, name: 'B' }] }, account };
    assert.notEqual(fromForm(renamed).events[0]?.dedupKey, key);

    // The stage twins carry different fields but must still collapse.
    const move = { id: 77, pipeline_id: 900, status_id: 901, old_status_id: 800 };
    const status = fromForm({ leads: { status: [{ ...move, tags: [{ id: 1 }] }] }, account }).events[0]?.dedupKey ?? '';
    const update = fromForm({ leads: { update: [{ ...move, name: 'A' }] }, account }).events[0]?.dedupKey;
    assert.match(status, /^kommo:acme:lead:77:stage:900:901:[0-9a-f]{64}$/);
    assert.equal(update, status);
  });
});

describe('parseKommoWebhook: errors', () => {
  const error = (body: Record<string, unknown>) => {
    try {
      parseKommoWebhook(body);
    } catch (err) {
      assert.ok(err instanceof WebhookBodyError, `expected WebhookBodyError, got ${String(err)}`);
      return err.message;
    }
    assert.fail('expected parseKommoWebhook to throw');
  };

  it('rejects a body without any Kommo entity list', () => {
    const message = 'no Kommo entity list (leads[...] or contacts[...]) in the body';
    assert.equal(error({}), message);
    assert.equal(error(parseBracketForm('account[subdomain]=acme&foo=bar')), message);
  });

  it('names the path of a bad or missing id', () => {
    assert.equal(error(parseBracketForm('leads[status][0][id]=abc')), 'leads[status][0][id]: expected a numeric id, got "abc"');
    assert.equal(error(parseBracketForm('leads[add][0][id]=1&leads[add][3][name]=x')), 'leads[add][3][id]: expected a numeric id, got nothing');
    assert.equal(error({ contacts: { update: [{ id: 1.5 }] } }), 'contacts[update][0][id]: expected a numeric id, got 1.5');
  });

  it('names the path of other bad fields and shapes', () => {
    assert.equal(error(parseBracketForm('leads[status][0][id]=1&leads[status][0][status_id]=won')), 'leads[status][0][status_id]: expected a numeric id, got "won"');
    assert.equal(error(parseBracketForm('leads[update][0][id]=1&leads[update][0][price]=1,5')), 'leads[update][0][price]: expected a number, got "1,5"');
    assert.equal(error(parseBracketForm('leads[status][0]=x')), 'leads[status][0]: expected an object, got "x"');
    assert.equal(error(parseBracketForm('leads[status]=x')), 'leads[status]: expected a list of entities, got "x"');
    assert.equal(error(parseBracketForm('leads=x')), 'leads: expected an object keyed by action, got "x"');
    assert.equal(error(parseBracketForm('leads[add][0][id]=1&account[id]=acme')), 'account[id]: expected a numeric id, got "acme"');
  });

  it('treats empty optional fields as absent', () => {
    const r = parseKommoWebhook(parseBracketForm('leads[update][0][id]=5&leads[update][0][price]=&leads[update][0][last_modified]=9'));
    assert.equal(crm(r.events[0]).price, undefined);
    assert.equal(r.events[0]?.dedupKey, 'kommo:unknown:lead:5:updated:9');
  });
});
