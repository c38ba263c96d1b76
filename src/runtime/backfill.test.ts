import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import type { LeadListFilter } from '../kommo/client.js';
import { leadSchema, type KommoLead } from '../kommo/schemas.js';
import { KommoApiError } from '../kommo/transport.js';
import type { EnrichedLead } from '../model/index.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';
import { MappingError } from '../sync/mapping.js';
import {
  activeBackfill,
  BackfillConflict,
  Backfiller,
  describeFilter,
  lastBackfill,
  requestBackfill,
  requestPause,
  type BackfillAccount,
} from './backfill.js';

const lead = (id: number, withContact = true): KommoLead => leadSchema.parse({
  id, name: `Deal ${id}`, price: 0, status_id: 11, pipeline_id: 1, created_at: 1, updated_at: 2, closed_at: null, loss_reason_id: null,
  _embedded: { contacts: withContact ? [{ id: id + 1_000_000, is_main: true }] : [] },
});

function enriched(l: KommoLead): EnrichedLead {
  const stage = { id: l.status_id, name: 'Qualified', key: 'qualified', pipelineId: l.pipeline_id, pipeline: 'Sales', type: 'open' as const };
  return {
    account: { name: 'acme', subdomain: 'acme', currency: null },
    event: { kind: 'lead.backfill', at: l.updated_at * 1000 },
    lead: { id: l.id, name: l.name, price: 0, pipelineId: l.pipeline_id, statusId: l.status_id, responsibleUserId: 0, createdAt: 0, updatedAt: 0, closedAt: null, wonAt: null, lostAt: null, lossReason: null, tags: [], fields: {}, deleted: false },
    contact: l._embedded.contacts.length ? { id: l.id + 1_000_000, name: 'P', firstName: 'P', lastName: '', email: `p${l.id}@example.com`, phone: '', tags: [], fields: {} } : null,
    company: null,
    pipeline: { id: 1, name: 'Sales' },
    stage,
    previousStage: null,
    responsible: { id: 0, name: null, email: null },
  };
}

/** A fake account over `n` leads (ids 1..n), recording the pages read. */
function account(n: number, over: Partial<BackfillAccount> = {}): BackfillAccount & { reads: Array<{ page: number; withContacts: boolean }>; leads: KommoLead[] } {
  const leads = Array.from({ length: n }, (_, i) => lead(i + 1, (i + 1) % 10 !== 7));
  const reads: Array<{ page: number; withContacts: boolean }> = [];
  return {
    name: 'acme',
    subdomain: 'acme',
    leads,
    reads,
    paused: () => null,
    async listPage(_f: LeadListFilter, page: number, withContacts: boolean) {
      reads.push({ page, withContacts });
      return leads.slice((page - 1) * 250, page * 250);
    },
    async enrich(list) {
      return list.map(enriched);
    },
    destinations: [{
      name: 'cio',
      async plan(e, dedupKey) {
        if (!e.contact) return { ops: [], skipped: 'no contact' };
        return { ops: [{ kind: 'upsertPerson', person: { email: e.contact.email, id: dedupKey }, attributes: {}, timestamp: 0 }] };
      },
    }],
    async remember() {},
    ...over,
  };
}

let store: Store;
before(async () => {
  store = await openStore('sqlite::memory:');
});
after(async () => {
  await store.close();
});

async function fresh(): Promise<void> {
  for (const k of ['backfill-active:acme', 'backfill-pause:acme', 'backfill-last:acme']) await store.kvDelete(k);
}

/** Runs steps until `until` holds or nothing moves; delivers queued jobs when `deliver` is set. */
async function drive(b: Backfiller, until: () => Promise<boolean>, opts: { deliver?: boolean; max?: number } = {}): Promise<number> {
  let steps = 0;
  for (; steps < (opts.max ?? 1000); steps++) {
    if (await until()) return steps;
    const n = await b.step();
    if (opts.deliver) {
      const jobs = await store.claimJobs({ destination: 'acme/cio', limit: 1000, leaseMs: 60_000, workerId: 'w', now: Date.now() });
      await store.completeJobs('w', jobs.map((j) => ({ id: j.id, outcome: 'done' as const })));
    }
    if (n === 0 && !opts.deliver) break;
  }
  return steps;
}

describe('Backfiller', () => {
  it('counts the leads with a page search of few requests, whatever their number', async () => {
    for (const n of [0, 1, 249, 250, 251, 1000, 12_345]) {
      await fresh();
      const acct = account(n);
      // Without delivering, at most two pages get queued: counting comes first.
      const b = new Backfiller({ store, log: pino({ level: 'silent' }), accounts: new Map([['acme', acct]]), now: () => Date.now() + n });
      await requestBackfill(store, 'acme', { since: n });
      await drive(b, async () => (await lastBackfill(store, 'acme'))?.total !== null);
      const s = (await lastBackfill(store, 'acme'))!;
      assert.equal(s.total, n, `${n} leads`);
      const probes = acct.reads.filter((r) => !r.withContacts).length;
      const pages = Math.max(1, Math.ceil(n / 250));
      assert.ok(probes <= 2 * Math.ceil(Math.log2(pages + 1)) + 2, `${n} leads: ${probes} probes`);
    }
  });

  it('reads every page once, queues one job per lead with a contact, commits the cursor with them, and finishes on a short page', async () => {
    await fresh();
    const acct = account(1_100);
    const b = new Backfiller({ store, log: pino({ level: 'silent' }), accounts: new Map([['acme', acct]]) });
    await requestBackfill(store, 'acme', {});
    await drive(b, async () => (await lastBackfill(store, 'acme'))?.status === 'done', { deliver: true });
    const s = (await lastBackfill(store, 'acme'))!;
    assert.deepEqual([s.status, s.leads, s.synced, s.skipped, s.jobs, s.page], ['done', 1_100, 990, 110, 990, 5]);
    assert.deepEqual(acct.reads.filter((r) => r.withContacts).map((r) => r.page), [1, 2, 3, 4, 5]);
    assert.equal(await activeBackfill(store, 'acme'), null, 'nothing active once done');
    // messageIds derive from the run: the job's key names the lead and the run.
    const [job] = await store.listJobs({ orderingKey: 'lead:1' });
    assert.match(JSON.stringify(job?.payload), new RegExp(`kommo:acme:lead:1:backfill:${s.run}`));
    const again = await requestBackfill(store, 'acme', {});
    assert.equal(again.alreadyDone, true);
  });

  it('keeps at most two pages undelivered: a third waits for the deliveries', async () => {
    await fresh();
    const acct = account(2_000);
    const b = new Backfiller({ store, log: pino({ level: 'silent' }), accounts: new Map([['acme', acct]]) });
    await requestBackfill(store, 'acme', { since: 1 });
    await drive(b, async () => false, { max: 50 });
    const s = (await lastBackfill(store, 'acme'))!;
    assert.equal(s.page, 2, 'two pages queued, then it waits');
    assert.equal(s.waiting, 'waiting for deliveries to acme/cio');
    await drive(b, async () => (await lastBackfill(store, 'acme'))?.status === 'done', { deliver: true });
    assert.equal((await lastBackfill(store, 'acme'))?.leads, 2_000);
  });

  it('pauses after the page under way when asked, and the same request resumes the same run at the next page', async () => {
    await fresh();
    const acct = account(1_000);
    const b = new Backfiller({ store, log: pino({ level: 'silent' }), accounts: new Map([['acme', acct]]) });
    const { state } = await requestBackfill(store, 'acme', { since: 2 });
    await drive(b, async () => ((await lastBackfill(store, 'acme'))?.page ?? 0) >= 2, { deliver: true });
    await requestPause(store, 'acme', state.key);
    await b.step();
    const paused = (await lastBackfill(store, 'acme'))!;
    assert.equal(paused.status, 'paused');
    assert.equal(await activeBackfill(store, 'acme'), null);
    assert.equal(await b.step(), 0, 'nothing read while paused');
    const resumed = await requestBackfill(store, 'acme', { since: 2 });
    assert.equal(resumed.resumed, true);
    assert.equal(resumed.state.run, state.run, 'the same run: the same messageIds');
    await drive(b, async () => (await lastBackfill(store, 'acme'))?.status === 'done', { deliver: true });
    const pages = acct.reads.filter((r) => r.withContacts).map((r) => r.page);
    assert.deepEqual(pages, [...new Set(pages)], 'no page read twice');
  });

  it('skips a lead it already did when pages shift, refuses a second filter while one runs', async () => {
    await fresh();
    const acct = account(600);
    const b = new Backfiller({ store, log: pino({ level: 'silent' }), accounts: new Map([['acme', acct]]) });
    await requestBackfill(store, 'acme', { since: 3 });
    await drive(b, async () => ((await lastBackfill(store, 'acme'))?.page ?? 0) >= 1, { deliver: true });
    // A new lead joins the filter before the ones read: everything moves one place on.
    acct.leads.unshift(lead(0));
    await assert.rejects(requestBackfill(store, 'acme', { since: 4 }), (err: unknown) => err instanceof BackfillConflict && /still running/.test(err.message));
    await drive(b, async () => (await lastBackfill(store, 'acme'))?.status === 'done', { deliver: true });
    const s = (await lastBackfill(store, 'acme'))!;
    assert.equal(s.leads, 600, 'lead 250 came round again and was skipped');
    assert.equal((await store.listJobs({ orderingKey: 'lead:250', limit: 10 })).filter((j) => JSON.stringify(j.payload).includes(s.run)).length, 1);
  });

  it('waits and says why when Kommo fails; stops with the reason when a mapping fails', async () => {
    await fresh();
    let fail: Error | null = new KommoApiError({ status: 503, detail: 'Service Unavailable', path: '/api/v4/leads', retryAfterMs: 1 });
    const acct = account(10, {
      async listPage(_f, page) {
        if (fail) throw fail;
        return page === 1 ? Array.from({ length: 10 }, (_, i) => lead(i + 1)) : [];
      },
    });
    let t = Date.now();
    const b = new Backfiller({ store, log: pino({ level: 'silent' }), accounts: new Map([['acme', acct]]), now: () => t });
    await requestBackfill(store, 'acme', { since: 5 });
    assert.equal(await b.step(), 0);
    assert.match((await lastBackfill(store, 'acme'))!.waiting ?? '', /503 Service Unavailable; trying again in 1 s/);
    fail = new MappingError('accounts.acme.destinations.cio.attributes.x: boom', 'accounts.acme.destinations.cio.attributes.x');
    t += 10;
    await b.step();
    const s = (await lastBackfill(store, 'acme'))!;
    assert.equal(s.status, 'failed');
    assert.match(s.error ?? '', /boom/);
    assert.equal(describeFilter(s.filter), 'leads updated since 1970-01-01T00:00:05Z');
  });
});
