import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { DEFAULT_ACCESS_TOKEN, KommoSimulator, LOST_STATUS_ID, WON_STATUS_ID, type KommoSimulatorOptions } from './index.js';

const FAST = { rateLimitPerSecond: 10_000 } satisfies KommoSimulatorOptions;

interface Started {
  sim: KommoSimulator;
  base: string;
  api: (path: string, init?: RequestInit & { json?: unknown; token?: string | null }) => Promise<Response>;
}

async function start(opts: KommoSimulatorOptions = FAST): Promise<Started> {
  const sim = new KommoSimulator(opts);
  const base = await sim.listen();
  const api = (path: string, init: RequestInit & { json?: unknown; token?: string | null } = {}): Promise<Response> => {
    const { json, token, ...rest } = init;
    const headers: Record<string, string> = {};
    const bearer = token === undefined ? sim.accessToken : token;
    if (bearer !== null && bearer !== undefined) headers.authorization = `Bearer ${bearer}`;
    if (json !== undefined) headers['content-type'] = 'application/json';
    return fetch(base + path, { ...rest, headers, ...(json !== undefined && { body: JSON.stringify(json) }) });
  };
  return { sim, base, api };
}

type Json = Record<string, unknown> & {
  _embedded?: Record<string, Array<Record<string, unknown>>>;
  _links?: Record<string, { href: string }>;
};

async function json(res: Response): Promise<Json> {
  return (await res.json()) as Json;
}

function embedded(body: Json, key: string): Array<Record<string, unknown>> {
  const list = body._embedded?.[key];
  assert.ok(Array.isArray(list), `_embedded.${key} missing`);
  return list;
}

describe('KommoSimulator over HTTP', () => {
  let s: Started;
  before(async () => {
    s = await start();
  });
  after(async () => {
    await s.sim.close();
  });

  test('401 problem+json without a token and with a bad one; 200 with the long-lived token', async () => {
    const none = await s.api('/api/v4/account', { token: null });
    assert.equal(none.status, 401);
    assert.match(none.headers.get('content-type') ?? '', /application\/problem\+json/);
    const body = await json(none);
    assert.equal(body.status, 401);
    assert.equal(body.title, 'Unauthorized');
    assert.equal(body.type, 'https://httpstatus.es/401');

    assert.equal((await s.api('/api/v4/leads', { token: 'nope' })).status, 401);

    const ok = await s.api('/api/v4/account');
    assert.equal(ok.status, 200);
    assert.equal(s.sim.accessToken, DEFAULT_ACCESS_TOKEN);
    const account = await json(ok);
    assert.equal(account.subdomain, 'acme');
    assert.equal(account.id, s.sim.accountId);
    assert.equal(account.current_user_id, s.sim.currentUserId);
  });

  test('HAL list shape: _page, self, next only while more pages exist; 204 with empty body', async () => {
    const ids = ['Alpha', 'Beta', 'Gamma'].map((name) => s.sim.createLead({ name: `Paging ${name}`, price: 100 }).id);
    const q = `/api/v4/leads?filter[id][]=${ids.join('&filter[id][]=')}&limit=2`;
    const p1 = await s.api(q);
    assert.equal(p1.status, 200);
    assert.match(p1.headers.get('content-type') ?? '', /application\/hal\+json/);
    const b1 = await json(p1);
    assert.equal(b1._page, 1);
    assert.deepEqual(embedded(b1, 'leads').map((l) => l.id), ids.slice(0, 2));
    assert.match(b1._links?.self?.href ?? '', /^http:\/\/127\.0\.0\.1:\d+\/api\/v4\/leads\?.*page=1/);
    const next = b1._links?.next?.href;
    assert.ok(next, 'first page links to the next one');
    const p2 = await fetch(next, { headers: { authorization: `Bearer ${DEFAULT_ACCESS_TOKEN}` } });
    const b2 = await json(p2);
    assert.equal(b2._page, 2);
    assert.deepEqual(embedded(b2, 'leads').map((l) => l.id), ids.slice(2));
    assert.equal(b2._links?.next, undefined, 'no next on the last page');
    assert.ok(b2._links?.prev);

    const lead = embedded(b2, 'leads')[0];
    assert.equal(lead?.name, 'Paging Gamma');
    assert.equal(lead?.price, 100);
    assert.equal(lead?.pipeline_id, s.sim.mainPipeline.id);
    assert.equal(lead?.status_id, s.sim.status('New lead').id);

    const empty = await s.api('/api/v4/leads?query=no-such-thing-anywhere');
    assert.equal(empty.status, 204);
    assert.equal(await empty.text(), '');
    const pastEnd = await s.api(`${q}&page=3`);
    assert.equal(pastEnd.status, 204);
  });

  test('filter[id][] with 250 ids; 251 ids page at limit=250; limit > 250 is 422', async () => {
    const ids: number[] = [];
    for (let i = 0; i < 2000; i++) ids.push(s.sim.createLead({ name: `Bulk ${i}` }).id);
    const some = ids.slice(100, 351); // 251 ids
    const qs = (list: number[]): string => list.map((id) => `filter[id][]=${id}`).join('&');

    const t0 = performance.now();
    const r250 = await s.api(`/api/v4/leads?${qs(some.slice(0, 250))}&limit=250`);
    assert.ok(performance.now() - t0 < 1000, '250 id lookups among 2000+ leads are fast');
    const b250 = await json(r250);
    assert.deepEqual(embedded(b250, 'leads').map((l) => l.id), some.slice(0, 250));
    assert.equal(b250._links?.next, undefined);

    const b251 = await json(await s.api(`/api/v4/leads?${qs(some)}&limit=250`));
    assert.equal(embedded(b251, 'leads').length, 250);
    assert.ok(b251._links?.next);
    const last = await json(await s.api(`/api/v4/leads?${qs(some)}&limit=250&page=2`));
    assert.deepEqual(embedded(last, 'leads').map((l) => l.id), [some[250]]);

    const commaForm = await json(await s.api(`/api/v4/leads?filter[id]=${ids[0]},${ids[1]}`));
    assert.deepEqual(embedded(commaForm, 'leads').map((l) => l.id), [ids[0], ids[1]]);

    const tooMany = await s.api('/api/v4/leads?limit=251');
    assert.equal(tooMany.status, 422);
    const problem = await json(tooMany);
    assert.equal(problem.detail, 'Limit 250 per page');
    assert.equal(problem.status, 422);

    const bigWrite = await s.api('/api/v4/leads', { method: 'POST', json: Array.from({ length: 251 }, (_, i) => ({ name: `x${i}` })) });
    assert.equal(bigWrite.status, 422);
  });

  test('contact query is fuzzy: the near-miss email comes back too', async () => {
    const ann = s.sim.createContact({ name: 'Ann Lee', email: 'ann@x.com', phone: '+15550001' });
    const joann = s.sim.createContact({ name: 'Jo Ann', email: 'joann@x.com' });
    s.sim.createContact({ name: 'Bob', email: 'bob@y.com' });
    const res = await s.api('/api/v4/contacts?query=ann@x.com');
    assert.equal(res.status, 200);
    const found = embedded(await json(res), 'contacts');
    assert.deepEqual(found.map((c) => c.id).sort(), [ann.id, joann.id].sort());
    const annOut = found.find((c) => c.id === ann.id);
    const cfv = annOut?.custom_fields_values as Array<{ field_code: string | null; values: Array<{ value: unknown; enum_code?: string }> }>;
    const email = cfv.find((f) => f.field_code === 'EMAIL');
    assert.deepEqual(email?.values.map((v) => [v.value, v.enum_code]), [['ann@x.com', 'WORK']]);
    assert.equal(cfv.find((f) => f.field_code === 'PHONE')?.values[0]?.value, '+15550001');

    const lead = s.sim.createLead({ name: 'Ann deal', contactIds: [ann.id] });
    const withLeads = await json(await s.api(`/api/v4/contacts/${ann.id}?with=leads`));
    assert.deepEqual((withLeads._embedded?.leads ?? []).map((l) => l.id), [lead.id]);
    const withContacts = await json(await s.api(`/api/v4/leads/${lead.id}?with=contacts`));
    assert.deepEqual((withContacts._embedded?.contacts ?? []).map((c) => [c.id, c.is_main]), [[ann.id, true]]);
    assert.equal((await s.api('/api/v4/leads/999')).status, 404);
  });

  test('tags: tags_to_add/delete are incremental, _embedded.tags replaces (and wins)', async () => {
    const created = await json(
      await s.api('/api/v4/leads', { method: 'POST', json: [{ name: 'Tagged', _embedded: { tags: [{ name: 'a' }, { name: 'b' }] }, request_id: 'r1' }] }),
    );
    const row = embedded(created, 'leads')[0];
    assert.equal(row?.request_id, 'r1');
    const id = Number(row?.id);
    const tagNames = async (): Promise<string[]> => {
      const lead = await json(await s.api(`/api/v4/leads/${id}`));
      return ((lead._embedded?.tags ?? []) as Array<{ name: string }>).map((t) => t.name).sort();
    };
    assert.deepEqual(await tagNames(), ['a', 'b']);

    await s.api(`/api/v4/leads/${id}`, { method: 'PATCH', json: { tags_to_add: [{ name: 'c' }] } });
    assert.deepEqual(await tagNames(), ['a', 'b', 'c']);
    await s.api('/api/v4/leads', { method: 'PATCH', json: [{ id, tags_to_delete: [{ name: 'a' }] }] });
    assert.deepEqual(await tagNames(), ['b', 'c']);
    await s.api(`/api/v4/leads/${id}`, { method: 'PATCH', json: { _embedded: { tags: [{ name: 'z' }] }, tags_to_add: [{ name: 'q' }] } });
    assert.deepEqual(await tagNames(), ['z']);
    await s.api(`/api/v4/leads/${id}`, { method: 'PATCH', json: { _embedded: { tags: null } } });
    assert.deepEqual(await tagNames(), []);
  });

  test('PATCH bumps updated_at strictly, also twice within one second; custom fields by id and code', async () => {
    const lead = s.sim.createLead({ name: 'Bumpy', fields: { Industry: 'SaaS', Source: 'web' } });
    const first = await json(await s.api(`/api/v4/leads/${lead.id}`, { method: 'PATCH', json: { price: 500 } }));
    const second = await json(await s.api('/api/v4/leads', { method: 'PATCH', json: [{ id: lead.id, name: 'Bumpy 2' }] }));
    const u1 = Number(first.updated_at);
    const u2 = Number(embedded(second, 'leads')[0]?.updated_at);
    assert.ok(u1 > lead.created_at, `${u1} > ${lead.created_at}`);
    assert.ok(u2 > u1, `${u2} > ${u1}`);
    const stored = s.sim.leads.get(lead.id);
    assert.equal(stored?.updated_at, u2);
    assert.equal(stored?.price, 500);
    assert.equal(stored?.name, 'Bumpy 2');
    assert.equal(stored?.updated_by, s.sim.currentUserId);

    const source = s.sim.field('leads', 'Source');
    assert.ok(source);
    await s.api(`/api/v4/leads/${lead.id}`, { method: 'PATCH', json: { custom_fields_values: [{ field_id: source.id, values: [{ value: 'ads' }] }] } });
    const fields = s.sim.leads.get(lead.id)?.custom_fields_values ?? [];
    assert.deepEqual(fields.map((f) => [f.field_name, f.values.map((v) => v.value)]), [['Industry', ['SaaS']], ['Source', ['ads']]]);

    const contact = s.sim.createContact({ name: 'Multi', email: 'old@x.com' });
    await s.api('/api/v4/contacts', { method: 'PATCH', json: [{ id: contact.id, custom_fields_values: [{ field_code: 'EMAIL', values: [{ value: 'new@x.com', enum_code: 'PRIV' }] }] }] });
    const email = s.sim.contacts.get(contact.id)?.custom_fields_values?.find((f) => f.field_code === 'EMAIL');
    assert.deepEqual(email?.values.map((v) => [v.value, v.enum_code]), [['new@x.com', 'PRIV']]);
  });

  test('400 validation-errors: unknown field, task without complete_till, note on a missing lead', async () => {
    const badField = await s.api('/api/v4/leads', { method: 'POST', json: [{ name: 'ok' }, { name: 'bad', custom_fields_values: [{ field_id: 1, values: [{ value: 'x' }] }] }] });
    assert.equal(badField.status, 400);
    assert.match(badField.headers.get('content-type') ?? '', /problem\+json/);
    const body = await json(badField);
    assert.equal(body.detail, 'Request validation failed');
    assert.deepEqual(body['validation-errors'], [
      { request_id: '1', errors: [{ code: 'NotSupportedChoice', path: 'custom_fields_values.0.field_id', detail: 'The value you selected is not a valid choice.' }] },
    ]);

    const task = await json(await s.api('/api/v4/tasks', { method: 'POST', json: [{ text: 'Call back' }] }));
    assert.equal(task.status, 400);
    const errs = (task['validation-errors'] as Array<{ errors: Array<{ path: string }> }>)[0]?.errors.map((e) => e.path);
    assert.deepEqual(errs, ['complete_till']);

    const note = await s.api('/api/v4/leads/notes', { method: 'POST', json: [{ entity_id: 42, note_type: 'common', params: { text: 'hi' } }] });
    assert.equal(note.status, 400);

    const lead = s.sim.createLead({ name: 'Noted' });
    const okNote = await json(await s.api('/api/v4/leads/notes', { method: 'POST', json: [{ entity_id: lead.id, note_type: 'common', params: { text: 'Opened email' } }] }));
    assert.equal(embedded(okNote, 'notes')[0]?.entity_id, lead.id);
    const listed = await json(await s.api(`/api/v4/leads/${lead.id}/notes`));
    assert.deepEqual(embedded(listed, 'notes').map((n) => (n.params as { text: string }).text), ['Opened email']);

    const okTask = await json(await s.api('/api/v4/tasks', { method: 'POST', json: [{ text: 'Call', complete_till: 1_900_000_000, entity_id: lead.id, entity_type: 'leads' }] }));
    const taskId = embedded(okTask, 'tasks')[0]?.id;
    assert.equal(s.sim.tasks.get(Number(taskId))?.responsible_user_id, s.sim.currentUserId);
    const open = await json(await s.api(`/api/v4/tasks?filter[entity_id]=${lead.id}&filter[is_completed]=0`));
    assert.deepEqual(embedded(open, 'tasks').map((t) => t.id), [taskId]);
  });

  test('pipelines carry Incoming leads (type 1) and the shared 142/143; custom field catalogs', async () => {
    const extra = s.sim.addPipeline('Partners', ['Contacted']);
    const body = await json(await s.api('/api/v4/leads/pipelines'));
    assert.equal(body._total_items, 2);
    const pipelines = embedded(body, 'pipelines');
    for (const p of pipelines) {
      const statuses = (p._embedded as { statuses: Array<{ id: number; name: string; type: number; pipeline_id: number }> }).statuses;
      assert.equal(statuses[0]?.type, 1);
      assert.equal(statuses[0]?.name, 'Incoming leads');
      assert.deepEqual(statuses.slice(-2).map((st) => st.id), [WON_STATUS_ID, LOST_STATUS_ID]);
      assert.ok(statuses.every((st) => st.pipeline_id === p.id));
    }
    const sales = pipelines[0]?._embedded as { statuses: Array<{ name: string }> };
    assert.deepEqual(sales.statuses.map((st) => st.name), ['Incoming leads', 'New lead', 'Qualified', 'Demo scheduled', 'Proposal sent', 'Negotiation', 'Closed - won', 'Closed - lost']);
    assert.notEqual(extra.statuses[0]?.id, s.sim.mainPipeline.statuses[0]?.id);

    const cf = await json(await s.api('/api/v4/contacts/custom_fields'));
    const byCode = embedded(cf, 'custom_fields').map((f) => [f.code, f.type]);
    assert.deepEqual(byCode, [['PHONE', 'multitext'], ['EMAIL', 'multitext'], [null, 'checkbox']]);
    const leadCf = embedded(await json(await s.api('/api/v4/leads/custom_fields')), 'custom_fields');
    assert.deepEqual(leadCf.map((f) => f.name), ['Industry', 'Source']);
    assert.ok(((leadCf[0]?.enums ?? []) as Array<{ value: string }>).some((e) => e.value === 'SaaS'));
  });

  test('webhook subscriptions over the API', async () => {
    const dest = 'https://hooks.example/kommo';
    const created = await s.api('/api/v4/webhooks', { method: 'POST', json: { destination: dest, settings: ['add_lead', 'status_lead'] } });
    assert.equal(created.status, 201);
    const listed = await json(await s.api(`/api/v4/webhooks?filter[destination]=${encodeURIComponent(dest)}`));
    assert.deepEqual(embedded(listed, 'webhooks').map((w) => [w.destination, w.disabled, w.settings]), [[dest, false, ['add_lead', 'status_lead']]]);
    const bad = await s.api('/api/v4/webhooks', { method: 'POST', json: { destination: dest, settings: ['nope'] } });
    assert.equal(bad.status, 400);
    assert.equal((await s.api('/api/v4/webhooks', { method: 'DELETE', json: { destination: dest } })).status, 204);
    assert.equal((await s.api(`/api/v4/webhooks?filter[destination]=${encodeURIComponent(dest)}`)).status, 204);
  });

  test('companies: HAL list, filter[id][], 204 when empty, 404 by id; leads and contacts embed their company', async () => {
    const contact = s.sim.createContact({ name: 'Company person' });
    const leadA = s.sim.createLead({ name: 'Co deal A', contactIds: [contact.id] });
    const leadB = s.sim.createLead({ name: 'Co deal B' });
    const acme = s.sim.createCompany({ name: 'Acme Corp', leadIds: [leadA.id], contactIds: [contact.id] });
    const globex = s.sim.createCompany({ name: 'Globex', leadIds: [leadB.id] });
    assert.deepEqual(s.sim.companies.get(acme.id)?.lead_ids, [leadA.id]);

    const res = await s.api(`/api/v4/companies?filter[id][]=${globex.id}&filter[id][]=${acme.id}&limit=250`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /application\/hal\+json/);
    const list = embedded(await json(res), 'companies');
    assert.deepEqual(list.map((c) => [c.id, c.name]), [[acme.id, 'Acme Corp'], [globex.id, 'Globex']]);
    const first = list[0] ?? {};
    for (const key of ['responsible_user_id', 'created_at', 'updated_at', 'custom_fields_values']) assert.ok(key in first, key);
    assert.deepEqual((first._embedded as { tags: unknown[] }).tags, []);

    const empty = await s.api('/api/v4/companies?filter[id][]=1');
    assert.equal(empty.status, 204);
    assert.equal(await empty.text(), '');
    assert.equal((await s.api('/api/v4/companies?limit=251')).status, 422);
    assert.equal((await s.api(`/api/v4/companies/${globex.id}`)).status, 200);
    const missing = await s.api('/api/v4/companies/1');
    assert.equal(missing.status, 404);
    assert.match(missing.headers.get('content-type') ?? '', /application\/problem\+json/);
    assert.equal((await s.api('/api/v4/companies', { token: 'nope' })).status, 401);

    const leads = embedded(await json(await s.api(`/api/v4/leads?filter[id][]=${leadA.id}&filter[id][]=${leadB.id}&with=contacts`)), 'leads');
    const companiesOf = (x: Record<string, unknown> | undefined): unknown =>
      (x?._embedded as { companies: Array<{ id: number }> }).companies.map((c) => c.id);
    assert.deepEqual(leads.map(companiesOf), [[acme.id], [globex.id]]);
    assert.deepEqual(companiesOf(await json(await s.api(`/api/v4/leads/${leadA.id}`))), [acme.id]);
    assert.deepEqual(companiesOf(await json(await s.api(`/api/v4/contacts/${contact.id}`))), [acme.id]);

    // One company per lead: linking B to a new company moves it off Globex.
    const initech = s.sim.createCompany({ name: 'Initech', leadIds: [leadB.id] });
    assert.deepEqual(companiesOf(await json(await s.api(`/api/v4/leads/${leadB.id}`))), [initech.id]);
    assert.deepEqual(s.sim.companies.get(globex.id)?.lead_ids, []);
  });
});

describe('rate limit and block', () => {
  test('8 quick requests: the 8th gets 429 with retry_after; maxRequestsInWindow counts all 8', async () => {
    const { sim, api } = await start({});
    try {
      const results = await Promise.all(Array.from({ length: 8 }, () => api('/api/v4/account')));
      const statuses = results.map((r) => r.status).sort();
      assert.deepEqual(statuses, [200, 200, 200, 200, 200, 200, 200, 429]);
      const limited = results.find((r) => r.status === 429);
      assert.ok(limited);
      assert.equal(limited.headers.get('retry-after'), '1');
      assert.match(limited.headers.get('content-type') ?? '', /problem\+json/);
      const body = await json(limited);
      assert.equal(body.title, 'Too Many Requests');
      assert.equal(body.type, 'https://httpstatus.es/429');
      assert.equal(body.retry_after, 1);
      assert.equal(sim.maxRequestsInWindow(), 8);
      assert.equal(sim.requests.length, 8);
      assert.deepEqual(sim.requests.map((r) => r.status).sort(), [200, 200, 200, 200, 200, 200, 200, 429]);
      assert.equal(sim.requests[0]?.path, '/api/v4/account');
      sim.resetLog();
      assert.equal(sim.maxRequestsInWindow(), 0);
    } finally {
      await sim.close();
    }
  });

  test('repeated 429s turn into a 403 block for every later request', async () => {
    const { sim, api } = await start({ rateLimitPerSecond: 2, blockAfterViolations: 3 });
    try {
      const statuses = [];
      for (let i = 0; i < 6; i++) statuses.push((await api('/api/v4/account')).status);
      assert.deepEqual(statuses, [200, 200, 429, 429, 429, 403]);
      assert.equal(sim.blocked, true);
      await new Promise((r) => setTimeout(r, 1100));
      assert.equal((await api('/api/v4/account')).status, 403, 'the block outlasts the window');
      sim.unblock();
      assert.equal((await api('/api/v4/account')).status, 200);
    } finally {
      await sim.close();
    }
  });

  test('GET /users is 403 for a non-admin token', async () => {
    const { sim, api } = await start({ ...FAST, usersEndpointAdmin: false });
    try {
      assert.equal((await api('/api/v4/users')).status, 403);
    } finally {
      await sim.close();
    }
    const admin = await start();
    try {
      const users = embedded(await json(await admin.api('/api/v4/users')), 'users');
      assert.deepEqual(users.map((u) => (u.rights as { is_admin: boolean }).is_admin), [true, false]);
    } finally {
      await admin.sim.close();
    }
  });
});

describe('OAuth refresh-token rotation', () => {
  const oauth = { clientId: 'cid', clientSecret: 'secret', refreshToken: 'refresh-0' };
  const tokenBody = (refresh: string, extra: Record<string, string> = {}): Record<string, string> => ({
    client_id: 'cid',
    client_secret: 'secret',
    grant_type: 'refresh_token',
    refresh_token: refresh,
    redirect_uri: 'https://app.example/oauth',
    ...extra,
  });

  test('new pair works; old refresh token is usable until the new one is used, then rejected', async () => {
    const { sim, api } = await start({ ...FAST, oauth });
    try {
      assert.equal(sim.accessToken, undefined, 'no long-lived token when OAuth is configured');
      const refresh = async (body: Record<string, string>): Promise<{ status: number; body: Json }> => {
        const res = await api('/oauth2/access_token', { method: 'POST', json: body, token: null });
        return { status: res.status, body: await json(res) };
      };

      const first = await refresh(tokenBody('refresh-0'));
      assert.equal(first.status, 200);
      assert.equal(first.body.token_type, 'Bearer');
      assert.equal(first.body.expires_in, 86400);
      assert.equal(typeof first.body.server_time, 'number');
      const access1 = String(first.body.access_token);
      const refresh1 = String(first.body.refresh_token);
      assert.notEqual(refresh1, 'refresh-0');
      assert.equal(access1.split('.').length, 3, 'JWT-shaped access token');
      assert.equal((await api('/api/v4/account', { token: access1 })).status, 200);

      // Grace period: the rotated-out token still works while refresh1 is unused.
      const again = await refresh(tokenBody('refresh-0'));
      assert.equal(again.status, 200);

      const second = await refresh(tokenBody(refresh1));
      assert.equal(second.status, 200);
      assert.equal((await api('/api/v4/account', { token: String(second.body.access_token) })).status, 200);

      const burned = await refresh(tokenBody('refresh-0'));
      assert.equal(burned.status, 400);
      assert.equal(burned.body.hint, 'Token has been revoked');
      assert.deepEqual(sim.burnedRefreshTokenReuses.map((r) => r.refreshToken), ['refresh-0']);
      assert.deepEqual(sim.oauthRefreshes.map((r) => r.refreshToken), ['refresh-0', 'refresh-0', refresh1]);

      assert.equal((await refresh(tokenBody(refresh1, { client_secret: 'wrong' }))).status, 401);
      assert.equal((await refresh(tokenBody('never-issued'))).status, 400);

      sim.expireAccessTokens();
      assert.equal((await api('/api/v4/account', { token: access1 })).status, 401);

      const code = sim.issueAuthorizationCode();
      const exchange = { ...tokenBody(''), grant_type: 'authorization_code', code };
      assert.equal((await refresh(exchange)).status, 200);
      assert.equal((await refresh(exchange)).status, 400, 'a code is single-use');
    } finally {
      await sim.close();
    }
  });
});

describe('webhooks sent to a receiver', () => {
  let receiver: FastifyInstance;
  let receiverUrl: string;
  const received: Array<{ contentType: string; body: string }> = [];

  before(async () => {
    receiver = Fastify();
    // Keep the raw string: the assertions look at the exact bracket keys Kommo would send.
    receiver.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => done(null, body));
    receiver.post('/hook', async (req) => {
      received.push({ contentType: String(req.headers['content-type']), body: String(req.body) });
      return 'ok';
    });
    receiverUrl = `${await receiver.listen({ port: 0, host: '127.0.0.1' })}/hook`;
  });
  after(async () => {
    await receiver.close();
  });

  test('moveLead sends leads[status] and leads[update] as two form-encoded POSTs, in order', async () => {
    received.length = 0;
    const sim = new KommoSimulator(FAST);
    sim.subscribe(receiverUrl, ['status_lead', 'update_lead']);
    const contact = sim.createContact({ name: 'Ann', email: 'ann@x.com' });
    const lead = sim.createLead({ name: 'Deal', price: 1200, contactIds: [contact.id], fields: { Industry: 'SaaS' }, tags: ['vip'] });
    const from = sim.status('New lead');
    const to = sim.status('Qualified');
    sim.moveLead(lead.id, to.id);
    await sim.flushWebhooks();

    assert.deepEqual(sim.webhooksSent.map((w) => [w.event, w.status]), [['status_lead', 200], ['update_lead', 200]]);
    assert.equal(received.length, 2);
    assert.ok(received.every((r) => r.contentType === 'application/x-www-form-urlencoded'));
    assert.match(received[0]?.body ?? '', /^leads%5Bstatus%5D%5B0%5D%5Bid%5D=/, 'PHP-style encoded brackets');

    const status = new URLSearchParams(received[0]?.body);
    const industry = sim.field('leads', 'Industry');
    const saas = industry?.enums?.find((e) => e.value === 'SaaS');
    assert.equal(status.get('leads[status][0][id]'), String(lead.id));
    assert.equal(status.get('leads[status][0][name]'), 'Deal');
    assert.equal(status.get('leads[status][0][status_id]'), String(to.id));
    assert.equal(status.get('leads[status][0][old_status_id]'), String(from.id));
    assert.equal(status.get('leads[status][0][pipeline_id]'), String(sim.mainPipeline.id));
    assert.equal(status.get('leads[status][0][old_pipeline_id]'), String(sim.mainPipeline.id));
    assert.equal(status.get('leads[status][0][price]'), '1200');
    assert.equal(status.get('leads[status][0][responsible_user_id]'), String(sim.uiUserId));
    assert.equal(status.get('leads[status][0][modified_user_id]'), String(sim.uiUserId));
    assert.equal(status.get('leads[status][0][last_modified]'), String(sim.leads.get(lead.id)?.updated_at));
    assert.equal(status.get('leads[status][0][date_create]'), String(lead.created_at));
    assert.equal(status.get('leads[status][0][account_id]'), String(sim.accountId));
    assert.equal(status.get('leads[status][0][custom_fields][0][id]'), String(industry?.id));
    assert.equal(status.get('leads[status][0][custom_fields][0][name]'), 'Industry');
    assert.equal(status.get('leads[status][0][custom_fields][0][values][0][value]'), 'SaaS');
    assert.equal(status.get('leads[status][0][custom_fields][0][values][0][enum]'), String(saas?.id));
    assert.equal(status.get('leads[status][0][tags][0][name]'), 'vip');
    assert.equal(status.get('account[subdomain]'), 'acme');
    assert.equal(status.get('account[id]'), String(sim.accountId));
    assert.equal(status.get('account[_links][self]'), 'https://acme.kommo.com');

    const update = new URLSearchParams(received[1]?.body);
    assert.equal(update.get('leads[update][0][id]'), String(lead.id));
    assert.equal(update.get('leads[update][0][old_status_id]'), String(from.id));
    assert.equal(update.get('leads[update][0][status_id]'), String(to.id));
  });

  test('createCompany fires add_company under the contacts key with type=company', async () => {
    received.length = 0;
    const sim = new KommoSimulator(FAST);
    sim.subscribe(receiverUrl, ['add_company']);
    const lead = sim.createLead({ name: 'Deal' });
    const company = sim.createCompany({ name: 'Acme Corp', leadIds: [lead.id] });
    await sim.flushWebhooks();
    assert.deepEqual(sim.webhooksSent.map((w) => [w.event, w.status]), [['add_company', 200]]);
    const body = new URLSearchParams(received[0]?.body);
    assert.equal(body.get('contacts[add][0][id]'), String(company.id));
    assert.equal(body.get('contacts[add][0][name]'), 'Acme Corp');
    assert.equal(body.get('contacts[add][0][type]'), 'company');
    assert.equal(body.get(`contacts[add][0][linked_leads_id][${lead.id}][ID]`), String(lead.id));
  });

  test('API writes fire webhooks too; contacts, responsible and delete payloads', async () => {
    received.length = 0;
    const sim = new KommoSimulator(FAST);
    const base = await sim.listen();
    try {
      sim.subscribe(receiverUrl, ['update_lead', 'responsible_lead', 'delete_lead', 'update_contact', 'add_lead']);
      const contact = sim.createContact({ name: 'Ann', email: 'ann@x.com', phone: '+1555' });
      const lead = sim.createLead({ name: 'Deal', contactIds: [contact.id] });
      await sim.flushWebhooks();
      received.length = 0;

      const res = await fetch(`${base}/api/v4/leads/${lead.id}`, {
        method: 'PATCH',
        headers: { authorization: `Bearer ${sim.accessToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ price: 99 }),
      });
      const patched = await json(res);
      await sim.flushWebhooks();
      const echo = new URLSearchParams(received[0]?.body);
      assert.equal(echo.get('leads[update][0][price]'), '99');
      assert.equal(echo.get('leads[update][0][updated_at]'), String(patched.updated_at), 'the echo carries the PATCH response updated_at');
      assert.equal(echo.get('leads[update][0][modified_user_id]'), String(sim.currentUserId));
      assert.equal(echo.get('leads[update][0][old_status_id]'), null, 'no stage change, no old_status_id');

      received.length = 0;
      const oldResponsible = lead.responsible_user_id;
      const other = [...sim.users.keys()].find((id) => id !== oldResponsible) ?? 0;
      sim.setResponsible(lead.id, other);
      sim.updateContact(contact.id, { email: 'ann@new.com' });
      sim.deleteLead(lead.id);
      await sim.flushWebhooks();
      assert.deepEqual(sim.webhooksSent.slice(-4).map((w) => w.event), ['responsible_lead', 'update_lead', 'update_contact', 'delete_lead']);

      const resp = new URLSearchParams(received[0]?.body);
      assert.equal(resp.get('leads[responsible][0][responsible_user_id]'), String(other));
      assert.equal(resp.get('leads[responsible][0][old_responsible_user_id]'), String(oldResponsible));

      const c = new URLSearchParams(received[2]?.body);
      assert.equal(c.get('contacts[update][0][type]'), 'contact');
      assert.equal(c.get(`contacts[update][0][linked_leads_id][${lead.id}][ID]`), String(lead.id));
      const codes = [0, 1].map((i) => [c.get(`contacts[update][0][custom_fields][${i}][code]`), c.get(`contacts[update][0][custom_fields][${i}][values][0][value]`)]);
      assert.deepEqual(codes.sort(), [['EMAIL', 'ann@new.com'], ['PHONE', '+1555']]);

      const del = new URLSearchParams(received[3]?.body);
      assert.deepEqual(
        [...del.keys()],
        ['leads[delete][0][id]', 'leads[delete][0][status_id]', 'leads[delete][0][pipeline_id]', 'account[subdomain]', 'account[id]', 'account[_links][self]'],
      );
      assert.equal(sim.leads.has(lead.id), false);
    } finally {
      await sim.close();
    }
  });

  test('a dead receiver is recorded with status 0 and never throws into the caller', async () => {
    const sim = new KommoSimulator(FAST);
    sim.subscribe('http://127.0.0.1:1/nothing-listens', ['add_lead']);
    assert.doesNotThrow(() => sim.createLead({ name: 'x' }));
    await sim.flushWebhooks();
    assert.equal(sim.webhooksSent[0]?.status, 0);
    assert.ok(sim.webhooksSent[0]?.error);
  });
});
