import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify';
import { StaticTokenProvider } from './auth.js';
import { KommoClient, type KommoClientOptions } from './client.js';
import { KommoApiError, type RequestInfo } from './transport.js';
import { CircuitBreaker, SlidingWindowLimiter } from './rate-limit.js';
import { DEFAULT_ACCESS_TOKEN, KommoSimulator } from './simulator/index.js';

type Handler = (req: FastifyRequest, reply: FastifyReply, n: number) => unknown;

/** A tiny scripted server for failure modes the simulator does not produce on demand. */
async function scripted(handler: Handler): Promise<{ url: string; hits: () => number; close: () => Promise<void> }> {
  const app = Fastify({ logger: false });
  let n = 0;
  app.all('/*', async (req, reply) => handler(req, reply, ++n));
  await app.listen({ port: 0, host: '127.0.0.1' });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return { url: `http://127.0.0.1:${port}`, hits: () => n, close: () => app.close() };
}

function problem(reply: FastifyReply, status: number, extra: Record<string, unknown> = {}) {
  return reply.code(status).header('content-type', 'application/problem+json')
    .send(JSON.stringify({ title: 'Error', status, detail: `status ${status}`, ...extra }));
}

const ACCOUNT_JSON = { id: 1, name: 'Acme', subdomain: 'acme', current_user_id: 5 };

function client(baseUrl: string, opts: Partial<KommoClientOptions> = {}): KommoClient {
  return new KommoClient({
    account: `test-${Math.random()}`,
    baseUrl,
    auth: new StaticTokenProvider(DEFAULT_ACCESS_TOKEN),
    limiter: new SlidingWindowLimiter(50),
    breaker: new CircuitBreaker(),
    backoffBaseMs: 10,
    ...opts,
  });
}

describe('KommoClient transport', () => {
  it('honours retry_after on a 429, then succeeds', async () => {
    const srv = await scripted((_req, reply, n) => (n === 1 ? problem(reply, 429, { retry_after: 1 }) : ACCOUNT_JSON));
    try {
      const seen: RequestInfo[] = [];
      const started = Date.now();
      const account = await client(srv.url, { onRequest: (i) => seen.push(i) }).getAccount();
      assert.equal(account.subdomain, 'acme');
      assert.ok(Date.now() - started >= 1000, 'waited the full retry_after');
      assert.deepEqual(seen.map((s) => [s.path, s.status]), [['/api/v4/account', 429], ['/api/v4/account', 200]]);
    } finally {
      await srv.close();
    }
  });

  it('hands a long retry_after back to the caller instead of sleeping on it', async () => {
    const srv = await scripted((_req, reply) => problem(reply, 429, { retry_after: 300 }));
    try {
      const err = await client(srv.url).getAccount().catch((e: unknown) => e);
      assert.ok(err instanceof KommoApiError);
      assert.equal(err.status, 429);
      assert.equal(err.retryAfterMs, 300_000);
      assert.equal(srv.hits(), 1);
    } finally {
      await srv.close();
    }
  });

  it('retries a 5xx with backoff and gives up after 4 tries', async () => {
    const srv = await scripted((_req, reply) => problem(reply, 502));
    try {
      const err = await client(srv.url).getAccount().catch((e: unknown) => e);
      assert.ok(err instanceof KommoApiError && err.status === 502 && err.path === '/api/v4/account');
      assert.equal(srv.hits(), 4);
    } finally {
      await srv.close();
    }
  });

  it('does not retry a POST that failed with 5xx (it may have been stored): one request, one failed result', async () => {
    const srv = await scripted((_req, reply) => problem(reply, 500));
    try {
      const [result] = await client(srv.url).addNotes([{ entityId: 1, text: 'hi' }]);
      assert.ok(result && !result.ok && result.error.status === 500);
      assert.equal(srv.hits(), 1);
    } finally {
      await srv.close();
    }
  });

  it('times out a silent server (status 0) and retries it', async () => {
    const srv = await scripted(() => new Promise(() => undefined));
    try {
      const err = await client(srv.url, { timeoutMs: 100, maxTries: 2 }).getAccount().catch((e: unknown) => e);
      assert.ok(err instanceof KommoApiError && err.status === 0 && /no answer within 100 ms/.test(err.detail));
      assert.equal(srv.hits(), 2);
    } finally {
      await srv.close();
    }
  });

  it('opens the breaker on a 403 block: clear message, and later calls fail fast without a request', async () => {
    const srv = await scripted((_req, reply) => problem(reply, 403));
    try {
      const c = client(srv.url);
      const first = await c.getAccount().catch((e: unknown) => e);
      assert.ok(first instanceof KommoApiError && first.status === 403);
      assert.match(first.detail, /Kommo blocked API access \(403\)/);
      assert.ok((first.retryAfterMs ?? 0) >= 60_000);
      const second = await c.getPipelines().catch((e: unknown) => e);
      assert.ok(second instanceof KommoApiError && second.status === 403);
      assert.equal(srv.hits(), 1);
    } finally {
      await srv.close();
    }
  });

  it('sends the bearer token and JSON, and never follows a next link to another host', async () => {
    let auth: string | undefined;
    let secondHost: string | undefined;
    const srv = await scripted((req, _reply, n) => {
      auth = req.headers.authorization;
      if (n === 1) {
        return { _links: { next: { href: 'https://evil.example/api/v4/leads/pipelines?page=2' } }, _embedded: { pipelines: [{ id: 1, name: 'A', _embedded: { statuses: [] } }] } };
      }
      secondHost = req.headers.host;
      return { _embedded: { pipelines: [{ id: 2, name: 'B', _embedded: { statuses: [] } }] } };
    });
    try {
      const pipelines = await client(srv.url).getPipelines();
      assert.deepEqual(pipelines.map((p) => p.name), ['A', 'B']);
      assert.equal(auth, `Bearer ${DEFAULT_ACCESS_TOKEN}`);
      assert.equal(secondHost, new URL(srv.url).host);
    } finally {
      await srv.close();
    }
  });
});

describe('KommoClient against the simulator', () => {
  const sim = new KommoSimulator({ subdomain: 'acme' });
  let baseUrl: string;
  before(async () => {
    baseUrl = await sim.listen(0);
  });
  after(() => sim.close());

  it('treats 204 No Content as an empty list', async () => {
    sim.resetLog();
    const c = client(baseUrl);
    assert.deepEqual(await c.getContactsByIds([987654321]), []);
    assert.deepEqual(await c.searchContactsByEmail('nobody-at-all@nowhere.test'), []);
    assert.deepEqual(sim.requests.map((r) => r.status), [204, 204]);
  });

  it('searchContactsByEmail keeps only exact (normalized) email matches of the fuzzy query', async () => {
    const ann = sim.createContact({ name: 'Ann', email: 'Ann@X.com' });
    const joann = sim.createContact({ name: 'Joann', email: 'joann@x.com' });
    const found = await client(baseUrl).searchContactsByEmail('  ann@x.com ');
    assert.deepEqual(found.map((c) => c.id), [ann.id]);
    assert.ok(!found.some((c) => c.id === joann.id));
    const q = new URLSearchParams(sim.requests.at(-1)!.query);
    assert.equal(q.get('query'), 'ann@x.com');
    assert.equal(q.get('with'), 'leads');
  });

  it('getUsers answers null on 403 (non-admin) without tripping the breaker', async () => {
    const nonAdmin = new KommoSimulator({ subdomain: 'acme', usersEndpointAdmin: false });
    const url = await nonAdmin.listen(0);
    try {
      const c = client(url);
      assert.equal(await c.getUsers(), null);
      assert.equal((await c.getAccount()).subdomain, 'acme');
    } finally {
      await nonAdmin.close();
    }
    const users = await client(baseUrl).getUsers();
    assert.ok(users && users.some((u) => u.email === 'alice@acme.example'));
  });

  it('listLeadsUpdatedSince pages through HAL next links, 250 at a time', async () => {
    const since = Math.floor(Date.now() / 1000) - 1;
    const own = new KommoSimulator({ subdomain: 'acme' });
    const url = await own.listen(0);
    try {
      for (let i = 0; i < 600; i++) own.createLead({ name: `L${i}`, price: i });
      const sizes: number[] = [];
      for await (const page of client(url).listLeadsUpdatedSince(since)) sizes.push(page.length);
      assert.deepEqual(sizes, [250, 250, 100]);
      const q = new URLSearchParams(own.requests[0]!.query);
      assert.equal(q.get('filter[updated_at][from]'), String(since));
      assert.equal(q.get('limit'), '250');
    } finally {
      await own.close();
    }
  });

  it('leadsPage reads one page by id with the filters; [] past the last page', async () => {
    const own = new KommoSimulator({ subdomain: 'acme' });
    const url = await own.listen(0);
    try {
      const qualified = own.status('Qualified');
      const contact = own.createContact({ name: 'C', email: 'c@example.com' });
      for (let i = 0; i < 300; i++) own.createLead({ name: `L${i}`, contactIds: [contact.id], statusId: i % 2 ? qualified.id : undefined });
      const c = client(url);
      const first = await c.leadsPage({}, 1);
      assert.equal(first.length, 250);
      assert.ok(first.every((l, i) => i === 0 || l.id > first[i - 1]!.id), 'ordered by id');
      assert.equal(first[0]!._embedded.contacts[0]?.id, contact.id, 'with the contact links');
      assert.equal((await c.leadsPage({}, 2)).length, 50);
      assert.deepEqual(await c.leadsPage({}, 3), []);
      assert.equal((await c.leadsPage({ stage: { pipelineId: qualified.pipeline_id, statusId: qualified.id } }, 1)).length, 150);
      assert.deepEqual(await c.leadsPage({ createdTo: 1 }, 1), []);
      const q = new URLSearchParams(own.requests.at(-1)!.query);
      assert.equal(q.get('order[id]'), 'asc');
      assert.equal(q.get('filter[created_at][to]'), '1');
    } finally {
      await own.close();
    }
  });

  it('events pages through the event log 100 at a time; 204 is an empty log; addWebhook subscribes', async () => {
    const own = new KommoSimulator({ subdomain: 'acme' });
    const url = await own.listen(0);
    try {
      const c = client(url);
      const from = Math.floor(Date.now() / 1000) - 1;
      const none: number[] = [];
      for await (const page of c.events({ types: ['lead_added'], from })) none.push(page.length);
      assert.deepEqual(none, []);
      for (let i = 0; i < 230; i++) own.createLead({ name: `L${i}` });
      const sizes: number[] = [];
      for await (const page of c.events({ types: ['lead_added', 'lead_status_changed'], from, entity: 'lead' })) sizes.push(page.length);
      assert.deepEqual(sizes, [100, 100, 30]);
      assert.ok(own.requests.filter((r) => r.path === '/api/v4/events').every((r) => new URLSearchParams(r.query).get('limit') === '100'));
      const hook = await c.addWebhook('https://sync.example.com/webhooks/acme/kommo/s3cret', ['add_lead', 'status_lead']);
      assert.deepEqual(hook.settings, ['add_lead', 'status_lead']);
      assert.equal(own.webhooks.length, 1);
    } finally {
      await own.close();
    }
  });

  it('reads pipelines, custom fields and the account', async () => {
    const c = client(baseUrl);
    const pipelines = await c.getPipelines();
    assert.ok(pipelines[0]!._embedded.statuses.some((s) => s.id === 142));
    const fields = await c.getCustomFields('contacts');
    assert.ok(fields.some((f) => f.code === 'EMAIL' && f.type === 'multitext'));
    assert.equal((await c.getAccount()).subdomain, 'acme');
  });

  it('opens the breaker after repeated 429s and then fails fast', async () => {
    const slow = new KommoSimulator({ subdomain: 'acme', rateLimitPerSecond: 1 });
    const url = await slow.listen(0);
    try {
      const breaker = new CircuitBreaker();
      const c = client(url, { breaker, maxTries: 1 });
      const results = await Promise.allSettled(Array.from({ length: 6 }, () => c.getAccount()));
      const errors = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
      assert.ok(errors.length >= 3 && errors.every((e) => e instanceof KommoApiError && e.status === 429));
      const open = breaker.check();
      assert.equal(open.state, 'open');

      const before = slow.requests.length;
      const started = Date.now();
      const fast = await c.getAccount().catch((e: unknown) => e);
      assert.ok(fast instanceof KommoApiError && fast.status === 429);
      assert.ok((fast.retryAfterMs ?? 0) > 20_000, `remaining cool-down: ${fast.retryAfterMs}`);
      assert.ok(Date.now() - started < 50, 'failed fast');
      assert.equal(slow.requests.length, before, 'no request reached Kommo');
      assert.equal(slow.blocked, false, 'we stopped before Kommo blocked us');
    } finally {
      await slow.close();
    }
  });
});

describe('KommoClient writes', () => {
  /** Echoes each written item back with an id, as Kommo does; `fail(n, size)` scripts failures. */
  function writer(fail: (n: number, size: number) => number | null) {
    const sizes: number[] = [];
    return {
      sizes,
      handler: ((req, reply, n) => {
        const items = req.body as Array<{ request_id: string }>;
        sizes.push(items.length);
        const status = fail(n, items.length);
        if (status) return problem(reply, status);
        return { _embedded: { notes: items.map((it, i) => ({ id: 1000 * n + i, request_id: it.request_id })) } };
      }) as Handler,
    };
  }

  it('writes at most 50 entities per request (Kommo\'s recommendation), each item answered', async () => {
    const w = writer(() => null);
    const srv = await scripted(w.handler);
    try {
      const results = await client(srv.url).addNotes(Array.from({ length: 120 }, (_, i) => ({ entityId: i + 1, text: `n${i}` })));
      assert.deepEqual(w.sizes, [50, 50, 20]);
      assert.equal(results.length, 120);
      assert.ok(results.every((r) => r.ok));
    } finally {
      await srv.close();
    }
  });

  it('a 504 splits the chunk and sends the halves; a single item still timing out fails alone', async () => {
    // The first request (50 items) times out; its halves go through.
    const w = writer((n) => (n === 1 ? 504 : null));
    const srv = await scripted(w.handler);
    try {
      const results = await client(srv.url).addNotes(Array.from({ length: 50 }, (_, i) => ({ entityId: i + 1, text: `n${i}` })));
      assert.deepEqual(w.sizes, [50, 25, 25]);
      assert.ok(results.every((r) => r.ok));
    } finally {
      await srv.close();
    }
    const always = writer(() => 504);
    const srv2 = await scripted(always.handler);
    try {
      const results = await client(srv2.url).addNotes([{ entityId: 1, text: 'a' }, { entityId: 2, text: 'b' }]);
      assert.deepEqual(always.sizes, [2, 1, 1]);
      assert.ok(results.every((r) => !r.ok && r.error.status === 504));
    } finally {
      await srv2.close();
    }
  });
});
