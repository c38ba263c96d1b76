import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { OAuthTokenProvider, oauthStoreKey, type StoredTokenPair } from './auth.js';
import { KommoClient } from './client.js';
import { KommoApiError } from './transport.js';
import { CircuitBreaker, SlidingWindowLimiter } from './rate-limit.js';
import { KommoSimulator } from './simulator/index.js';
import { openSqliteStore } from '../store/sqlite.js';
import type { Store } from '../store/store.js';

const CLIENT_ID = 'client-1';
const CLIENT_SECRET = 'secret-1';
const REDIRECT = 'https://sync.example/oauth';
const ACCOUNT = 'acme-oauth';

describe('OAuth token provider over the simulator', () => {
  let sim: KommoSimulator;
  let baseUrl: string;
  let store: Store;

  beforeEach(async () => {
    sim = new KommoSimulator({
      subdomain: 'acme',
      oauth: { clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, refreshToken: 'refresh-0', accessToken: 'access-0', redirectUri: REDIRECT },
    });
    baseUrl = await sim.listen(0);
    store = await openSqliteStore(':memory:');
    await store.migrate();
  });
  afterEach(async () => {
    await sim.close();
    await store.close();
  });

  // One limiter for the token endpoint and the API, as createKommoClient wires it: same host, same budget.
  let limiter: SlidingWindowLimiter;
  beforeEach(() => {
    limiter = new SlidingWindowLimiter(7);
  });
  function provider(s: Pick<Store, 'kvGet' | 'kvSet' | 'withLock'> = store, refreshToken = 'refresh-0'): OAuthTokenProvider {
    return new OAuthTokenProvider({ account: ACCOUNT, baseUrl, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, refreshToken, redirectUri: REDIRECT, store: s, limiter });
  }
  function clientWith(auth: OAuthTokenProvider): KommoClient {
    return new KommoClient({ account: ACCOUNT, baseUrl, auth, limiter, breaker: new CircuitBreaker() });
  }
  async function stored(): Promise<StoredTokenPair> {
    return JSON.parse((await store.kvGet(oauthStoreKey(ACCOUNT)))!) as StoredTokenPair;
  }

  it('20 concurrent calls with an expired token cause exactly one refresh, stored before the new token is used', async () => {
    // The stored access token has run out; config's refresh token is stale: the stored one must win.
    await store.kvSet(oauthStoreKey(ACCOUNT), JSON.stringify({ accessToken: 'access-0', refreshToken: 'refresh-0', expiresAt: Date.now() - 1000 }));
    const violations: string[] = [];
    // A slow store write makes an unawaited kvSet visible: API calls would slip in before it.
    const watched: Pick<Store, 'kvGet' | 'kvSet' | 'withLock'> = {
      kvGet: (k) => store.kvGet(k),
      withLock: (n, fn) => store.withLock(n, fn),
      kvSet: async (k, v, ttl, now) => {
        await new Promise((r) => setTimeout(r, 50));
        const grant = sim.requests.findIndex((r) => r.path === '/oauth2/access_token');
        if (sim.requests.slice(grant + 1).some((r) => r.path.startsWith('/api/'))) violations.push('API call before the pair was stored');
        await store.kvSet(k, v, ttl, now);
      },
    };
    const auth = provider(watched, 'stale-config-token');
    const client = clientWith(auth);
    const accounts = await Promise.all(Array.from({ length: 20 }, () => client.getAccount()));

    assert.equal(accounts.length, 20);
    assert.equal(sim.oauthRefreshes.length, 1);
    assert.equal(sim.oauthRefreshes[0]!.refreshToken, 'refresh-0');
    assert.deepEqual(violations, []);
    const pair = await stored();
    assert.equal(pair.refreshToken, sim.oauthRefreshes[0]!.issuedRefreshToken);
    assert.equal(pair.accessToken, sim.oauthRefreshes[0]!.issuedAccessToken);
    assert.ok(pair.expiresAt > Date.now() + 3_600_000);
    assert.equal(sim.requests.filter((r) => r.status === 401).length, 0, 'refreshed proactively, no 401');

    // Another process on the same store (same config) finds the fresh pair and does not refresh again.
    const second = clientWith(provider(store, 'stale-config-token'));
    assert.equal((await second.getAccount()).subdomain, 'acme');
    assert.equal(sim.oauthRefreshes.length, 1);
  });

  it('with nothing stored, the refresh token from config is used once and the rotated pair replaces it', async () => {
    const client = clientWith(provider());
    await Promise.all(Array.from({ length: 5 }, () => client.getPipelines()));
    assert.equal(sim.oauthRefreshes.length, 1);
    assert.equal(sim.oauthRefreshes[0]!.refreshToken, 'refresh-0');
    assert.notEqual((await stored()).refreshToken, 'refresh-0');
  });

  it('a new refresh token in the config (re-authorized integration) replaces the stored chain', async () => {
    await clientWith(provider()).getAccount();
    const before = await stored();
    // The admin re-authorized: Kommo issued a fresh code, exchanged for a new refresh token.
    const code = sim.issueAuthorizationCode();
    const res = await fetch(`${baseUrl}/oauth2/access_token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_id: CLIENT_ID, client_secret: CLIENT_SECRET, grant_type: 'authorization_code', code, redirect_uri: REDIRECT }),
    });
    const fresh = (await res.json()) as { refresh_token: string };
    const refreshesBefore = sim.oauthRefreshes.filter((r) => r.grantType === 'refresh_token').length;
    await clientWith(provider(store, fresh.refresh_token)).getAccount();
    const used = sim.oauthRefreshes.filter((r) => r.grantType === 'refresh_token');
    assert.equal(used.length, refreshesBefore + 1);
    assert.equal(used.at(-1)!.refreshToken, fresh.refresh_token, 'the config token was used, not the stored one');
    assert.notEqual((await stored()).refreshToken, before.refreshToken);
  });

  it('a 401 on a token believed valid triggers one refresh and one retry per call', async () => {
    await store.kvSet(oauthStoreKey(ACCOUNT), JSON.stringify({ accessToken: 'access-0', refreshToken: 'refresh-0', expiresAt: Date.now() + 3_600_000 }));
    sim.expireAccessTokens();
    const client = clientWith(provider());
    const results = await Promise.all(Array.from({ length: 20 }, () => client.getAccount()));
    assert.equal(results.length, 20);
    assert.equal(sim.oauthRefreshes.length, 1);
    assert.ok(sim.requests.some((r) => r.status === 401));
    assert.equal(sim.burnedRefreshTokenReuses.length, 0);
  });

  it('a refused refresh surfaces as a 401 KommoApiError that names no token', async () => {
    const client = clientWith(provider(store, 'revoked-token'));
    const err = await client.getAccount().catch((e: unknown) => e);
    assert.ok(err instanceof KommoApiError);
    assert.equal(err.status, 401);
    assert.match(err.message, /re-authorize/);
    assert.ok(!err.message.includes('revoked-token') && !err.message.includes(CLIENT_SECRET));
    assert.equal(await store.kvGet(oauthStoreKey(ACCOUNT)), null);
  });
});
