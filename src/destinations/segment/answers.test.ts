import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AnyVendorAnswer } from '../http.js';
import type { ItemResult, SyncOp } from '../types.js';
import { MAX_SPLIT_REQUESTS, planBatches, readAnswer, retryAfterMs, SEGMENT_WIRE, sendBatches, type Answer, type BatchBody } from './ops.js';

const T = 1_700_000_000_123;
const answer = (status: number, body: unknown = undefined, headers: Record<string, string> = {}): AnyVendorAnswer => ({ status, headers, body });

describe('segment answers -> results', () => {
  const table: Array<{ name: string; res: AnyVendorAnswer; want: Answer }> = [
    { name: 'Segment 200 {"success":true}', res: answer(200, { success: true }), want: { all: { ok: true, httpStatus: 200 }, stop: false } },
    { name: 'RudderStack 200 OK (text)', res: answer(200, 'OK'), want: { all: { ok: true, httpStatus: 200 }, stop: false } },
    { name: 'Segment 400 (size or JSON): refused whole, to be split', res: answer(400, { success: false, message: 'Invalid JSON' }), want: { refused: 'HTTP 400: Invalid JSON', httpStatus: 400 } },
    { name: 'RudderStack 413: refused whole', res: answer(413, 'Request size exceeds max limit'), want: { refused: 'HTTP 413: Request size exceeds max limit', httpStatus: 413 } },
    {
      name: 'a 400 about the write key is an auth failure for every request',
      res: answer(400, { success: false, message: 'An invalid write key was provided' }),
      want: { all: { fail: { reason: 'HTTP 400: An invalid write key was provided', code: 'auth' }, httpStatus: 400 }, stop: true },
    },
    { name: 'RudderStack 401 Invalid Write Key', res: answer(401, 'Invalid Write Key'), want: { all: { fail: { reason: 'HTTP 401: Invalid Write Key', code: 'auth' }, httpStatus: 401 }, stop: true } },
    { name: 'RudderStack 404 Source is disabled', res: answer(404, 'Source is disabled'), want: { all: { fail: { reason: 'HTTP 404: Source is disabled', code: 'not_found' }, httpStatus: 404 }, stop: true } },
    {
      name: 'Segment 429 with Retry-After',
      res: answer(429, { success: false, message: 'Too Many Requests' }, { 'retry-after': '7', 'x-ratelimit-reset': '30' }),
      want: { all: { retry: { reason: 'HTTP 429: Too Many Requests', afterMs: 7000 }, httpStatus: 429 }, stop: true },
    },
    { name: '429 with only X-RateLimit-Reset', res: answer(429, undefined, { 'x-ratelimit-reset': '12' }), want: { all: { retry: { reason: 'HTTP 429', afterMs: 12_000 }, httpStatus: 429 }, stop: true } },
    { name: 'RudderStack 429 without headers: the worker backs off', res: answer(429, 'Max Requests Limit reached'), want: { all: { retry: { reason: 'HTTP 429: Max Requests Limit reached' }, httpStatus: 429 }, stop: true } },
    { name: '503', res: answer(503, undefined, { 'retry-after': '3' }), want: { all: { retry: { reason: 'HTTP 503', afterMs: 3000 }, httpStatus: 503 }, stop: true } },
    { name: '408, 410 and 460 are retried, as the vendor library does', res: answer(460), want: { all: { retry: { reason: 'HTTP 460' }, httpStatus: 460 }, stop: true } },
    { name: '501 is final', res: answer(501, 'Not Implemented'), want: { all: { fail: { reason: 'HTTP 501: Not Implemented', code: 'rejected' }, httpStatus: 501 }, stop: true } },
    { name: 'other 4xx are invalid', res: answer(422, { message: 'nope' }), want: { all: { fail: { reason: 'HTTP 422: nope', code: 'invalid' }, httpStatus: 422 }, stop: true } },
    { name: 'a network error or timeout is retried', res: { status: 0, headers: {}, body: undefined, error: 'timed out after 10 ms' }, want: { all: { retry: { reason: 'timed out after 10 ms' } }, stop: true } },
  ];
  for (const row of table) it(row.name, () => assert.deepEqual(readAnswer(row.res), row.want));

  it('reads X-RateLimit-Reset as seconds, or as a unix time when it is one', () => {
    const now = 1_700_000_000_000;
    assert.equal(retryAfterMs({ 'x-ratelimit-reset': '5' }, now), 5000);
    assert.equal(retryAfterMs({ 'x-ratelimit-reset': String(now / 1000 + 9) }, now), 9000);
    assert.equal(retryAfterMs({ 'X-RateLimit-Reset': '2' }, now), 2000);
    assert.equal(retryAfterMs({ 'x-ratelimit-reset': 'soon' }, now), undefined);
  });
});

describe('segment sendBatches', () => {
  const ops = (n: number, name = (i: number) => `e${i}`): SyncOp[] =>
    Array.from({ length: n }, (_, i) => ({ kind: 'trackEvent', person: { email: `p${i}@example.com` }, name: name(i), properties: {}, timestamp: T, messageId: `m${i}` }));
  const plan = (list: SyncOp[], maxMessages = 2500) =>
    planBatches(list, { vendor: 'Segment', identifyBy: 'email', wire: { ...SEGMENT_WIRE, maxMessages }, destination: 'segment', sendGroups: true, sentAt: 'now', unsupported: {} });
  const kinds = (results: ItemResult[]) => results.map((r) => ('ok' in r ? 'ok' : 'fail' in r ? r.fail.code : 'retry'));

  it('splits a refused batch until the message the vendor objects to fails alone', async () => {
    const sent: string[][] = [];
    // The vendor refuses any request that contains "bad".
    const send = async (body: BatchBody) => {
      const names = body.batch.map((m) => (m.type === 'track' ? m.event : m.type));
      sent.push(names);
      return names.includes('bad') ? answer(400, { message: 'Bad Request' }) : answer(200, { success: true });
    };
    const list = ops(8, (i) => (i === 5 ? 'bad' : `e${i}`));
    const results = await sendBatches(plan(list), list.length, send, 'Segment');
    assert.deepEqual(kinds(results), ['ok', 'ok', 'ok', 'ok', 'ok', 'invalid', 'ok', 'ok']);
    assert.equal((results[5] as { fail: { reason: string } }).fail.reason, 'Segment refused the message: HTTP 400: Bad Request');
    assert.deepEqual(sent[0]!.length, 8);
    assert.ok(sent.length <= 1 + 2 * Math.ceil(Math.log2(8)), `${sent.length} requests`);
  });

  it('stops splitting when the budget is spent, and fails what is left whole', async () => {
    let requests = 0;
    const send = async () => {
      requests++;
      return answer(400, { message: 'Bad Request' });
    };
    const list = ops(200);
    const results = await sendBatches(plan(list), list.length, send, 'Segment');
    assert.equal(requests, 1 + MAX_SPLIT_REQUESTS);
    assert.ok(results.every((r) => 'fail' in r && r.fail.code === 'invalid'));
    assert.ok(results.some((r) => 'fail' in r && /not split further/.test(r.fail.reason)));
  });

  it('answers the remaining requests alike, unsent, after a 429', async () => {
    let requests = 0;
    const send = async () => (++requests === 2 ? answer(429, undefined, { 'retry-after': '4' }) : answer(200, { success: true }));
    const list = ops(10);
    const results = await sendBatches(plan(list, 2), list.length, send, 'Segment');
    assert.equal(requests, 2);
    assert.deepEqual(kinds(results), ['ok', 'ok', ...Array(8).fill('retry')]);
    assert.deepEqual(results[9], { retry: { reason: 'HTTP 429', afterMs: 4000 }, httpStatus: 429 });
  });

  it('keeps locally decided results in their places', async () => {
    const list = [...ops(2), { kind: 'erasePerson', person: { email: 'x@example.com' } } as SyncOp, ...ops(1)];
    const results = await sendBatches(plan(list), list.length, async () => answer(200, { success: true }), 'Segment');
    assert.deepEqual(kinds(results), ['ok', 'ok', 'invalid', 'ok']);
  });
});
