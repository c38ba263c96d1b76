import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfigText } from '../config/load.js';
import { listenPort } from './context.js';
import { UsageError } from './errors.js';

const config = (server: string) => parseConfigText(`${server}accounts:
  acme:
    kommo: { subdomain: acme, accessToken: t, webhookSecret: 0123456789abcdef0123 }
`, 'kommo-sync.yaml', {});

describe('listenPort: --port > server.port set in the file > $PORT > 8080', () => {
  const cases: Array<[string, string, number | undefined, string | undefined, number]> = [
    ['--port wins over everything', 'server: { port: 9000 }\n', 7000, '5000', 7000],
    ['server.port in the file wins over PORT', 'server: { port: 9000 }\n', undefined, '5000', 9000],
    ['server.port: 8080 written out still counts as set', 'server: { port: 8080 }\n', undefined, '5000', 8080],
    ['PORT when the file does not set server.port', 'server: { host: 127.0.0.1 }\n', undefined, '5000', 5000],
    ['PORT when there is no server block at all', '', undefined, '5000', 5000],
    ['8080 when nothing says', '', undefined, undefined, 8080],
    ['an empty PORT is unset', '', undefined, '', 8080],
  ];
  for (const [name, server, flag, port, expected] of cases) {
    it(name, () => {
      assert.equal(listenPort(config(server), flag, port === undefined ? {} : { PORT: port }), expected);
    });
  }

  it('a PORT that is not a port number is an error naming it', () => {
    assert.throws(() => listenPort(config(''), undefined, { PORT: 'eighty' }), (err: unknown) => err instanceof UsageError && /PORT: expected a port number 0-65535, got "eighty"/.test(err.message));
    assert.throws(() => listenPort(config(''), undefined, { PORT: '70000' }), UsageError);
  });
});
