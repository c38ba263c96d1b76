import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import Fastify, { type FastifyBaseLogger } from 'fastify';
import { createLogger } from '../observability/logger.js';
import { lazyRequestLogger } from './request-logger.js';

function capture(): { lines: Array<Record<string, unknown>>; stream: Writable } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { lines, stream };
}

test('the request logger builds its pino child on the first log call, with the request bindings', () => {
  const { lines, stream } = capture();
  const parent = createLogger({ destination: stream, level: 'info' });
  let children = 0;
  const child = parent.child.bind(parent);
  parent.child = ((...args: Parameters<typeof child>) => {
    children += 1;
    return child(...args);
  }) as typeof parent.child;

  const log = lazyRequestLogger(parent as FastifyBaseLogger, { reqId: 'req-7' }, {});
  assert.equal(log.level, 'info');
  assert.equal(children, 0, 'no child until something is logged');

  log.warn({ code: 'x' }, 'first');
  log.error('second %s', 'line');
  log.debug('below the level: not written');
  assert.equal(children, 1, 'one child, reused');
  assert.deepEqual(lines.map((l) => [l.reqId, l.msg, l.code]), [['req-7', 'first', 'x'], ['req-7', 'second line', undefined]]);
});

test('Fastify requests log through it: an error line carries the request id and redaction still applies', async () => {
  const { lines, stream } = capture();
  const log = createLogger({ destination: stream, level: 'info' });
  const app = Fastify({ loggerInstance: log as FastifyBaseLogger, childLoggerFactory: lazyRequestLogger, genReqId: () => 'r-42' });
  app.get('/boom', async (req) => {
    req.log.error({ headers: { authorization: 'Bearer s3cret' } }, 'failed here');
    return { ok: true };
  });
  app.get('/quiet', async () => ({ ok: true }));
  try {
    assert.equal((await app.inject('/quiet')).statusCode, 200);
    assert.equal((await app.inject('/boom')).statusCode, 200);
  } finally {
    await app.close();
  }
  const line = lines.find((l) => l.msg === 'failed here');
  assert.ok(line, JSON.stringify(lines));
  assert.equal(line.reqId, 'r-42');
  assert.deepEqual(line.headers, { authorization: '[redacted]' });
  assert.ok(!JSON.stringify(lines).includes('s3cret'));
});
