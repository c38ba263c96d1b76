import assert from 'node:assert/strict';
import { test } from 'node:test';
import { planErasure } from './erase.js';

const cio = { name: 'customerio', canErase: true, identifyBy: 'email' as const };

test('one erase job per lead ordering key and destination, and one note per lead naming where it was erased', () => {
  const plan = planErasure({
    account: 'acme',
    email: 'ann@example.com',
    contactIds: [7],
    leadIds: [11, 12],
    destinations: [cio, { name: 'legacy', canErase: false, identifyBy: 'email' }],
  });
  assert.deepEqual(plan.erasedIn, ['customerio']);
  assert.deepEqual(plan.skipped.map((s) => s.destination), ['legacy']);
  const erases = plan.jobs.filter((j) => j.destination === 'acme/customerio');
  assert.deepEqual(erases.map((j) => j.orderingKey), ['lead:11', 'lead:12'], 'after anything queued for either lead');
  assert.deepEqual(erases[0]!.payload, { subject: 'ann@example.com', ops: [{ kind: 'erasePerson', person: { email: 'ann@example.com' } }] });
  const notes = plan.jobs.filter((j) => j.destination === 'acme/kommo');
  assert.deepEqual(notes.map((j) => j.orderingKey), ['lead:11', 'lead:12']);
  const text = (notes[0]!.payload as { ops: Array<{ text: string }> }).ops[0]!.text;
  assert.match(text, /ann@example\.com erased on request in customerio; not erased in legacy, erase it there by hand/);
});

test('a destination keyed by contact id gets one erasePerson per contact; without a contact it is skipped, not guessed', () => {
  const byId = { name: 'cio-ids', canErase: true, identifyBy: 'id' as const };
  const withContacts = planErasure({ account: 'a', email: 'b@x.io', contactIds: [5, 6], leadIds: [], destinations: [byId] });
  assert.equal(withContacts.jobs.length, 1);
  assert.equal(withContacts.jobs[0]!.orderingKey, 'email:b@x.io', 'no known lead: a key of its own');
  assert.deepEqual((withContacts.jobs[0]!.payload as { ops: unknown[] }).ops, [
    { kind: 'erasePerson', person: { email: 'b@x.io', id: 'kommo-contact-5' } },
    { kind: 'erasePerson', person: { email: 'b@x.io', id: 'kommo-contact-6' } },
  ]);
  const none = planErasure({ account: 'a', email: 'b@x.io', contactIds: [], leadIds: [], destinations: [byId] });
  assert.deepEqual(none.jobs, []);
  assert.match(none.skipped[0]!.reason, /no Kommo contact has this email/);
});
