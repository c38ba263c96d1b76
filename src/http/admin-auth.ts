/**
 * Who may use the dashboard, and how requests prove it.
 *
 * - The admin token (KOMMO_SYNC_ADMIN_TOKEN) never travels in a URL: a login form exchanges it for
 *   an HttpOnly, SameSite=Strict session cookie; scripts send `Authorization: Bearer <token>`.
 *   A `?token=` is refused outright, so a link that carries it never works (and is never copied on).
 * - Sessions are stateless: `v1.<expiry>.<nonce>.<hmac>`, signed with a key derived from the token,
 *   so every process of a deployment accepts them and changing the token logs everyone out.
 * - Actions (POST) are CSRF-safe: a cookie-authenticated POST must carry `X-CSRF-Token`, an HMAC of
 *   the session nonce that only a same-origin page can read (GET /api/session), and an `Origin`, when
 *   sent, must be this host. Bearer requests carry no ambient credential and need neither.
 * - Without a token the dashboard is only served on loopback (the demo): then the Host header must
 *   be a loopback name too, so a DNS-rebinding page cannot reach it through the browser.
 * - One-time login codes (the demo's printed link) are random, single use and short-lived.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';

export const SESSION_COOKIE = 'ks_session';
const SESSION_TTL_MS = 12 * 3_600_000;
const CODE_TTL_MS = 10 * 60_000;
/** Failed logins per client address per minute before it waits. */
const MAX_FAILURES = 10;

export type Principal = { via: 'bearer' | 'cookie' | 'open'; nonce: string; expiresAt: number | null };

export class AdminAuth {
  private readonly key: Buffer;
  private readonly codes = new Map<string, number>();
  private readonly failures = new Map<string, number[]>();

  constructor(
    /** Undefined: open (loopback only). */
    private readonly token: string | undefined,
    private readonly opts: { secureCookies?: boolean; now?: () => number } = {},
  ) {
    // Derived, not the token itself: a leaked cookie key would not be the token.
    this.key = token ? createHash('sha256').update(`kommo-sync dashboard session\0${token}`).digest() : randomBytes(32);
  }

  get open(): boolean {
    return this.token === undefined;
  }

  private now(): number {
    return this.opts.now?.() ?? Date.now();
  }

  private sign(text: string): string {
    return createHmac('sha256', this.key).update(text).digest('base64url');
  }

  tokenMatches(given: string): boolean {
    if (!this.token) return false;
    const a = createHash('sha256').update(given).digest();
    const b = createHash('sha256').update(this.token).digest();
    return timingSafeEqual(a, b);
  }

  /** A new session cookie value. */
  newSession(): { value: string; expiresAt: number } {
    const expiresAt = this.now() + SESSION_TTL_MS;
    const body = `v1.${expiresAt}.${randomBytes(12).toString('base64url')}`;
    return { value: `${body}.${this.sign(body)}`, expiresAt };
  }

  private readSession(value: string | undefined): Principal | null {
    if (!value) return null;
    const parts = value.split('.');
    if (parts.length !== 4 || parts[0] !== 'v1') return null;
    const body = parts.slice(0, 3).join('.');
    const expected = Buffer.from(this.sign(body));
    const given = Buffer.from(parts[3]!);
    if (expected.length !== given.length || !timingSafeEqual(expected, given)) return null;
    const expiresAt = Number(parts[1]);
    if (!Number.isFinite(expiresAt) || expiresAt <= this.now()) return null;
    return { via: 'cookie', nonce: parts[2]!, expiresAt };
  }

  csrfFor(p: Principal): string {
    return this.sign(`csrf.${p.nonce}`);
  }

  /** Who is asking, or null. Does not look at the query string: a token there is refused earlier. */
  identify(req: FastifyRequest): Principal | null {
    if (this.open) return { via: 'open', nonce: 'open', expiresAt: null };
    const auth = req.headers.authorization;
    if (auth && /^Bearer\s+/i.test(auth)) return this.tokenMatches(auth.replace(/^Bearer\s+/i, '')) ? { via: 'bearer', nonce: 'bearer', expiresAt: null } : null;
    return this.readSession(readCookie(req.headers.cookie, SESSION_COOKIE));
  }

  /** For a POST: null when fine, else why not. */
  csrfProblem(req: FastifyRequest, p: Principal): string | null {
    const origin = req.headers.origin;
    // `null`: the browser withholds the origin (our own Referrer-Policy makes it do so for form
    // posts); the CSRF token below is what proves the page is ours.
    if (origin !== undefined && origin !== 'null' && !sameOrigin(origin, req.headers.host)) return `a request from ${origin} may not act on this dashboard`;
    if (p.via === 'bearer') return null;
    const given = req.headers['x-csrf-token'];
    const expected = Buffer.from(this.csrfFor(p));
    const got = Buffer.from(typeof given === 'string' ? given : '');
    if (got.length !== expected.length || !timingSafeEqual(got, expected)) return 'missing or wrong X-CSRF-Token (reload the page)';
    return null;
  }

  /** Open mode: the Host must name the loopback interface (DNS rebinding). */
  hostProblem(req: FastifyRequest): string | null {
    if (!this.open) return null;
    const host = (req.headers.host ?? '').toLowerCase().replace(/:\d+$/, '');
    return host === '127.0.0.1' || host === 'localhost' || host === '[::1]' ? null : `without an admin token the dashboard answers only to 127.0.0.1 or localhost, not "${host}"`;
  }

  setSessionCookie(reply: FastifyReply, req: FastifyRequest): number {
    const s = this.newSession();
    reply.header('set-cookie', cookie(SESSION_COOKIE, s.value, Math.floor((s.expiresAt - this.now()) / 1000), this.secure(req)));
    return s.expiresAt;
  }

  clearSessionCookie(reply: FastifyReply, req: FastifyRequest): void {
    reply.header('set-cookie', cookie(SESSION_COOKIE, '', 0, this.secure(req)));
  }

  private secure(req: FastifyRequest): boolean {
    return Boolean(this.opts.secureCookies) || req.protocol === 'https' || req.headers['x-forwarded-proto'] === 'https';
  }

  /** A one-time login code (the demo prints a link with it). */
  issueCode(): string {
    const code = randomBytes(24).toString('base64url');
    this.codes.set(code, this.now() + CODE_TTL_MS);
    return code;
  }

  /** True once per issued, unexpired code. */
  redeemCode(code: string): boolean {
    const until = this.codes.get(code);
    this.codes.delete(code);
    for (const [c, t] of this.codes) if (t <= this.now()) this.codes.delete(c);
    return until !== undefined && until > this.now();
  }

  /** Brute-force brake on the login form: true while `client` must wait. */
  throttled(client: string): boolean {
    const recent = (this.failures.get(client) ?? []).filter((t) => t > this.now() - 60_000);
    this.failures.set(client, recent);
    return recent.length >= MAX_FAILURES;
  }

  recordFailure(client: string): void {
    const list = this.failures.get(client) ?? [];
    list.push(this.now());
    this.failures.set(client, list);
    if (this.failures.size > 10_000) this.failures.clear(); // bounded memory under a spray of addresses
  }
}

export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

function cookie(name: string, value: string, maxAgeSeconds: number, secure: boolean): string {
  return `${name}=${value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAgeSeconds}${secure ? '; Secure' : ''}`;
}

function sameOrigin(origin: string, host: string | undefined): boolean {
  try {
    return host !== undefined && new URL(origin).host.toLowerCase() === host.toLowerCase();
  } catch {
    return false;
  }
}

/**
 * Headers of every dashboard response: no inline script may run (CSP), no other site may frame it
 * (so a button cannot be clickjacked), no MIME sniffing, no Referer leaves it.
 */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
};
