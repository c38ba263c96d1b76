/**
 * For `doctor`: does Kommo send its webhooks to the URL kommo-sync expects? Compares the whole URL
 * (scheme, host and port when `server.publicUrl` is set; the path; the secret), and says which part
 * differs without ever showing a secret.
 */
import type { KommoWebhook } from '../kommo/schemas.js';

export interface ExpectedHook {
  account: string;
  secret: string;
  /** `server.publicUrl`; without it the scheme, host and port cannot be checked. */
  publicUrl?: string;
}

export type HookVerdict =
  | { state: 'ok'; hook: KommoWebhook; hostChecked: boolean }
  | { state: 'missing' }
  | { state: 'disabled'; hook: KommoWebhook }
  | { state: 'differs'; hook: KommoWebhook; differences: string[]; shown: string };

interface Parts {
  origin: string;
  /** The path without its last segment (the secret). */
  base: string;
  secret: string;
}

function partsOf(url: string): Parts | null {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return null;
  }
  const segments = u.pathname.split('/');
  const last = segments.pop() ?? '';
  let secret = last;
  try {
    secret = decodeURIComponent(last);
  } catch {
    // A malformed escape: compare it as written.
  }
  return { origin: `${u.protocol}//${u.host}`, base: segments.join('/'), secret };
}

/** The registered URL with its last path segment (the secret) masked. */
function masked(p: Parts): string {
  return `${p.origin}${p.base}/***`;
}

export function checkKommoWebhook(hooks: readonly KommoWebhook[], expected: ExpectedHook): HookVerdict {
  const publicUrl = expected.publicUrl?.replace(/\/+$/, '');
  const prefix = publicUrl ? partsOf(`${publicUrl}/x`)?.base ?? '' : '';
  const want: Parts & { checkOrigin: boolean } = {
    origin: publicUrl ? partsOf(`${publicUrl}/x`)?.origin ?? '' : '',
    base: `${prefix}/webhooks/${expected.account}/kommo`,
    secret: expected.secret,
    checkOrigin: Boolean(publicUrl),
  };
  const candidates: Array<{ hook: KommoWebhook; parts: Parts; differences: string[] }> = [];
  for (const hook of hooks) {
    const parts = partsOf(hook.destination);
    if (!parts) continue;
    // Ours, or meant to be: it names this account's Kommo webhook path, or it points at our host.
    const looksOurs = parts.base.endsWith(`/webhooks/${expected.account}/kommo`) || (want.checkOrigin && parts.origin === want.origin && parts.base.includes('/webhooks/'));
    if (!looksOurs) continue;
    const differences: string[] = [];
    if (want.checkOrigin && parts.origin !== want.origin) differences.push(`scheme, host or port (${parts.origin}, expected ${want.origin})`);
    if (parts.base !== want.base) differences.push(`path (${parts.base}/***, expected ${want.base}/***)`);
    if (parts.secret !== want.secret) differences.push('secret (it is not the configured kommo.webhookSecret)');
    candidates.push({ hook, parts, differences });
  }
  const exact = candidates.filter((c) => c.differences.length === 0);
  const enabled = exact.find((c) => !c.hook.disabled);
  if (enabled) return { state: 'ok', hook: enabled.hook, hostChecked: want.checkOrigin };
  if (exact[0]) return { state: 'disabled', hook: exact[0].hook };
  const closest = [...candidates].sort((a, b) => a.differences.length - b.differences.length)[0];
  if (!closest) return { state: 'missing' };
  return { state: 'differs', hook: closest.hook, differences: closest.differences, shown: masked(closest.parts) };
}
