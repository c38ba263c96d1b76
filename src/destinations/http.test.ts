import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { pino, type Logger } from 'pino';
import { classifyHttp, parseRetryAfter, redactHeaders, redactUrl, vendorRequest } from './http.js';
import { type ItemResult } from './types.js';


function memoryLogger(): { log: Logger; text: () => string } {
  const lines: string[] = [];
  return { log: pino({ level: 'trace' }, { write: (s: string) => void lines.push(s) }), text: () => lines.join('') };
}


describe('destinations/http', () => {
  it('classifies HTTP answers', () => {
    const now = Date.now();
    const table: Array<[number, Record<string, string>, unknown, ItemResult]> = [
      [204, {}, undefined, { ok: true, httpStatus: 204 }],
      [408, {}, undefined, { retry: { reason: 'HTTP 408' }, httpStatus: 408 }],
      [503, { 'Retry-After': '3' }, 'down', { retry: { reason: 'HTTP 503: down', afterMs: 3000 }, httpStatus: 503 }],
      [403, {}, { message: 'forbidden' }, { fail: { reason: 'HTTP 403: forbidden', code: 'auth' }, httpStatus: 403 }],
      [404, {}, { msg: 'no such list' }, { fail: { reason: 'HTTP 404: no such list', code: 'not_found' }, httpStatus: 404 }],
      [400, {}, { meta: { errors: ['a', 'b'] } }, { fail: { reason: 'HTTP 400: a; b', code: 'invalid' }, httpStatus: 400 }],
      [422, {}, { error: { message: 'bad email' } }, { fail: { reason: 'HTTP 422: bad email', code: 'invalid' }, httpStatus: 422 }],
      [302, {}, undefined, { fail: { reason: 'unexpected HTTP 302', code: 'rejected' }, httpStatus: 302 }],
    ];
    for (const [status, headers, body, want] of table) assert.deepEqual(classifyHttp(status, headers, body), want, `HTTP ${status}`);
    const dated = classifyHttp(429, { 'retry-after': new Date(now + 30_000).toUTCString() }, undefined);
    assert.ok('retry' in dated && dated.retry.afterMs !== undefined && dated.retry.afterMs > 28_000 && dated.retry.afterMs <= 30_000);
  });

  it('reads Retry-After as seconds or an HTTP date', () => {
    assert.equal(parseRetryAfter('120'), 120_000);
    assert.equal(parseRetryAfter('Wed, 21 Oct 2015 07:28:00 GMT', Date.parse('Wed, 21 Oct 2015 07:27:00 GMT')), 60_000);
    assert.equal(parseRetryAfter('Wed, 21 Oct 2015 07:28:00 GMT', Date.parse('Wed, 21 Oct 2015 08:00:00 GMT')), 0);
    assert.equal(parseRetryAfter('soon'), undefined);
    assert.equal(parseRetryAfter(undefined), undefined);
  });

  it('redacts credential headers and URL parameters', () => {
    assert.deepEqual(
      redactHeaders({ Authorization: 'Basic c2l0ZTprZXk=', 'Api-Key': 'k1', 'X-Encharge-Token': 't1', 'content-type': 'application/json' }),
      { Authorization: 'Basic [redacted]', 'Api-Key': '[redacted]', 'X-Encharge-Token': '[redacted]', 'content-type': 'application/json' },
    );
    assert.equal(redactUrl('https://u:p@api.moosend.com/v3/lists.json?apikey=SECRET&page=2'), 'https://redacted:redacted@api.moosend.com/v3/lists.json?apikey=redacted&page=2');
  });

  describe('vendorRequest over real HTTP', () => {
    let server: Server;
    let base: string;
    // The host a vendor redirects to (another region): it must never receive our request.
    let otherServer: Server;
    let other = '';
    const otherHits: Array<string | undefined> = [];
    before(async () => {
      otherServer = createServer((req, res) => {
        otherHits.push(req.headers.authorization);
        res.end('{}');
      });
      await new Promise<void>((resolve) => otherServer.listen(0, '127.0.0.1', resolve));
      other = `http://localhost:${(otherServer.address() as AddressInfo).port}`;
      server = createServer((req, res) => {
        if (req.url === '/slow') return void setTimeout(() => res.end('{}'), 500);
        if (req.url === '/moved') {
          res.writeHead(301, { location: `${other}/api/v2/batch` });
          return void res.end();
        }
        // A careless vendor that echoes the credentials back in its error.
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ message: `bad key ${req.headers.authorization} ${req.url}` }));
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    after(() => new Promise<void>((resolve) => server.close(() => otherServer.close(() => resolve()))));

    it('does not follow a redirect (it would drop the credentials) and names where it points', async () => {
      const mem = memoryLogger();
      const res = await vendorRequest({ method: 'POST', url: `${base}/moved`, headers: { authorization: 'Basic c2l0ZTprZXk=' }, json: {}, timeoutMs: 2000, log: mem.log });
      const result = classifyHttp(res.status, res.headers, res.body);
      assert.ok('fail' in result && result.fail.code === 'rejected', JSON.stringify(result));
      assert.match(result.fail.reason, /HTTP 301: the API redirects to http:\/\/localhost:\d+\/api\/v2\/batch; set the destination's region or baseUrl/);
      assert.deepEqual(otherHits, [], 'the redirect target got nothing');
    });

    it('never lets a credential reach a log line or an error', async () => {
      const mem = memoryLogger();
      const auth = `Basic ${Buffer.from('site-abc123:key-XYZ789').toString('base64')}`;
      const res = await vendorRequest({ method: 'POST', url: `${base}/x?apikey=q-SECRET-1`, headers: { Authorization: auth }, json: { a: 1 }, timeoutMs: 2000, log: mem.log });
      const result = classifyHttp(res.status, res.headers, res.body);
      assert.ok('fail' in result && result.fail.code === 'invalid');
      const seen = JSON.stringify(result) + mem.text();
      assert.match(seen, /vendor request/);
      for (const secret of ['site-abc123', 'key-XYZ789', auth.slice(6), 'q-SECRET-1']) assert.ok(!seen.includes(secret), `${secret} leaked`);
    });

    it('turns a timeout and a refused connection into errors, not throws', async () => {
      const mem = memoryLogger();
      const slow = await vendorRequest({ method: 'GET', url: `${base}/slow`, timeoutMs: 50, log: mem.log });
      assert.equal(slow.status, 0);
      assert.equal(slow.error, 'timed out after 50 ms');
      const refused = await vendorRequest({ method: 'GET', url: 'http://127.0.0.1:1/x', timeoutMs: 1000, log: mem.log });
      assert.equal(refused.status, 0);
      assert.match(refused.error ?? '', /network error/);
    });
  });
});
