/**
 * Where the Kommo client gets its Bearer token.
 *
 * Long-lived tokens are static. OAuth access tokens last 24 h and every refresh ROTATES the refresh
 * token (the old one dies once the new one is used), so two refreshes racing each other — in this
 * process or in another worker on the same store — can lose the account. Hence:
 * - single flight: concurrent callers in a process share one refresh;
 * - across processes the refresh runs under `store.withLock`, and re-reads the stored pair first
 *   (someone else may have refreshed while we waited);
 * - the rotated pair is written to the store BEFORE the new access token is used, so a crash right
 *   after a refresh never leaves us holding only a refresh token that nobody stored.
 * Tokens never appear in errors or logs.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { Store } from '../store/store.js';
import type { RateLimiter } from './rate-limit.js';

export interface TokenProvider {
  /** A token believed valid now (refreshing first when it is about to expire). */
  token(signal?: AbortSignal): Promise<string>;
  /**
   * Kommo answered 401 to `rejected`. Returns a different token to retry with once, or null when
   * there is nothing to refresh (long-lived token): the 401 is final.
   */
  unauthorized(rejected: string, signal?: AbortSignal): Promise<string | null>;
}

export class StaticTokenProvider implements TokenProvider {
  constructor(private readonly accessToken: string) {}
  async token(): Promise<string> {
    return this.accessToken;
  }
  async unauthorized(): Promise<null> {
    return null;
  }
}

/** The refresh itself failed (revoked integration, expired refresh token, Kommo down). */
export class OAuthRefreshError extends Error {
  override name = 'OAuthRefreshError';
  constructor(
    /** HTTP status of the token endpoint, 0 when it did not answer. */
    readonly status: number,
    readonly detail: string,
  ) {
    super(`Kommo OAuth refresh failed (${status || 'no response'}): ${detail}`);
  }
}

/** What we keep in the store under `kommo-oauth:<account>`. */
const storedPairSchema = z.object({
  accessToken: z.string().min(1),
  refreshToken: z.string().min(1),
  /** Unix ms. */
  expiresAt: z.number(),
  /**
   * sha256 of the config refresh token this chain of rotations started from. When the config holds
   * a different one (the integration was re-authorized), the stored chain is stale and ignored.
   */
  seed: z.string().optional(),
});
export type StoredTokenPair = z.infer<typeof storedPairSchema>;

/** Kommo's `POST /oauth2/access_token` answer. */
const tokenResponseSchema = z.looseObject({
  token_type: z.string().optional(),
  expires_in: z.number().positive(),
  access_token: z.string().min(1),
  refresh_token: z.string().min(1),
});

export interface OAuthOptions {
  account: string;
  /** Account root, e.g. https://acme.kommo.com (no trailing slash needed). */
  baseUrl: string;
  clientId: string;
  clientSecret: string;
  /** From config: used only while the store holds no pair (i.e. the very first refresh). */
  refreshToken: string;
  redirectUri: string;
  store: Pick<Store, 'kvGet' | 'kvSet' | 'withLock'>;
  /** The account's limiter: the token endpoint is on the same host and counts against the 7 rps. */
  limiter?: RateLimiter;
  timeoutMs?: number;
  /** Refresh this long before `expires_in` runs out (default 5 min). */
  refreshMarginMs?: number;
  now?: () => number;
}

export function oauthStoreKey(account: string): string {
  return `kommo-oauth:${account}`;
}

export class OAuthTokenProvider implements TokenProvider {
  private current: StoredTokenPair | null = null;
  private inflight: Promise<string> | null = null;
  private readonly key: string;
  private readonly seed: string;
  private readonly margin: number;
  private readonly now: () => number;
  /** How many refreshes this instance performed (metrics and tests). */
  refreshes = 0;

  constructor(private readonly opts: OAuthOptions) {
    this.key = oauthStoreKey(opts.account);
    this.seed = createHash('sha256').update(opts.refreshToken).digest('hex');
    this.margin = opts.refreshMarginMs ?? 5 * 60_000;
    this.now = opts.now ?? Date.now;
  }

  async token(signal?: AbortSignal): Promise<string> {
    if (this.current && this.fresh(this.current)) return this.current.accessToken;
    if (!this.current) {
      // First use in this process: another process (or an earlier run) may have a valid pair.
      const stored = await this.readStored();
      if (stored && this.fresh(stored)) {
        this.current = stored;
        return stored.accessToken;
      }
    }
    return this.refresh(null, signal);
  }

  async unauthorized(rejected: string, signal?: AbortSignal): Promise<string> {
    // Someone in this process already replaced the rejected token: use theirs.
    if (this.current && this.current.accessToken !== rejected && this.fresh(this.current)) {
      return this.current.accessToken;
    }
    return this.refresh(rejected, signal);
  }

  private fresh(p: StoredTokenPair): boolean {
    return p.expiresAt - this.margin > this.now();
  }

  private refresh(rejected: string | null, signal?: AbortSignal): Promise<string> {
    this.inflight ??= this.refreshLocked(rejected, signal).finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  private refreshLocked(rejected: string | null, signal?: AbortSignal): Promise<string> {
    return this.opts.store.withLock(this.key, async () => {
      const stored = await this.readStored();
      // Another process refreshed while we waited for the lock: its pair is good, do not rotate again.
      if (stored && stored.accessToken !== rejected && this.fresh(stored)) {
        this.current = stored;
        return stored.accessToken;
      }
      const pair = { ...(await this.callTokenEndpoint(stored?.refreshToken ?? this.opts.refreshToken, signal)), seed: this.seed };
      await this.opts.store.kvSet(this.key, JSON.stringify(pair));
      this.current = pair;
      this.refreshes += 1;
      return pair.accessToken;
    });
  }

  private async readStored(): Promise<StoredTokenPair | null> {
    const raw = await this.opts.store.kvGet(this.key);
    if (!raw) return null;
    try {
      const parsed = storedPairSchema.safeParse(JSON.parse(raw));
      if (!parsed.success) return null;
      return parsed.data.seed !== undefined && parsed.data.seed !== this.seed ? null : parsed.data;
    } catch {
      return null;
    }
  }

  private async callTokenEndpoint(refreshToken: string, signal?: AbortSignal): Promise<StoredTokenPair> {
    const { baseUrl, clientId, clientSecret, redirectUri, limiter } = this.opts;
    const timeout = AbortSignal.timeout(this.opts.timeoutMs ?? 15_000);
    const s = signal ? AbortSignal.any([signal, timeout]) : timeout;
    const release = await limiter?.acquire(s);
    let res: Response;
    try {
      res = await fetch(`${baseUrl.replace(/\/+$/, '')}/oauth2/access_token`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify({
          client_id: clientId,
          client_secret: clientSecret,
          grant_type: 'refresh_token',
          refresh_token: refreshToken,
          redirect_uri: redirectUri,
        }),
        signal: s,
      });
    } catch (err) {
      throw new OAuthRefreshError(0, err instanceof Error ? err.message : String(err));
    } finally {
      release?.();
    }
    const text = await res.text();
    if (!res.ok) {
      // Kommo's problem+json `detail`/`hint` say why (revoked, expired); the body has no secrets.
      const detail = problemDetail(text) ?? res.statusText;
      const hint = res.status === 400 || res.status === 401
        ? ' (the refresh token may be expired or the integration revoked: re-authorize it in Kommo)'
        : '';
      throw new OAuthRefreshError(res.status, `${detail}${hint}`);
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new OAuthRefreshError(res.status, 'token endpoint answered with a body that is not JSON');
    }
    const parsed = tokenResponseSchema.safeParse(body);
    if (!parsed.success) {
      throw new OAuthRefreshError(res.status, 'token endpoint answer lacks access_token/refresh_token/expires_in');
    }
    return {
      accessToken: parsed.data.access_token,
      refreshToken: parsed.data.refresh_token,
      expiresAt: this.now() + parsed.data.expires_in * 1000,
    };
  }
}

function problemDetail(text: string): string | null {
  try {
    const body: unknown = JSON.parse(text);
    if (body && typeof body === 'object') {
      const o = body as Record<string, unknown>;
      const parts = [o['title'], o['detail'], o['hint']].filter((v): v is string => typeof v === 'string' && v !== '');
      if (parts.length) return parts.join(': ');
    }
  } catch {
    // not JSON: fall through
  }
  return null;
}
