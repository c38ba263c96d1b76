import assert from 'node:assert/strict';
import { after, beforeEach, describe, it } from 'node:test';
import pino from 'pino';
import { openStore } from '../store/open.js';
import type { NewInboxEvent, Store } from '../store/store.js';
import type { CrmEvent } from '../model/index.js';
import { Router, type AccountRouting } from './router.js';

/** An account whose leads are all gone from Kommo: every routed event is marked routed, with no jobs. */
function account(log: { enriched: number[][]; echoes: Set<number> }): AccountRouting {
  return {
    name: 'acme',
    echoes: async (events) => events.map((e) => log.echoes.has(e.entityId)),
    enrich: async (items) => {
      log.enriched.push(items.map((i) => i.event.entityId));
      return items.map(() => null);
    },
    destinations: [],
    crmNote: async () => null,
    engagement: async (events) => events.map(() => ({ leadId: null, kommo: [], sync: [] })),
    remember: async () => {},
  };
}

function stageChange(leadId: number, receivedAt: number): NewInboxEvent {
  const event: CrmEvent = { type: 'crm', kind: 'lead.stage_changed', entityId: leadId, entityType: 'lead', updatedAt: 1_700_000_000 + leadId, entity: {} };
  return { account: 'acme', source: 'kommo', kind: event.kind, dedupKey: `lead:${leadId}`, payload: event, receivedAt };
}

describe('Router', () => {
  let store: Store;
  let calls: { enriched: number[][]; echoes: Set<number> };
  const router = (o: { pageSize?: number; lingerMs?: number } = {}) =>
    new Router({
      store,
      log: pino({ level: 'silent' }),
      accounts: new Map([['acme', account(calls)]]),
      batch: 500,
      leaseMs: 60_000,
      pollMs: 50,
      lingerMs: o.lingerMs ?? 60_000,
      pageSize: o.pageSize ?? 250,
    });

  beforeEach(async () => {
    store = await openStore('sqlite::memory:');
    await store.migrate();
    calls = { enriched: [], echoes: new Set() };
  });
  after(async () => {
    await store?.close();
  });

  it('does its idle work (the backfill) only when no inbox event waits, and goes on without pausing while it progresses', async () => {
    const order: string[] = [];
    let idleLeft = 3;
    const r = new Router({
      store,
      log: pino({ level: 'silent' }),
      accounts: new Map([['acme', account(calls)]]),
      batch: 500,
      leaseMs: 60_000,
      pollMs: 60_000,
      lingerMs: 0,
      idle: async () => {
        order.push('idle');
        return idleLeft-- > 0 ? 1 : 0;
      },
    });
    await store.insertInbox([stageChange(1, Date.now())]);
    assert.equal(await r.routeOnce(), 1);
    assert.deepEqual(order, [], 'a waiting live event goes first');
    assert.equal(await r.routeOnce(), 1);
    assert.deepEqual(order, ['idle']);
    await store.insertInbox([stageChange(2, Date.now())]);
    assert.equal(await r.routeOnce(), 1);
    assert.deepEqual(order, ['idle'], 'the live event again before more idle work');
    // The loop: idle work that progressed runs again at once (a poll of 60 s would stall it).
    r.start();
    const until = Date.now() + 5_000;
    while (order.length < 4 && Date.now() < until) await new Promise((res) => setTimeout(res, 10));
    await r.stop();
    assert.equal(order.length, 4);
  });

  it('routes whole pages and gives a young remainder back for the next round', async () => {
    const now = Date.now();
    await store.insertInbox(Array.from({ length: 270 }, (_, i) => stageChange(i + 1, now)));
    const r = router();
    assert.equal(await r.routeOnce(), 250);
    assert.equal(calls.enriched[0]!.length, 250);
    assert.equal((await store.stats(Date.now())).inboxPending, 20);
    // The 20 are not left leased: the next round takes them (a batch under one page is never held back).
    assert.equal(await r.routeOnce(), 20);
    assert.deepEqual(calls.enriched[1], Array.from({ length: 20 }, (_, i) => 251 + i));
    assert.equal((await store.stats(Date.now())).inboxPending, 0);
  });

  it('does not hold back a remainder that has already waited a linger', async () => {
    const old = Date.now() - 5_000;
    await store.insertInbox(Array.from({ length: 270 }, (_, i) => stageChange(i + 1, old)));
    assert.equal(await router({ lingerMs: 1_000 }).routeOnce(), 270);
    assert.equal((await store.stats(Date.now())).inboxPending, 0);
  });

  it('routes everything claimed when page alignment is off', async () => {
    await store.insertInbox(Array.from({ length: 270 }, (_, i) => stageChange(i + 1, Date.now())));
    assert.equal(await router({ pageSize: 0 }).routeOnce(), 270);
  });

  it('drops our own writes coming back (echoes) without enriching them', async () => {
    calls.echoes.add(2);
    await store.insertInbox([stageChange(1, Date.now()), stageChange(2, Date.now())]);
    assert.equal(await router().routeOnce(), 2);
    assert.deepEqual(calls.enriched, [[1]]);
    assert.equal((await store.stats(Date.now())).inboxPending, 0);
  });

  it('marks a stored event without a payload failed instead of stopping', async () => {
    await store.insertInbox([{ ...stageChange(1, Date.now()), payload: null }, stageChange(2, Date.now())]);
    assert.equal(await router().routeOnce(), 2);
    assert.deepEqual(calls.enriched, [[2]]);
    const stats = await store.stats(Date.now());
    assert.equal(stats.inboxPending, 0);
    assert.equal(stats.inboxFailed, 1);
  });

  it('records what it learned: the lead of an echo, why a gone lead or an unknown email produced nothing', async () => {
    const now = Date.now();
    calls.echoes.add(7);
    const open = { type: 'engagement', kind: 'email.opened', email: 'who@x.io', occurredAt: now, vendorEventId: 'v1', source: 'cio' };
    await store.insertInbox([stageChange(7, now), stageChange(8, now), { account: 'acme', source: 'cio', kind: 'email.opened', dedupKey: 'v1', payload: open, receivedAt: now }]);
    await router({ pageSize: 0 }).routeOnce();
    const rows = await store.listInbox({});
    const by = (kind: string, lead: number | null) => rows.find((r) => r.kind === kind && r.leadId === lead);
    assert.equal(by('lead.stage_changed', 7)?.note, null, 'an echo is no failure');
    assert.match(by('lead.stage_changed', 8)?.note ?? '', /lead 8 no longer exists in Kommo/);
    const unmatched = rows.find((r) => r.kind === 'email.opened')!;
    assert.equal(unmatched.email, 'who@x.io');
    assert.match(unmatched.note ?? '', /no Kommo lead has this email/);
    assert.deepEqual((await store.listInbox({ unrouted: true })).map((r) => r.id).sort(), [by('lead.stage_changed', 8)!.id, unmatched.id].sort());
  });
});
