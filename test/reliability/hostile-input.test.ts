/**
 * Hostile input, for every inbound source (Kommo and each registered destination that takes
 * webhooks): a corpus of malformed and hostile requests over real HTTP, and property-based fuzzing
 * (fast-check) of every parser. Each bad request gets a 4xx with a JSON error, the process never
 * crashes (nor answers 5xx for the sender's mistake), and valid webhooks sent in between are all
 * stored. A body over the limit gets its 413 while the sender is still sending.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import pino from 'pino';
import { startWorld, type World } from '../../src/demo/world.js';
import { destinationTypes, getDestination, registerDestination } from '../../src/destinations/index.js';
import { InboundRejected, type InboundRequest } from '../../src/destinations/types.js';
import { FormParseError, parseBracketForm } from '../../src/kommo/form.js';
import { parseKommoWebhook, WebhookBodyError } from '../../src/kommo/webhook.js';
import { startService, type Service } from '../../src/runtime/service.js';
import { fake } from '../kit/fake-destination/index.js';

registerDestination(fake);

const BODY_LIMIT = 256 * 1024;
const RUNS = Number(process.env.FUZZ_RUNS ?? 300);

/** Percent-encodes the UTF-8 bytes of `s` (a lone surrogate becomes U+FFFD, as any sender's would). */
const pct = (s: string) => [...Buffer.from(s)].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('');

/** Bytes that are not UTF-8, strings that try to break out of something, bracket bombs. */
const HOSTILE_STRINGS = [
  "'; DROP TABLE ks_inbox; --",
  '<script>alert(1)</script>',
  '{{constructor.constructor("return process")()}}',
  '${process.exit(1)}',
  '__proto__',
  '../../../../etc/passwd',
  '\u0000\u0001\u0002',
  '\ud800',
  'a'.repeat(10_000),
];

interface Sent {
  status: number;
  body: string;
  contentType: string;
}

async function send(url: string, body: Buffer | string, contentType: string | null, extraHeaders: Record<string, string> = {}): Promise<Sent> {
  const headers: Record<string, string> = { ...extraHeaders };
  if (contentType !== null) headers['content-type'] = contentType;
  const res = await fetch(url, { method: 'POST', headers, body: typeof body === 'string' ? body : new Uint8Array(body) });
  return { status: res.status, body: await res.text(), contentType: res.headers.get('content-type') ?? '' };
}

/** A 4xx with `{"error": "...", "message": "..."}`, or 200 for input a source tolerates (and ignores). */
function assertClean(r: Sent, what: string): void {
  assert.ok(r.status < 500, `${what}: answered ${r.status} ${r.body.slice(0, 200)}`);
  if (r.status >= 400) {
    assert.match(r.contentType, /application\/json/, `${what}: JSON error`);
    const parsed = JSON.parse(r.body) as { error?: unknown; message?: unknown };
    assert.ok(typeof parsed.error === 'string' && typeof parsed.message === 'string', `${what}: {error, message} (${r.body.slice(0, 200)})`);
  }
}

describe('hostile webhooks over HTTP, every inbound source', () => {
  let world: World;
  let service: Service;
  const sources: Array<{ name: string; url: string }> = [];
  let validSent = 0;

  before(async () => {
    world = await startWorld({ overrides: { server: { port: 0, host: '127.0.0.1', bodyLimit: BODY_LIMIT }, log: { level: 'silent' } } });
    service = await startService({ loaded: world.loaded, log: pino({ level: 'silent' }), intake: true, work: false, port: 0, host: '127.0.0.1' });
    world.subscribe(service.url!);
    sources.push({ name: 'kommo', url: world.kommoWebhookUrl(service.url!) });
    for (const [name, v] of world.vendors) if (getDestination(v.type)?.inbound) sources.push({ name, url: world.vendorWebhookUrl(service.url!, name) });
  });
  after(async () => {
    await service?.close();
    await world?.close();
  });

  /** One valid webhook per source, as its vendor would send it: must be stored whatever came before. */
  async function sendValid(): Promise<void> {
    const k = world.kommo;
    const c = k.createContact({ name: `Valid ${validSent}`, email: `valid${validSent}@example.com` });
    k.createLead({ name: `Valid ${validSent}`, contactIds: [c.id] });
    validSent++;
    await k.flushWebhooks();
    for (const [name, v] of world.vendors) {
      if (!v.sim.sendEngagement) continue;
      assert.equal(await v.sim.sendEngagement(world.vendorWebhookUrl(service.url!, name), 'opened', `valid${validSent}@example.com`), 200, `${name} accepts a valid webhook`);
    }
  }

  it('covers Kommo and every registered inbound source', () => {
    const inbound = destinationTypes().filter((t) => getDestination(t)!.inbound);
    assert.deepEqual(sources.map((s) => s.name).sort(), ['kommo', ...inbound].sort());
  });

  it('malformed bodies, wrong content types, invalid UTF-8, deep brackets and injection strings: 4xx JSON, never 5xx', async () => {
    const deep = `leads[status][0]${'[a]'.repeat(2000)}=1`;
    const wide = Array.from({ length: 5000 }, (_, i) => `x${i}=${i}`).join('&');
    const corpus: Array<[string, Buffer | string, string | null]> = [
      ['empty form', '', 'application/x-www-form-urlencoded'],
      ['empty json', '', 'application/json'],
      ['broken percent-encoding', 'leads%5Bstatus%5D%5B0%5D%5Bid%5D=%ZZ&%', 'application/x-www-form-urlencoded'],
      ['unbalanced brackets', 'leads[status[0]][id=1&a]]]=2', 'application/x-www-form-urlencoded'],
      ['deep brackets', deep, 'application/x-www-form-urlencoded'],
      ['thousands of fields', wide, 'application/x-www-form-urlencoded'],
      ['invalid utf-8', Buffer.from([0x6c, 0x3d, 0xff, 0xfe, 0xc3, 0x28, 0x7b, 0x22]), 'application/json'],
      ['truncated json', '{"event_id": "x", "metric": "op', 'application/json'],
      ['json array of junk', '[1, "two", null, {"__proto__": {"polluted": true}}]', 'application/json'],
      ['json scalar', '42', 'application/json'],
      ['text/plain', 'hello', 'text/plain'],
      ['multipart', '--b\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--b--', 'multipart/form-data; boundary=b'],
      ['no content type', 'a=1', null],
      ...HOSTILE_STRINGS.map((s): [string, string, string] => [`injection ${JSON.stringify(s.slice(0, 20))}`, JSON.stringify({ email: s, event: s, metric: s, event_id: s, leads: { status: [{ id: s }] } }), 'application/json']),
      ...HOSTILE_STRINGS.map((s): [string, string, string] => [`form injection ${JSON.stringify(s.slice(0, 20))}`, `leads[status][0][id]=${pct(s)}&account[subdomain]=${pct(s)}`, 'application/x-www-form-urlencoded']),
    ];
    for (const src of sources) {
      for (const [what, body, type] of corpus) assertClean(await send(src.url, body, type), `${src.name}: ${what}`);
      await sendValid();
    }
    assert.equal((await fetch(`${service.url}/healthz`)).status, 200, 'alive');
    assert.equal(Object.prototype.hasOwnProperty.call({}, 'polluted'), false, 'no prototype pollution');
  });

  it('wrong secrets, unknown accounts and sources, forged signatures: 401/404 JSON', async () => {
    for (const src of sources) {
      const wrong = src.url.replace(/\/[^/]+$/, '/not-the-secret-0123456789');
      const r = await send(wrong, '{}', 'application/json');
      assert.equal(r.status, 401, `${src.name}: wrong secret`);
      assertClean(r, `${src.name}: wrong secret`);
      const unknownAccount = src.url.replace(`/webhooks/${world.account}/`, '/webhooks/nobody/');
      assert.equal((await send(unknownAccount, '{}', 'application/json')).status, 404, `${src.name}: unknown account`);
    }
    const unknownSource = `${service.url}/webhooks/${world.account}/nosuchtool/0123456789abcdef0123`;
    assertClean(await send(unknownSource, '{}', 'application/json'), 'unknown source');
    // Every source that verifies a signature or token refuses a forged one and a replay of a stale one.
    for (const [name, v] of world.vendors) {
      const auth = getDestination(v.type)!.inbound?.auth;
      if (!auth || auth.kind === 'path-secret') continue;
      const url = world.vendorWebhookUrl(service.url!, name);
      const forged = await send(url, JSON.stringify({ event_id: 'f1', metric: 'opened', email: 'x@example.com' }), 'application/json', {
        [auth.header]: auth.kind === 'hmac' ? 'a'.repeat(64) : 'Bearer forged-token',
        ...(auth.kind === 'hmac' && auth.timestampHeader ? { [auth.timestampHeader]: String(Math.floor(Date.now() / 1000)) } : {}),
      });
      assert.equal(forged.status, 401, `${name}: forged ${auth.header}`);
      assertClean(forged, `${name}: forged`);
      if (auth.kind === 'hmac' && auth.timestampHeader) {
        const stale = await send(url, '{}', 'application/json', { [auth.header]: 'a'.repeat(64), [auth.timestampHeader]: String(Math.floor(Date.now() / 1000) - 3600) });
        assert.equal(stale.status, 401, `${name}: replayed an hour later`);
      }
    }
    await sendValid();
  });

  it('a body over the limit gets 413 while the sender is still sending', async () => {
    for (const src of sources) {
      const { status, sentWhenAnswered } = await new Promise<{ status: number; sentWhenAnswered: number }>((resolve, reject) => {
        const u = new URL(src.url);
        let sent = 0;
        let answered = false;
        const req = request({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' } }, (res) => {
          answered = true;
          res.resume();
          resolve({ status: res.statusCode ?? 0, sentWhenAnswered: sent });
          req.destroy();
        });
        req.on('error', (err) => {
          if (!answered) reject(err);
        });
        const chunk = Buffer.alloc(64 * 1024, 0x61);
        // Keep sending, up to 40x the limit: the answer must come long before the end.
        const pump = () => {
          if (answered || sent > 40 * BODY_LIMIT) return;
          sent += chunk.length;
          req.write(chunk, () => setTimeout(pump, 2));
        };
        pump();
      });
      assert.equal(status, 413, `${src.name}: 413`);
      assert.ok(sentWhenAnswered < 40 * BODY_LIMIT, `${src.name}: answered while still sending (${sentWhenAnswered} bytes sent)`);
    }
    await sendValid();
  });

  it('nothing valid was lost in between, and the process never crashed', async () => {
    assert.equal((await fetch(`${service.url}/healthz`)).status, 200);
    const stored = await service.store.stats(Date.now());
    // Each sendValid stored one Kommo lead.created and one open per engagement source.
    const perRound = 1 + [...world.vendors.values()].filter((v) => v.sim.sendEngagement).length;
    assert.ok(stored.inboxPending >= validSent * perRound, `${stored.inboxPending} stored >= ${validSent} rounds x ${perRound}`);
  });
});

describe('property-based fuzzing of every parser', () => {
  const text = fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.constantFrom(...HOSTILE_STRINGS));
  const formish = fc.array(fc.tuple(fc.oneof(fc.constantFrom('leads[status][0][id]', 'leads[add][0][status_id]', 'account[subdomain]', 'contacts[update][0][id]', 'a[b][c]', '[]', ']['), text), text), { maxLength: 40 })
    .map((pairs) => pairs.map(([k, v]) => `${pct(k).replace(/%5b/g, '[').replace(/%5d/g, ']')}=${pct(v)}`).join('&'));

  it('the Kommo form parser and webhook normaliser: a result or FormParseError/WebhookBodyError, nothing else', () => {
    fc.assert(fc.property(fc.oneof(text, formish), (raw) => {
      let body: Record<string, unknown>;
      try {
        body = parseBracketForm(raw);
      } catch (err) {
        if (err instanceof FormParseError) return;
        throw err;
      }
      try {
        parseKommoWebhook(body);
      } catch (err) {
        if (!(err instanceof WebhookBodyError)) throw err;
      }
    }), { numRuns: RUNS * 3 });
  });

  it('the Kommo normaliser on arbitrary JSON: a result or WebhookBodyError', () => {
    fc.assert(fc.property(fc.object({ maxDepth: 4 }), (obj) => {
      try {
        parseKommoWebhook(obj);
      } catch (err) {
        if (!(err instanceof WebhookBodyError)) throw err;
      }
    }), { numRuns: RUNS });
  });

  for (const type of destinationTypes()) {
    const inbound = getDestination(type)!.inbound;
    if (!inbound) continue;
    it(`${type}: verify and parse answer arbitrary requests with results or InboundRejected (4xx), nothing else`, () => {
      const settings = getDestination(type)!.settings.parse(getDestination(type)!.simulator().settingsFor('http://127.0.0.1:9/sim'));
      const bodies = fc.oneof(
        text.map((s) => Buffer.from(s)),
        fc.uint8Array({ maxLength: 512 }).map((b) => Buffer.from(b)),
        fc.jsonValue({ maxDepth: 4 }).map((v) => Buffer.from(JSON.stringify(v))),
        fc.record({ event_id: text, metric: text, eventName: text, email: text, event: text, data: fc.object({ maxDepth: 2 }) }, { requiredKeys: [] }).map((v) => Buffer.from(JSON.stringify(v))),
      );
      const headerValue = fc.oneof(fc.constant(undefined), text, fc.array(text, { maxLength: 2 }));
      fc.assert(fc.property(bodies, fc.dictionary(fc.constantFrom('x-cio-signature', 'x-cio-timestamp', 'authorization', 'content-type', 'x-fake-webhook-token'), headerValue), fc.dictionary(fc.constantFrom('event', 'type'), text), (rawBody, headers, query) => {
        const req: InboundRequest = { rawBody, headers, query, now: Date.now() };
        try {
          inbound.verify(req, settings);
          const events = inbound.parse(req, type, settings);
          for (const e of events) {
            assert.ok(e.dedupKey.length > 0);
            assert.equal(e.event.type, 'engagement');
          }
        } catch (err) {
          if (!(err instanceof InboundRejected)) throw err;
          assert.ok(err.status >= 400 && err.status < 500);
        }
      }), { numRuns: RUNS });
    });
  }
});
