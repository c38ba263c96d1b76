/**
 * OAuth 2.0 token endpoint of the simulator (kommo.md 2.2): authorization codes (20 min, single use),
 * 24 h JWT-shaped access tokens, and rotating refresh tokens. A refresh token stays usable after it
 * was rotated, until the refresh token it produced is presented for the first time; then it is burned.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { isRecord } from '../../model/json.js';
import type { BurnedRefreshTokenReuse, KommoSimulatorOAuthOptions, OAuthRefreshRecord } from './types.js';

const CODE_TTL_MS = 20 * 60 * 1000;

interface RefreshState {
  /** The refresh token this one was issued for; burned when this one is first used. */
  parent?: string;
  burned: boolean;
}

export interface TokenResponse {
  status: number;
  body: Record<string, unknown>;
}

export interface OAuthAccount {
  accountId: number;
  subdomain: string;
  userId: number;
}

export class OAuthServer {
  readonly refreshes: OAuthRefreshRecord[] = [];
  readonly burnedReuses: BurnedRefreshTokenReuse[] = [];
  /** access token -> expiry (epoch ms) */
  private readonly accessTokens = new Map<string, number>();
  private readonly refreshTokens = new Map<string, RefreshState>();
  private readonly codes = new Map<string, { expiresAt: number; used: boolean }>();
  private readonly expiresIn: number;

  constructor(
    private readonly opts: KommoSimulatorOAuthOptions | undefined,
    private readonly account: OAuthAccount,
  ) {
    this.expiresIn = opts?.expiresIn ?? 86400;
    if (opts) {
      this.refreshTokens.set(opts.refreshToken, { burned: false });
      if (opts.accessToken) this.accessTokens.set(opts.accessToken, Date.now() + this.expiresIn * 1000);
    }
  }

  isValidAccessToken(token: string): boolean {
    const exp = this.accessTokens.get(token);
    return exp !== undefined && exp > Date.now();
  }

  /** Makes every issued access token expired, so the next API call gets 401 (tests of refresh-on-401). */
  expireAccessTokens(): void {
    for (const token of this.accessTokens.keys()) this.accessTokens.set(token, 0);
  }

  /** Creates a one-time authorization code, as the consent redirect would deliver it. */
  issueCode(): string {
    const code = `def50200${randomBytes(48).toString('hex')}`;
    this.codes.set(code, { expiresAt: Date.now() + CODE_TTL_MS, used: false });
    return code;
  }

  /** Handles a POST /oauth2/access_token body (JSON or form, already parsed). */
  handle(body: unknown): TokenResponse {
    if (!this.opts) return oauthError(400, 'OAuth is not configured for this account', 'invalid_request');
    if (!isRecord(body)) return oauthError(400, 'Request data can not be empty', 'invalid_request');
    const str = (k: string): string | undefined => {
      const v = body[k];
      return typeof v === 'string' && v !== '' ? v : undefined;
    };
    const grantType = str('grant_type');
    if (grantType !== 'refresh_token' && grantType !== 'authorization_code') {
      return oauthError(400, 'The authorization grant type is not supported', 'unsupported_grant_type');
    }
    if (str('client_id') !== this.opts.clientId || str('client_secret') !== this.opts.clientSecret) {
      return oauthError(401, 'Client authentication failed', 'invalid_client');
    }
    const redirectUri = str('redirect_uri');
    if (!redirectUri || (this.opts.redirectUri !== undefined && redirectUri !== this.opts.redirectUri)) {
      return oauthError(400, 'Check the "redirect_uri" parameter', 'invalid_request');
    }
    const now = Date.now();

    if (grantType === 'authorization_code') {
      const code = str('code');
      const entry = code === undefined ? undefined : this.codes.get(code);
      if (!code || !entry || entry.used || entry.expiresAt < now) {
        return oauthError(400, 'Authorization code has expired or was used', 'invalid_grant');
      }
      entry.used = true;
      const issued = this.issuePair(undefined);
      this.refreshes.push({ at: now, grantType, refreshToken: code, ...issued.record });
      return issued.response;
    }

    const presented = str('refresh_token');
    const state = presented === undefined ? undefined : this.refreshTokens.get(presented);
    if (!presented || !state) return oauthError(400, 'Token has been revoked', 'invalid_grant');
    if (state.burned) {
      this.burnedReuses.push({ at: now, refreshToken: presented });
      return oauthError(400, 'Token has been revoked', 'invalid_grant');
    }
    // First use of a rotated token ends the grace period of the token it replaced.
    if (state.parent !== undefined) {
      const parent = this.refreshTokens.get(state.parent);
      if (parent) parent.burned = true;
      delete state.parent;
    }
    const issued = this.issuePair(presented);
    this.refreshes.push({ at: now, grantType, refreshToken: presented, ...issued.record });
    return issued.response;
  }

  private issuePair(parent: string | undefined): {
    response: TokenResponse;
    record: { issuedAccessToken: string; issuedRefreshToken: string };
  } {
    const nowSec = Math.floor(Date.now() / 1000);
    const accessToken = this.makeJwt(nowSec);
    const refreshToken = `def50200${randomBytes(96).toString('hex')}`;
    this.accessTokens.set(accessToken, Date.now() + this.expiresIn * 1000);
    this.refreshTokens.set(refreshToken, parent === undefined ? { burned: false } : { parent, burned: false });
    return {
      response: {
        status: 200,
        body: {
          token_type: 'Bearer',
          expires_in: this.expiresIn,
          server_time: nowSec,
          access_token: accessToken,
          refresh_token: refreshToken,
        },
      },
      record: { issuedAccessToken: accessToken, issuedRefreshToken: refreshToken },
    };
  }

  /** Kommo access tokens are JWTs; clients may decode claims such as account_id and api_domain. */
  private makeJwt(nowSec: number): string {
    const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');
    const claims = {
      aud: this.opts?.clientId,
      jti: randomUUID(),
      iat: nowSec,
      nbf: nowSec,
      exp: nowSec + this.expiresIn,
      sub: String(this.account.userId),
      account_id: this.account.accountId,
      base_domain: 'kommo.com',
      api_domain: 'api-c.kommo.com',
      scopes: ['crm', 'notifications'],
    };
    return `${b64({ typ: 'JWT', alg: 'RS256' })}.${b64(claims)}.${randomBytes(32).toString('base64url')}`;
  }
}

/** The token endpoint uses Kommo's OAuth problem shape (with a `hint`). */
function oauthError(status: number, hint: string, error: string): TokenResponse {
  return {
    status,
    body: {
      hint,
      error,
      title: status === 401 ? 'Unauthorized' : 'Bad Request',
      type: 'https://developers.kommo.com/v3/errors/OAuthProblemJson',
      status,
      detail: status === 401 ? 'Client authentication failed' : 'The request is missing a parameter or a parameter is invalid',
    },
  };
}
