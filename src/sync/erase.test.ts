import assert from 'node:assert/strict';
import { test } from 'node:test';
import { planErasure } from './erase.js';

const cio = { name: 'mailer', canErase: true, identifyBy: 'email' as const };

test('one erase job per lead ordering key and destination, and one note per lead naming where it was erased', () => {
  const plan = planErasure({
    email: 'ann@example.com',
    contactIds: [7],
    leadIds: [11, 12],
    destinations: [cio, { name: 'legacy', canErase: false, identifyBy: 'email' }],
  });
  assert.deepEqual(plan.erasedIn, ['mailer']);
  assert.deepEqual(plan.skipped.map((s) => s.destination), ['legacy']);
  const erases = plan.erase.filter((e) => e.destination === 'mailer');
  assert.deepEqual(erases.map((e) => e.orderingKey), ['lead:11', 'lead:12'], 'after anything queued for either lead');
  assert.deepEqual(erases[0]!.ops, [{ kind: 'erasePerson', person: { email: 'ann@example.com' } }]);
  assert.equal(plan.subject, 'ann@example.com');
  assert.deepEqual(plan.notes.map((n) => n.orderingKey), ['lead:11', 'lead:12']);
  const note = plan.notes[0]!.op;
  assert.ok(note.kind === 'addNote');
  const text = note.text;
  assert.match(text, /ann@example\.com erased on request in mailer; not erased in legacy, erase it there by hand/);
});

test('a destination keyed by contact id gets one erasePerson per contact; without a contact it is skipped, not guessed', () => {
  const byId = { name: 'cio-ids', canErase: true, identifyBy: 'id' as const };
  const withContacts = planErasure({ email: 'b@x.io', contactIds: [5, 6], leadIds: [], destinations: [byId] });
  assert.equal(withContacts.erase.length, 1);
  assert.equal(withContacts.erase[0]!.orderingKey, 'email:b@x.io', 'no known lead: a key of its own');
  assert.deepEqual(withContacts.erase[0]!.ops, [
    { kind: 'erasePerson', person: { email: 'b@x.io', id: 'kommo-contact-5' } },
    { kind: 'erasePerson', person: { email: 'b@x.io', id: 'kommo-contact-6' } },
  ]);
  const none = planErasure({ email: 'b@x.io', contactIds: [], leadIds: [], destinations: [byId] });
  assert.deepEqual(none.erase, []);
  assert.match(none.skipped[0]!.reason, /no Kommo contact has this email/);
});
