/**
 * The real service against the Kommo simulator over real HTTP: webhook intake, dedup, bad input,
 * batched enrichment, the configured Kommo action (a note), and the rate limit.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { startWorld, type World } from '../../src/demo/world.js';
import { startService, type Service } from '../../src/runtime/service.js';
import { waitFor } from './wait.js';

const quiet = pino({ level: 'silent' });

describe('Kommo webhooks -> inbox -> router -> Kommo note', () => {
  let world: World;
  let service: Service;

  before(async () => {
    // Kommo only (no marketing destination): the configured action is the sync note on the lead.
    world = await startWorld({ destinations: [], overrides: { server: { port: 0, host: '127.0.0.1', bodyLimit: 64 * 1024 } } });
    service = await startService({ loaded: world.loaded, log: quiet, intake: true, work: true, port: 0, host: '127.0.0.1' });
    world.subscribe(service.url!);
  });
  after(async () => {
    await service?.close();
    await world?.close();
  });

  it('a stage change (sent as leads[status] and leads[update]) gives one batched fetch and one note', async () => {
    const k = world.kommo;
    const contact = k.createContact({ name: 'Ann Lee', email: 'ann@example.com' });
    const lead = k.createLead({ name: 'Ann deal', price: 5000, contactIds: [contact.id], fields: { Industry: 'SaaS' } });
    await k.flushWebhooks();
    await waitFor(async () => (await service.store.stats(Date.now())).inboxPending === 0, 'lead.created routed');
    k.resetLog();

    k.moveLead(lead.id, k.status('Proposal sent').id);
    await k.flushWebhooks();
    const kinds = k.webhooksSent.map((w) => w.event);
    assert.ok(kinds.includes('status_lead') && kinds.includes('update_lead'), 'the simulator sent leads[status] and leads[update]');

    await waitFor(() => [...k.notes.values()].some((n) => n.entity_id === lead.id), 'note written on the lead');
    const notes = [...k.notes.values()].filter((n) => n.entity_id === lead.id);
    assert.equal(notes.length, 1, 'one effect for the status/update pair');
    assert.match(String(notes[0]!.params.text), /Proposal sent/);

    const leadFetches = k.requests.filter((r) => r.method === 'GET' && r.path === '/api/v4/leads');
    assert.equal(leadFetches.length, 1, 'one batched lead fetch');
    assert.match(JSON.stringify(leadFetches[0]!.query), new RegExp(String(lead.id)));
  });

  it('stores the same webhook twice only once', async () => {
    const body = readFileSync(new URL('../fixtures/kommo/status-change.txt', import.meta.url), 'utf8').trim().replace('account%5Bsubdomain%5D=apfitness', 'account%5Bsubdomain%5D=acme').replace('account[subdomain]=apfitness', 'account[subdomain]=acme');
    const post = () => fetch(world.kommoWebhookUrl(service.url!), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body });
    const first = await post();
    assert.equal(first.status, 200);
    assert.deepEqual(await first.json(), { ok: true, accepted: 1, duplicates: 0 });
    const second = await post();
    assert.equal(second.status, 200);
    assert.deepEqual(await second.json(), { ok: true, accepted: 0, duplicates: 1 });
  });

  describe('bad input gets a 4xx with a JSON body', () => {
    const form = 'leads%5Bstatus%5D%5B0%5D%5Bid%5D=1&leads%5Bstatus%5D%5B0%5D%5Bstatus_id%5D=142&leads%5Bstatus%5D%5B0%5D%5Bpipeline_id%5D=7&account%5Bsubdomain%5D=acme';
    const cases: Array<[string, () => string, RequestInit, number, string]> = [
      ['unknown account', () => `${service.url}/webhooks/nope/kommo/x`, { body: form, headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 404, 'unknown_account'],
      ['unknown source', () => `${service.url}/webhooks/acme/mailchimp/x`, { body: '{}', headers: { 'content-type': 'application/json' } }, 404, 'unknown_source'],
      ['wrong secret', () => `${service.url}/webhooks/acme/kommo/wrong-secret`, { body: form, headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 401, 'bad_secret'],
      ['another account\'s webhook', () => world.kommoWebhookUrl(service.url!), { body: form.replace('=acme', '=other'), headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 401, 'account_mismatch'],
      ['another account\'s webhook as JSON', () => world.kommoWebhookUrl(service.url!), { body: JSON.stringify({ leads: { status: [{ id: '1', status_id: '142' }] }, account: { subdomain: 'other' } }), headers: { 'content-type': 'application/json' } }, 401, 'account_mismatch'],
      // Kommo sends account[subdomain] with every webhook: without it, it cannot be told apart.
      ['no account[subdomain]', () => world.kommoWebhookUrl(service.url!), { body: form.replace('&account%5Bsubdomain%5D=acme', ''), headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 400, 'missing_account'],
      ['only account[id]', () => world.kommoWebhookUrl(service.url!), { body: form.replace('account%5Bsubdomain%5D=acme', 'account%5Bid%5D=31234567'), headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 400, 'missing_account'],
      ['an empty account[subdomain]', () => world.kommoWebhookUrl(service.url!), { body: form.replace('=acme', '='), headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 400, 'missing_account'],
      ['account[subdomain] as a list', () => world.kommoWebhookUrl(service.url!), { body: form.replace('account%5Bsubdomain%5D=acme', 'account%5Bsubdomain%5D%5B0%5D=other'), headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 400, 'missing_account'],
      ['JSON without an account', () => world.kommoWebhookUrl(service.url!), { body: JSON.stringify({ leads: { status: [{ id: '1', status_id: '142' }] } }), headers: { 'content-type': 'application/json' } }, 400, 'missing_account'],
      ['wrong content type', () => world.kommoWebhookUrl(service.url!), { body: 'hello', headers: { 'content-type': 'text/plain' } }, 415, 'unsupported_media_type'],
      ['no entity list', () => world.kommoWebhookUrl(service.url!), { body: 'foo=bar', headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 400, 'invalid_webhook'],
      ['non-numeric id', () => world.kommoWebhookUrl(service.url!), { body: form.replace('%5Bid%5D=1', '%5Bid%5D=abc'), headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 400, 'invalid_webhook'],
      ['broken JSON', () => world.kommoWebhookUrl(service.url!), { body: '{"leads":', headers: { 'content-type': 'application/json' } }, 400, 'invalid_json'],
      ['body over the limit', () => world.kommoWebhookUrl(service.url!), { body: `${form}&pad=${'x'.repeat(100 * 1024)}`, headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 413, 'body_too_large'],
    ];
    for (const [name, url, init, status, code] of cases) {
      it(`${name} -> ${status} ${code}`, async () => {
        const res = await fetch(url(), { method: 'POST', ...init });
        assert.equal(res.status, status);
        const body = (await res.json()) as { error: string; message: string };
        assert.equal(body.error, code);
        assert.ok(body.message.length > 10, 'the message says what was wrong');
      });
    }
    it('never echoes the secret back in errors', async () => {
      const res = await fetch(`${service.url}/webhooks/acme/kommo/${world.kommoWebhookSecret}x`, { method: 'POST', body: form, headers: { 'content-type': 'application/x-www-form-urlencoded' } });
      assert.ok(!(await res.text()).includes(world.kommoWebhookSecret));
    });
  });

  it('a burst of 300 stage changes never makes Kommo see more than 7 requests in a second', async () => {
    const k = world.kommo;
    const leads = Array.from({ length: 300 }, (_, i) => {
      const c = k.createContact({ name: `P${i}`, email: `p${i}@example.com` });
      return k.createLead({ name: `Deal ${i}`, price: i * 10, contactIds: [c.id] });
    });
    await k.flushWebhooks();
    await waitFor(async () => (await service.store.stats(Date.now())).inboxPending === 0, 'creations routed', 30_000);
    const demo = k.status('Demo scheduled').id;
    for (const l of leads) k.moveLead(l.id, demo);
    await k.flushWebhooks();
    await waitFor(() => [...k.notes.values()].filter((n) => String(n.params.text).includes('Demo scheduled')).length === 300, '300 notes', 60_000);
    assert.ok(k.maxRequestsInWindow(1000) <= 7, `Kommo saw ${k.maxRequestsInWindow(1000)} requests in one second`);
    assert.equal(k.requests.filter((r) => r.status === 429).length, 0, 'no 429 from Kommo');
  });

  it('serves probes and Prometheus metrics', async () => {
    assert.equal((await fetch(`${service.url}/healthz`)).status, 200);
    assert.equal((await fetch(`${service.url}/readyz`)).status, 200);
    const text = await (await fetch(`${service.url}/metrics`)).text();
    assert.match(text, /kommo_sync_events_received_total\{account="acme",source="kommo",kind="lead.stage_changed"\} \d+/);
    assert.match(text, /kommo_sync_kommo_requests_total\{account="acme",status="200"\} \d+/);
    assert.match(text, /kommo_sync_jobs\{state="done"\} \d+/);
    assert.match(text, /kommo_sync_delivery_latency_seconds_bucket/);
    assert.match(text, /kommo_sync_oldest_pending_job_age_seconds \d/);
  });
});
