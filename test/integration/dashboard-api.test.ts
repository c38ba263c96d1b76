/**
 * The dashboard's HTTP contract, over real HTTP on the real service: who gets in (401 without
 * credentials, 401 for a token in the URL, the login cookie, Bearer), CSRF on actions, the security
 * headers, the loopback-only open mode, the one-time login link, and no secret in any answer. And
 * what the overview says of the long-running operations: a backfill and the reconciliation.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { parse, stringify } from 'yaml';
import { parseConfigText } from '../../src/config/load.js';
import { startWorld, type World } from '../../src/demo/world.js';
import { startService, type Service } from '../../src/runtime/service.js';
import { lastBackfill, requestBackfill } from '../../src/runtime/backfill.js';
import { secretValues } from '../../src/runtime/dashboard.js';
import { parseStats, sweepStatsKey } from '../../src/runtime/sweeper.js';
import { configSchema, destinationCommon } from '../../src/config/schema.js';
import { getDestination } from '../../src/destinations/index.js';
import type { AccountOperations, CheckResponse, EventDetailResponse, EventsResponse, FailuresResponse, LeadMatch, OverviewResponse, SessionResponse, TimelineResponse } from '../../src/http/admin-types.js';
import { waitFor } from './wait.js';

const TOKEN = 'adm1n-T0ken-for-the-dashboard-test-7f3k9';

/** Every secret the config holds: none may appear in any answer. */
function allSecrets(world: World): string[] {
  const l = world.loaded;
  return [
    ...secretValues(l.config, configSchema),
    ...Object.values(l.destinations).flat().flatMap((d) => [...secretValues(d.common, destinationCommon), ...secretValues(d.settings, getDestination(d.type)!.settings)]),
  ];
}

describe('dashboard API', () => {
  let world: World;
  let service: Service;
  let dir: string;
  let base: string;
  let cookie = '';
  let csrf = '';

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ks-dash-api-'));
    world = await startWorld({ store: `sqlite:${join(dir, 'ks.db')}`, overrides: { server: { port: 0, host: '127.0.0.1', adminToken: TOKEN } } });
    service = await startService({ loaded: world.loaded, log: pino({ level: 'silent' }), intake: true, work: true, port: 0, host: '127.0.0.1' });
    world.subscribe(service.url!);
    base = service.url!;
    // Some traffic, so the answers have content: a lead with a contact, a stage change, an open.
    const k = world.kommo;
    const c = k.createContact({ name: 'Secret Tester', email: 'secret.tester@example.com' });
    const lead = k.createLead({ name: 'API deal', price: 10, contactIds: [c.id] });
    await k.flushWebhooks();
    k.moveLead(lead.id, k.status('Proposal sent').id);
    await k.flushWebhooks();
    const [name, v] = [...world.vendors][0]!;
    await v.sim.sendEngagement?.(world.vendorWebhookUrl(base, name), 'opened', 'secret.tester@example.com');
    await v.sim.sendEngagement?.(world.vendorWebhookUrl(base, name), 'opened', 'nobody.known@example.com');
    await waitFor(async () => (await service.store.stats(Date.now())).jobs.done >= 3, 'deliveries done');
  });
  after(async () => {
    await service?.close();
    await world?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const fetchRaw = (path: string, init: RequestInit = {}) => fetch(`${base}${path}`, { redirect: 'manual', ...init });
  const bearer = { authorization: `Bearer ${TOKEN}` };

  it('refuses every API route without credentials (401) and sends the page to the login form', async () => {
    for (const path of ['/api/overview', '/api/events', '/api/events/1', '/api/failures', '/api/config', '/api/leads?q=1', '/api/leads/acme/1', '/api/status', '/api/jobs', '/api/deliveries', '/api/session', '/api/stream']) {
      const res = await fetchRaw(path);
      assert.equal(res.status, 401, path);
      assert.equal((await res.json() as { error: string }).error, 'unauthorized');
    }
    for (const path of ['/api/replay', '/api/discard', '/api/events/replay', '/api/check']) {
      assert.equal((await fetchRaw(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })).status, 401, path);
    }
    const page = await fetchRaw('/');
    assert.equal(page.status, 303);
    assert.equal(page.headers.get('location'), '/login');
  });

  it('refuses a token in the query string, even the right one (401)', async () => {
    for (const path of [`/api/overview?token=${TOKEN}`, `/?token=${TOKEN}`, `/api/events?token=${TOKEN}`]) {
      const res = await fetchRaw(path);
      assert.equal(res.status, 401, path);
      assert.doesNotMatch(await res.text(), new RegExp(TOKEN));
    }
    // ... also with valid credentials besides: a link with the token must never work.
    assert.equal((await fetchRaw(`/api/overview?token=${TOKEN}`, { headers: bearer })).status, 401);
  });

  it('accepts the Bearer token; a wrong one gets 401', async () => {
    assert.equal((await fetchRaw('/api/overview', { headers: bearer })).status, 200);
    assert.equal((await fetchRaw('/api/overview', { headers: { authorization: 'Bearer nope' } })).status, 401);
  });

  it('sends the security headers on pages and API answers', async () => {
    for (const [path, headers] of [['/login', {}], ['/api/overview', bearer], ['/assets/app.js', {}], ['/api/events', {}]] as const) {
      const res = await fetchRaw(path, { headers });
      const csp = res.headers.get('content-security-policy') ?? '';
      assert.match(csp, /frame-ancestors 'none'/, path);
      assert.match(csp, /script-src 'self'(;|$)/, path);
      assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/, path);
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff', path);
      assert.equal(res.headers.get('referrer-policy'), 'no-referrer', path);
      assert.equal(res.headers.get('x-frame-options'), 'DENY', path);
    }
    const html = await (await fetchRaw('/login')).text();
    assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/, 'no inline script');
  });

  it('logs in with the form: a wrong token goes back to the form, the right one sets an HttpOnly SameSite cookie', async () => {
    const wrong = await fetchRaw('/login', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'token=wrong' });
    assert.equal(wrong.status, 303);
    assert.equal(wrong.headers.get('location'), '/login?failed');
    assert.equal(wrong.headers.get('set-cookie'), null);
    const right = await fetchRaw('/login', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `token=${encodeURIComponent(TOKEN)}` });
    assert.equal(right.status, 303);
    assert.equal(right.headers.get('location'), '/');
    const set = right.headers.get('set-cookie') ?? '';
    assert.match(set, /^ks_session=v1\./);
    assert.match(set, /HttpOnly/);
    assert.match(set, /SameSite=Strict/);
    assert.doesNotMatch(set, new RegExp(TOKEN), 'the cookie is not the token');
    cookie = set.split(';')[0]!;
    const s = await fetchRaw('/api/session', { headers: { cookie } });
    assert.equal(s.status, 200);
    csrf = (await s.json() as SessionResponse).csrf;
    assert.equal((await fetchRaw('/', { headers: { cookie } })).status, 200);
    assert.equal((await fetchRaw('/api/overview', { headers: { cookie: `${cookie}x` } })).status, 401, 'a tampered cookie is refused');
  });

  it('actions need the CSRF token with the cookie, and a same-origin Origin', async () => {
    const json = { 'content-type': 'application/json' };
    const without = await fetchRaw('/api/replay', { method: 'POST', headers: { ...json, cookie }, body: JSON.stringify({ ids: [1] }) });
    assert.equal(without.status, 403);
    const wrong = await fetchRaw('/api/replay', { method: 'POST', headers: { ...json, cookie, 'x-csrf-token': 'x'.repeat(csrf.length) }, body: JSON.stringify({ ids: [1] }) });
    assert.equal(wrong.status, 403);
    const ok = await fetchRaw('/api/replay', { method: 'POST', headers: { ...json, cookie, 'x-csrf-token': csrf }, body: JSON.stringify({ ids: [999_999] }) });
    assert.equal(ok.status, 200);
    const crossSite = await fetchRaw('/api/replay', { method: 'POST', headers: { ...json, cookie, 'x-csrf-token': csrf, origin: 'https://evil.example' }, body: JSON.stringify({ ids: [1] }) });
    assert.equal(crossSite.status, 403);
    assert.equal((await fetchRaw('/api/replay', { method: 'POST', headers: { ...json, ...bearer }, body: JSON.stringify({ ids: [999_999] }) })).status, 200, 'Bearer needs no CSRF token');
  });

  it('a one-time login link works once and leaves no code in the address bar', async () => {
    const link = service.loginLink();
    assert.ok(link);
    const path = link.slice(base.length);
    const first = await fetchRaw(path);
    assert.equal(first.status, 303);
    assert.equal(first.headers.get('location'), '/');
    assert.match(first.headers.get('set-cookie') ?? '', /^ks_session=/);
    const again = await fetchRaw(path);
    assert.equal(again.headers.get('location'), '/login?failed');
    assert.equal(again.headers.get('set-cookie'), null);
  });

  it('events are listed and filtered; the unknown email is among the events that could not be routed', async () => {
    await waitFor(async () => (await (await fetchRaw('/api/events?status=unrouted', { headers: bearer })).json() as EventsResponse).events.length === 1, 'the unmatched open listed');
    const all = await (await fetchRaw('/api/events', { headers: bearer })).json() as EventsResponse;
    assert.ok(all.events.length >= 4);
    const opened = await (await fetchRaw('/api/events?kind=email.opened&email=secret.tester@example.com', { headers: bearer })).json() as EventsResponse;
    assert.equal(opened.events.length, 1);
    assert.ok(opened.events[0]!.leadId !== null, 'matched to the lead');
    const failures = await (await fetchRaw('/api/failures', { headers: bearer })).json() as FailuresResponse;
    assert.equal(failures.unrouted[0]?.email, 'nobody.known@example.com');
    assert.match(failures.unrouted[0]?.note ?? '', /no Kommo lead has this email/);
    assert.equal((await fetchRaw('/api/events?status=bogus', { headers: bearer })).status, 400);
  });

  it('dead letters are grouped; a group is discarded with its reason; test connection answers', async () => {
    const [name, v] = [...world.vendors][0]!;
    const k = world.kommo;
    v.sim.faults.outage({ status: 400 });
    try {
      const c = k.createContact({ name: 'Dead Letter', email: 'dead.letter@example.com' });
      k.createLead({ name: 'Doomed', price: 1, contactIds: [c.id] });
      await k.flushWebhooks();
      await waitFor(async () => ((await service.store.stats(Date.now())).deadByDestination[`acme/${name}`] ?? 0) >= 1, 'a dead letter');
    } finally {
      v.sim.faults.outage(null);
    }
    const post = (path: string, body: unknown) => fetchRaw(path, { method: 'POST', headers: { ...bearer, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const failures = await (await fetchRaw('/api/failures', { headers: bearer })).json() as FailuresResponse;
    const group = failures.groups.find((g) => g.destination === `acme/${name}`)!;
    assert.match(group.reason, /HTTP 400/);
    assert.equal((await post('/api/discard', { group: { destination: group.destination, reason: group.reason } })).status, 400, 'a discard needs a reason');
    const discarded = await (await post('/api/discard', { group: { destination: group.destination, reason: group.reason }, reason: 'test data' })).json() as { discarded: number };
    assert.equal(discarded.discarded, group.count);
    const job = await service.store.getJob(group.jobs[0]!.id);
    assert.equal(job?.state, 'done');
    assert.equal(job?.discardReason, 'test data');
    const detail = await (await fetchRaw(`/api/events/${job!.inboxId}`, { headers: bearer })).json() as EventDetailResponse;
    assert.equal(detail.jobs.find((j) => j.id === job!.id)?.state, 'discarded');
    const check = await (await post('/api/check', { destination: `acme/${name}` })).json() as CheckResponse;
    assert.equal(check.ok, true, check.message);
    assert.equal(check.message, 'credentials accepted');
    // A vendor that answers any key (Segment) is not said to have accepted it.
    for (const [other] of world.vendors) {
      const unverifiable = getDestination(other)?.credentialsUnverifiable;
      if (!unverifiable) continue;
      const said = await (await post('/api/check', { destination: `acme/${other}` })).json() as CheckResponse;
      assert.equal(said.ok, true, said.message);
      assert.match(said.message, /cannot be verified/);
    }
    assert.equal((await post('/api/check', { destination: 'acme/nope' })).status, 404);
  });

  it('finds a lead by name through Kommo\'s search, and by email through the local index', async () => {
    const byName = await (await fetchRaw('/api/leads?q=API%20deal', { headers: bearer })).json() as { leads: LeadMatch[] };
    assert.equal(byName.leads.length, 1);
    assert.equal(byName.leads[0]!.from, 'kommo');
    assert.equal(byName.leads[0]!.name, 'API deal');
    const byEmail = await (await fetchRaw('/api/leads?q=Secret.Tester@example.com', { headers: bearer })).json() as { leads: LeadMatch[] };
    assert.deepEqual(byEmail.leads.map((l) => l.leadId), [byName.leads[0]!.leadId]);
  });

  it('the overview tells that no backfill ran and the reconciliation has not run yet (kommo.reconcile: 10 min)', async () => {
    const o = await (await fetchRaw('/api/overview', { headers: bearer })).json() as OverviewResponse;
    assert.deepEqual(o.operations, [{ account: 'acme', backfill: null, reconcile: { everyMs: 600_000, last: null } }]);
  });

  it('an outage opens the destination\'s circuit breaker, and the overview says so in words', async () => {
    const [name, v] = [...world.vendors][0]!;
    const k = world.kommo;
    v.sim.faults.outage({ status: 503 });
    try {
      const c = k.createContact({ name: 'Outage Person', email: 'outage.person@example.com' });
      k.createLead({ name: 'During the outage', price: 1, contactIds: [c.id] });
      await k.flushWebhooks();
      await waitFor(async () => {
        const o = await (await fetchRaw('/api/overview', { headers: bearer })).json() as OverviewResponse;
        const d = o.destinations.find((x) => x.key === `acme/${name}`)!;
        return d.breaker !== null && d.status === 'error' && d.reasons.some((r) => /failing since .*HTTP 503/.test(r)) && o.problems.some((p) => p.includes('failing since'));
      }, 'the breaker in the overview');
    } finally {
      v.sim.faults.outage(null);
    }
  });

  it('no secret appears in any page or API answer', async () => {
    const secrets = [...allSecrets(world), TOKEN].filter((s) => s.length >= 6);
    assert.ok(secrets.length >= 5, `found ${secrets.length} secrets to look for`);
    const events = await (await fetchRaw('/api/events', { headers: bearer })).json() as EventsResponse;
    const leadId = events.events.find((e) => e.leadId !== null)!.leadId!;
    const paths = [
      '/', '/login', '/assets/app.js', '/assets/app.css', '/api/session', '/api/overview', '/api/status', '/api/events', '/api/failures', '/api/config',
      '/api/jobs', '/api/deliveries', `/api/leads?q=${leadId}`, `/api/leads/acme/${leadId}`, '/api/leads?q=secret.tester@example.com',
      ...events.events.map((e) => `/api/events/${e.id}`),
    ];
    for (const path of paths) {
      const res = await fetchRaw(path, { headers: path === '/login' ? {} : { cookie } });
      assert.equal(res.status, 200, path);
      const text = await res.text();
      for (const s of secrets) assert.ok(!text.includes(s), `${path} contains a secret (${s.slice(0, 3)}…)`);
    }
    const config = await (await fetchRaw('/api/config', { headers: bearer })).text();
    assert.match(config, /\*\*\*\*\*\*\*\*/, 'secrets are shown masked');
    assert.match(config, /webhooks\/acme\/kommo\/<secret>/, 'webhook URLs without their secret');
  });
});

describe('dashboard API: backfill and reconciliation in the overview', () => {
  const LEADS = 600;
  let world: World;
  let service: Service;
  let base: string;
  const headers = { authorization: `Bearer ${TOKEN}` };
  const overview = async (): Promise<OverviewResponse> => {
    const res = await fetch(`${base}/api/overview`, { headers });
    assert.equal(res.status, 200);
    return await res.json() as OverviewResponse;
  };
  const ops = async (): Promise<AccountOperations> => {
    const o = (await overview()).operations;
    assert.ok(o, 'the overview carries the operations');
    return o.find((x) => x.account === world.account)!;
  };

  before(async () => {
    world = await startWorld({ destinations: ['customerio'], overrides: { server: { port: 0, host: '127.0.0.1', adminToken: TOKEN } } });
    // Existing leads, created before kommo-sync hears of anything: only a backfill syncs them.
    const k = world.kommo;
    for (let i = 0; i < LEADS; i++) {
      const c = k.createContact({ name: `Old ${i}`, email: `old${i}@ops.example` });
      k.createLead({ name: `Old deal ${i}`, contactIds: [c.id] });
    }
    const cfg = parse(world.yaml) as { accounts: Record<string, { kommo: Record<string, unknown> }> };
    cfg.accounts[world.account]!.kommo.reconcile = '2s';
    const loaded = parseConfigText(stringify(cfg), 'dashboard-ops.yaml', {});
    service = await startService({ loaded, log: pino({ level: 'silent' }), intake: true, work: true, port: 0, host: '127.0.0.1' });
    world.subscribe(service.url!);
    base = service.url!;
  });
  after(async () => {
    await service?.close();
    await world?.close();
  });

  it('shows the account\'s backfill until it is done, every lead synced; the live stream carries it too', { timeout: 120_000 }, async () => {
    await requestBackfill(service.store, world.account, {});
    const seen = new Set<string>();
    await waitFor(async () => {
      const b = (await ops()).backfill;
      if (b) seen.add(b.status);
      return b?.status === 'done';
    }, 'the backfill done in the overview', 90_000);
    const b = (await ops()).backfill!;
    assert.equal(b.filter, 'all leads');
    assert.equal(b.total, LEADS);
    assert.equal(b.synced, b.total, 'synced == total');
    assert.equal(b.leads, LEADS);
    assert.equal(b.skipped, 0);
    assert.ok(b.jobs >= LEADS, `${b.jobs} jobs queued`);
    assert.equal(b.error, null);
    assert.equal(b.waiting, null);
    assert.ok(b.finishedAt !== null && b.finishedAt >= b.startedAt && b.updatedAt >= b.startedAt);
    // The same as the store holds (what `status` prints).
    const stored = (await lastBackfill(service.store, world.account))!;
    assert.deepEqual(
      { total: b.total, synced: b.synced, jobs: b.jobs, startedAt: b.startedAt, finishedAt: b.finishedAt },
      { total: stored.total, synced: stored.synced, jobs: stored.jobs, startedAt: stored.startedAt, finishedAt: stored.finishedAt },
    );

    // A backfilled lead's timeline shows what the backfill sent, though no webhook event made it.
    const leadId = [...world.kommo.leads.keys()][0]!;
    await waitFor(async () => (await service.store.stats(Date.now())).jobs.pending === 0, 'backfill jobs delivered', 60_000);
    const timeline = await (await fetch(`${base}/api/leads/${world.account}/${leadId}`, { headers })).json() as TimelineResponse;
    const sent = timeline.entries.filter((e) => e.type === 'out' && e.eventId === null);
    assert.ok(sent.length > 0, `the backfill's deliveries on the timeline: ${JSON.stringify(timeline.entries.map((e) => e.type))}`);
    assert.ok(sent.every((e) => e.type === 'out' && e.status === 'ok'));

    // The server-sent overview stream: its first event has the same backfill.
    const controller = new AbortController();
    const res = await fetch(`${base}/api/stream`, { headers, signal: controller.signal });
    const reader = res.body!.getReader();
    let text = '';
    while (!/event: overview\ndata: .*\n\n/.test(text)) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    controller.abort();
    const streamed = JSON.parse(/event: overview\ndata: (.*)\n\n/.exec(text)![1]!) as OverviewResponse;
    assert.deepEqual(streamed.operations?.find((x) => x.account === world.account)?.backfill, b);
  });

  it('shows the reconciliation\'s last run and counts the lead whose webhook Kommo dropped', { timeout: 60_000 }, async () => {
    // The first sweep may read the tail of the leads created before the start: count from there.
    await waitFor(async () => (await ops()).reconcile.last !== null, 'a first sweep', 20_000);
    const first = (await ops()).reconcile;
    assert.equal(first.everyMs, 2_000);
    const before = first.last!;
    const k = world.kommo;
    k.dropWebhooks(1, ['add_lead']);
    const c = k.createContact({ name: 'Missed Person', email: 'missed@ops.example' });
    k.createLead({ name: 'Missed deal', contactIds: [c.id] });
    await k.flushWebhooks();
    assert.equal(k.webhooksDropped.length, 1);
    await waitFor(async () => ((await ops()).reconcile.last?.totalFound ?? 0) > before.totalFound, 'the missed lead found by a sweep', 30_000);
    const r = (await ops()).reconcile.last!;
    assert.equal(r.totalFound, before.totalFound + 1, 'exactly the one dropped webhook');
    assert.ok(r.at > before.at, 'a later run');
    assert.ok(r.read >= r.found);
    const stored = parseStats(await service.store.kvGet(sweepStatsKey(world.account, 'kommo')))!;
    assert.ok(stored.totalFound === r.totalFound && stored.at >= r.at, 'what the store holds (at most one overview refresh later)');
  });
});

describe('dashboard without a token (demo, loopback)', () => {
  it('answers only to a loopback Host (no DNS rebinding), still with CSRF on actions', async () => {
    const world = await startWorld({});
    const service = await startService({ loaded: world.loaded, log: pino({ level: 'silent' }), intake: true, work: false, port: 0, host: '127.0.0.1', openDashboard: true });
    try {
      const base = service.url!;
      assert.equal((await fetch(`${base}/api/overview`)).status, 200);
      // fetch() will not send another Host: a raw request plays the DNS-rebound browser.
      const u = new URL(base);
      const status = await new Promise<number>((resolve, reject) => {
        request({ host: u.hostname, port: u.port, path: '/api/overview', headers: { host: `evil.example:${u.port}` } }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        }).on('error', reject).end();
      });
      assert.equal(status, 403);
      assert.equal((await fetch(`${base}/api/replay`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })).status, 403, 'no CSRF token');
      assert.equal(service.loginLink(), null, 'nothing to log in to');
    } finally {
      await service.close();
      await world.close();
    }
  });
});
