import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { InboundRejected, type InboundRequest } from '../types.js';
import { parseMoosend, unsubscribeKey } from './inbound.js';
import { moosend } from './index.js';

const NOW = Date.UTC(2026, 2, 14, 10, 0);
const fixture = (name: string) => readFileSync(new URL(`../../../test/fixtures/moosend/${name}`, import.meta.url));
const json = { 'content-type': 'application/json' };
const form = { 'content-type': 'application/x-www-form-urlencoded' };
const req = (body: Buffer | string, headers: Record<string, string>, query: Record<string, string> = {}, now = NOW): InboundRequest => ({
  rawBody: Buffer.isBuffer(body) ? body : Buffer.from(body), headers, query, now,
});
const rejected = (fn: () => unknown, code: string) => assert.throws(fn, (e: unknown) => e instanceof InboundRejected && e.status === 400 && e.code === code);

describe('moosend automation webhooks', () => {
  it('an unsubscribe (JSON): the subscriber, the campaign, the time, and the key the sweep uses too', () => {
    const [p] = parseMoosend(req(fixture('automation-unsubscribed.json'), json, { event: 'unsubscribed' }), 'moosend');
    assert.deepEqual(p, {
      dedupKey: unsubscribeKey('moosend', 'grace.hopper@example.com'),
      event: {
        type: 'engagement',
        kind: 'email.unsubscribed',
        email: 'grace.hopper@example.com',
        occurredAt: 1773480600000,
        vendorEventId: p!.event.vendorEventId,
        source: 'moosend',
        subject: 'Your proposal from Acme',
        campaign: 'Kommo nurture',
        detail: 'list 51c0a1f2-0c4e-4a57-9a43-7d1e2b3c4d5e',
      },
    });
    // One key per person, shared with the sweep; the address itself is not in it (keys outlive erase).
    assert.equal(p!.dedupKey, unsubscribeKey('moosend', 'grace.hopper@example.com'));
    assert.match(p!.dedupKey, /^moosend:moosend:unsubscribed:[0-9a-f]{24}$/);
  });

  it('the same unsubscribe as a form gives the same event key', () => {
    const [p] = parseMoosend(req(fixture('automation-unsubscribed.form.txt'), form, { event: 'unsubscribed' }), 'moosend');
    assert.equal(p!.dedupKey, unsubscribeKey('moosend', 'grace.hopper@example.com'));
    assert.equal(p!.event.subject, 'Your proposal from Acme');
    assert.equal(p!.event.occurredAt, 1773480600000);
  });

  it('a click keeps its link; the key is per event, not per person', () => {
    const [p] = parseMoosend(req(fixture('automation-clicked.json'), json, { event: 'clicked' }), 'mo');
    assert.equal(p!.event.kind, 'email.clicked');
    assert.equal(p!.event.link, 'https://acme.example/pricing');
    assert.equal(p!.event.occurredAt, 1773480660000);
    assert.match(p!.dedupKey, /^moosend:mo:clicked:[0-9a-f]{24}:[0-9a-f]{24}$/);
    const again = parseMoosend(req(fixture('automation-clicked.json'), json, { event: 'clicked' }, NOW + 3_600_000), 'mo');
    assert.equal(again[0]!.dedupKey, p!.dedupKey, 'a re-sent body (it carries its time) is the same event');
  });

  it('bodies without a time of their own: identical ones a minute apart are two events', () => {
    const body = JSON.stringify({ Email: 'a@example.com', Subject: 'Hi' });
    const at = (now: number) => parseMoosend(req(body, json, { event: 'opened' }, now), 'mo')[0]!.dedupKey;
    assert.equal(at(NOW), at(NOW + 10_000));
    assert.notEqual(at(NOW), at(NOW + 60_000));
    const withId = JSON.stringify({ Email: 'a@example.com', EventId: 'evt-1' });
    assert.match(parseMoosend(req(withId, json, { event: 'opened' }), 'mo')[0]!.dedupKey, /^moosend:mo:opened:[0-9a-f]{24}:evt-1$/);
  });

  it('finds the email under other usual keys, nested, in bracket forms, and prefers the subscriber to a sender', () => {
    const email = (body: Buffer | string, headers: Record<string, string>, query: Record<string, string> = { event: 'opened' }) => parseMoosend(req(body, headers, query), 'mo')[0]!.event.email;
    assert.equal(email(fixture('flat-subscriber.json'), json), 'andreas@example.com');
    assert.equal(email(fixture('sender-and-subscriber.json'), json), 'maria@example.com');
    assert.equal(email(fixture('bracket-form.txt'), form), 'maria@example.com');
    assert.equal(email(JSON.stringify({ data: { contact: { info: 'x', address: 'only.one@example.com' } } }), json), 'only.one@example.com', 'the one address in the body');
    assert.equal(email('Email=x%40example.com', {}), 'x@example.com', 'an unlabelled form');
  });

  it('takes the kind from the body when the URL does not name it', () => {
    const [p] = parseMoosend(req(fixture('event-type-in-body.json'), json), 'mo');
    assert.equal(p!.event.kind, 'email.unsubscribed');
    assert.equal(p!.event.email, 'andreas@example.com');
    assert.equal(p!.event.occurredAt, Date.UTC(2026, 2, 14, 9, 30));
  });

  it('accepts the usual spellings of each kind', () => {
    const kind = (event: string) => parseMoosend(req('{"Email":"a@example.com"}', json, { event }), 'mo')[0]!.event.kind;
    assert.equal(kind('Unsubscribe'), 'email.unsubscribed');
    assert.equal(kind('opt-out'), 'email.unsubscribed');
    assert.equal(kind('OPEN'), 'email.opened');
    assert.equal(kind('link_clicked'), 'email.clicked');
    assert.equal(kind('hard-bounce'), 'email.bounced');
    assert.equal(kind('spam'), 'email.spammed');
    assert.equal(kind('subscribed'), 'email.subscribed');
  });

  it('keeps a bounce reason as the detail', () => {
    const [p] = parseMoosend(req('{"Email":"a@example.com","Reason":"550 mailbox unavailable"}', json, { event: 'bounced' }), 'mo');
    assert.equal(p!.event.detail, '550 mailbox unavailable');
  });

  it('reads an array of events', () => {
    const events = parseMoosend(req('[{"Email":"a@example.com"},{"Email":"b@example.com"}]', json, { event: 'opened' }), 'mo');
    assert.deepEqual(events.map((e) => e.event.email), ['a@example.com', 'b@example.com']);
  });

  it('refuses, with a 400 the user sees when testing the automation, what it cannot use', () => {
    rejected(() => parseMoosend(req('<not json>', {}, { event: 'opened' }), 'mo'), 'invalid_body');
    rejected(() => parseMoosend(req('{"Email":', json, { event: 'opened' }), 'mo'), 'invalid_body');
    rejected(() => parseMoosend(req('{"Email":"a@example.com"}', json), 'mo'), 'missing_event');
    rejected(() => parseMoosend(req('{"Email":"a@example.com"}', json, { event: 'teleported' }), 'mo'), 'unknown_event');
    rejected(() => parseMoosend(req('{"Name":"nobody"}', json, { event: 'opened' }), 'mo'), 'no_email');
    rejected(() => parseMoosend(req('{"A":"a@example.com","B":"b@example.com"}', json, { event: 'opened' }), 'mo'), 'no_email');
  });

  it('has no signature to check: the secret path is the guard', () => {
    assert.deepEqual(moosend.inbound.auth, { kind: 'path-secret' });
    assert.doesNotThrow(() => moosend.inbound.verify(req('{}', json), { apiKey: 'k', baseUrl: 'https://api.moosend.com/v3', doubleOptIn: false, unsubscribeSweep: 0 }));
  });
});
