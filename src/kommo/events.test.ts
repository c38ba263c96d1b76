import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { inboundFromEvent, nearbyStageKeys } from './events.js';
import { parseBracketForm } from './form.js';
import { eventSchema, type KommoEvent } from './schemas.js';
import { KommoSimulator } from './simulator/index.js';
import { parseKommoWebhook } from './webhook.js';

const ctx = { subdomain: 'acme', pipelineOfStatus: (id: number) => (id === 142 || id === 143 ? null : 900) };
const ev = (over: Partial<Record<keyof KommoEvent, unknown>>): KommoEvent =>
  eventSchema.parse({ id: 'e1', type: 'lead_status_changed', entity_id: 77, entity_type: 'lead', created_by: 5, created_at: 1_700_000_000, value_after: [], value_before: [], ...over });

describe('inboundFromEvent', () => {
  it('gives a stage move and an addition the keys the webhooks of the same changes carry (simulator)', () => {
    const sim = new KommoSimulator({ subdomain: 'acme' });
    // A subscriber whose every POST is dropped: the bodies Kommo would have sent are recorded.
    sim.subscribe('http://127.0.0.1:9/hook', ['add_lead', 'status_lead', 'update_lead']);
    sim.dropWebhooks(1000);
    const contact = sim.createContact({ name: 'Ann', email: 'ann@example.com' });
    const lead = sim.createLead({ name: 'Deal', contactIds: [contact.id] });
    sim.moveLead(lead.id, sim.status('Qualified').id);
    sim.moveLead(lead.id, 142);
    const fromHooks = new Set(sim.webhooksDropped.flatMap((d) => parseKommoWebhook(parseBracketForm(d.body)).events.map((e) => e.dedupKey)));
    const pipelineOfStatus = (id: number) => [...sim.pipelines.values()].find((p) => p.statuses.some((s) => s.id === id && id !== 142 && id !== 143))?.id ?? null;
    const fromEvents = sim.events.map((e) => inboundFromEvent(eventSchema.parse(e), { subdomain: 'acme', pipelineOfStatus }));
    assert.equal(fromEvents.length, 3);
    for (const inbound of fromEvents) {
      assert.ok(inbound, 'every logged addition and move is understood');
      assert.ok(fromHooks.has(inbound.dedupKey), `${inbound.dedupKey} is one of the webhooks' keys: ${[...fromHooks].join(', ')}`);
    }
    assert.deepEqual(fromEvents.map((i) => i!.event.kind), ['lead.created', 'lead.stage_changed', 'lead.won']);
  });

  it('reads a stage move with or without pipeline ids, and says where the lead came from', () => {
    const full = inboundFromEvent(ev({ value_after: [{ lead_status: { id: 902, pipeline_id: 900 } }], value_before: [{ lead_status: { id: 901, pipeline_id: 900 } }] }), ctx);
    assert.equal(full?.dedupKey, 'kommo:acme:lead:77:stage:900:902:1700000000');
    assert.deepEqual(full?.event, {
      type: 'crm', kind: 'lead.stage_changed', entityId: 77, entityType: 'lead', updatedAt: 1_700_000_000, subdomain: 'acme',
      pipelineId: 900, statusId: 902, oldPipelineId: 900, oldStatusId: 901,
      entity: { id: '77', status_id: '902', pipeline_id: '900', old_status_id: '901', old_pipeline_id: '900', updated_at: '1700000000' },
    });
    // As a third-party capture shows it: no pipeline. Won exists in every pipeline: the previous stage says which.
    const won = inboundFromEvent(ev({ value_after: { lead_status: { id: 142 } }, value_before: [{ lead_status: { id: 901 } }] }), ctx);
    assert.equal(won?.dedupKey, 'kommo:acme:lead:77:stage:900:142:1700000000');
    assert.equal(won?.event.kind, 'lead.won');
    const lost = inboundFromEvent(ev({ value_after: [{ lead_status: { id: 143, pipeline_id: 900 } }] }), ctx);
    assert.equal(lost?.event.kind, 'lead.lost');
  });

  it('an addition is keyed like add_lead, whatever its value', () => {
    assert.equal(inboundFromEvent(ev({ type: 'lead_added', value_after: null }), ctx)?.dedupKey, 'kommo:acme:lead:77:created');
    assert.equal(inboundFromEvent(ev({ type: 'lead_added', value_after: [{ lead_status: { id: 901, pipeline_id: 900 } }] }), { ...ctx, subdomain: 'ACME' })?.dedupKey, 'kommo:acme:lead:77:created');
  });

  it('ignores other types, other entities and moves it cannot read', () => {
    assert.equal(inboundFromEvent(ev({ type: 'lead_deleted' }), ctx), null);
    assert.equal(inboundFromEvent(ev({ type: 'lead_added', entity_type: 'contact' }), ctx), null);
    assert.equal(inboundFromEvent(ev({ value_after: [{ something: 1 }] }), ctx), null);
  });
});

describe('nearbyStageKeys', () => {
  it('lists the keys of the same move stamped a few seconds either side; none for an addition', () => {
    const move = inboundFromEvent(ev({ value_after: [{ lead_status: { id: 902, pipeline_id: 900 } }] }), ctx)!;
    const keys = nearbyStageKeys(move, 'acme', 2);
    assert.deepEqual(keys, [1_699_999_998, 1_699_999_999, 1_700_000_000, 1_700_000_001, 1_700_000_002].map((t) => `kommo:acme:lead:77:stage:900:902:${t}`));
    assert.deepEqual(nearbyStageKeys(inboundFromEvent(ev({ type: 'lead_added' }), ctx)!, 'acme', 2), []);
  });
});
