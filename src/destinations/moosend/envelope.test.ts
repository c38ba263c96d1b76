import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AnyVendorAnswer } from '../http.js';
import { classifyAnswer, ignoredEmails, parseMoosendDate, RATE_WINDOW_MS, readEnvelope } from './envelope.js';

const answer = (status: number, body: unknown, headers: Record<string, string> = {}): AnyVendorAnswer => ({ status, headers, body });
/** The verdict's shape, for compact tables: ok | retry[:afterMs] | fail:<code>. */
const shape = (a: AnyVendorAnswer, absentIsOk = false): string => {
  const r = classifyAnswer(a, { absentIsOk });
  if ('ok' in r) return 'ok';
  if ('retry' in r) return r.retry.afterMs === undefined ? 'retry' : `retry:${r.retry.afterMs}`;
  return `fail:${r.fail.code}`;
};

describe('moosend envelope classification', () => {
  const table: Array<[string, AnyVendorAnswer, string, boolean?]> = [
    ['Code 0', answer(200, { Code: 0, Error: null, Context: null }), 'ok'],
    ['Code 0 with ignored addresses (a bulk call) is still ok as a whole', answer(200, { Code: 0, Error: '1 items with invalid email address were ignored: x@y', Context: [] }), 'ok'],
    ['rate limit inside HTTP 200 (KB spelling)', answer(200, { Code: 429, Error: 'RATE-LIMITING', Context: null }), `retry:${RATE_WINDOW_MS}`],
    ['rate limit, help-centre spelling, other code', answer(200, { Code: 9, Error: 'RATE_LIMITING', Context: null }), `retry:${RATE_WINDOW_MS}`],
    ['rate limit with HTTP 429 and a Retry-After', answer(429, { Code: 429, Error: 'RATE-LIMITING' }, { 'retry-after': '7' }), 'retry:7000'],
    ['a bad API key inside HTTP 200', answer(200, { Code: 104, Error: 'API_KEY_NOT_VALID', Context: null }), 'fail:auth'],
    ['HTTP 401 with an envelope', answer(401, { Code: 1, Error: 'Unauthorized' }), 'fail:auth'],
    ['HTTP 401 without one', answer(401, 'Unauthorized'), 'fail:auth'],
    ['LIST_NOT_FOUND', answer(200, { Code: 200, Error: 'LIST_NOT_FOUND', Context: null }), 'fail:not_found'],
    ['MEMBER_NOT_FOUND for a lookup', answer(200, { Code: 300, Error: 'MEMBER_NOT_FOUND', Context: null }), 'fail:not_found'],
    ['MEMBER_NOT_FOUND for a removal: already gone', answer(200, { Code: 300, Error: 'MEMBER_NOT_FOUND', Context: null }), 'ok', true],
    ['validation failure (-2) with messages', answer(200, { Code: -2, Error: 'VALIDATION_ERROR', Context: { Messages: [{ Message: 'Email is not valid' }] } }), 'fail:invalid'],
    ['VALIDATION_ERROR (501)', answer(200, { Code: 501, Error: 'VALIDATION_ERROR', Context: null }), 'fail:invalid'],
    ['an unknown code is retried (dead-lettered at max age)', answer(200, { Code: -30, Error: 'Unknown Error', Context: null }), 'retry'],
    ['a numeric-string code', answer(200, { Code: '104', Error: 'API_KEY_NOT_VALID' }), 'fail:auth'],
    ['HTTP 200 without an envelope (a proxy page)', answer(200, '<html>maintenance</html>'), 'retry'],
    ['HTTP 503 page', answer(503, '<html>503</html>', { 'retry-after': '3' }), 'retry:3000'],
    ['HTTP 500 with an envelope', answer(500, { Code: -1, Error: 'oops' }), 'retry'],
    ['HTTP 404 (wrong base URL)', answer(404, 'Not Found'), 'fail:not_found'],
    ['network error', { status: 0, headers: {}, body: undefined, error: 'timed out after 300 ms' }, 'retry'],
  ];
  for (const [name, a, expected, absentIsOk] of table) {
    it(name, () => assert.equal(shape(a, absentIsOk), expected));
  }

  it('says the code, its name and Moosend\'s messages', () => {
    const r = classifyAnswer(answer(200, { Code: -2, Error: 'VALIDATION_ERROR', Context: { Messages: [{ Message: 'Email is not valid' }, 'Name too long'] } }));
    assert.ok('fail' in r);
    assert.equal(r.fail.reason, 'Moosend Code -2 VALIDATION_ERROR: Email is not valid; Name too long');
    const n = classifyAnswer(answer(200, { Code: 200, Error: 'LIST_NOT_FOUND', Context: null }));
    assert.ok('fail' in n);
    assert.equal(n.fail.reason, 'Moosend Code 200 LIST_NOT_FOUND');
  });

  it('reads the envelope tolerantly', () => {
    assert.deepEqual(readEnvelope({ code: 0, error: null, context: [1] }), { code: 0, error: null, context: [1] });
    assert.equal(readEnvelope({ Error: 'no code' }), undefined);
    assert.equal(readEnvelope([{ Code: 0 }]), undefined);
    assert.equal(readEnvelope('Code: 0'), undefined);
  });

  it('lists the addresses a bulk subscribe ignored', () => {
    assert.deepEqual([...ignoredEmails('2 items with invalid email address were ignored: email@email, Email2@email')], ['email@email', 'email2@email']);
    assert.deepEqual([...ignoredEmails(null)], []);
    assert.deepEqual([...ignoredEmails('something else')], []);
  });

  it('reads .NET JSON dates, ISO strings and unix times', () => {
    assert.equal(parseMoosendDate('/Date(1465379934028)/'), 1465379934028);
    assert.equal(parseMoosendDate('/Date(1461777152597+0100)/'), 1461777152597, 'the offset only says where it was written');
    assert.equal(parseMoosendDate('\\/Date(1368710504000+0300)\\/'.replace(/\\/g, '')), 1368710504000);
    assert.equal(parseMoosendDate('2026-03-14T09:30:00Z'), Date.UTC(2026, 2, 14, 9, 30));
    assert.equal(parseMoosendDate(1_700_000_000), 1_700_000_000_000);
    assert.equal(parseMoosendDate('1700000000123'), 1_700_000_000_123);
    assert.equal(parseMoosendDate(null), undefined);
    assert.equal(parseMoosendDate('soon'), undefined);
  });
});
