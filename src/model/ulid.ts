/**
 * ULIDs (26 Crockford base-32 characters: 48 bits of unix ms, then 80 bits). kommo-sync's message ids
 * are ULIDs because it is the strictest id format any destination asks for and sorts by time; the
 * 80 bits come from a hash of a seed, so the same operation always gets the same id.
 * Written by hand: the npm `ulid` package makes random ids only.
 */
import { createHash, randomBytes } from 'node:crypto';

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
export const ULID_RE = /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/i;

/** A ULID from a time (unix ms, clamped to 48 bits) and 10 bytes of randomness or hash. */
export function encodeUlid(atMs: number, bytes: Uint8Array): string {
  let t = Math.min(Math.max(Math.floor(atMs), 0), 2 ** 48 - 1);
  let time = '';
  for (let i = 0; i < 10; i++) {
    time = CROCKFORD[t % 32]! + time;
    t = Math.floor(t / 32);
  }
  let bits = 0n;
  for (let i = 0; i < 10; i++) bits = (bits << 8n) | BigInt(bytes[i] ?? 0);
  let rand = '';
  for (let i = 0; i < 16; i++) {
    rand = CROCKFORD[Number(bits & 31n)]! + rand;
    bits >>= 5n;
  }
  return time + rand;
}

/** The same `seed` at the same time always gives the same id, so a vendor drops a retried copy. */
export function deterministicUlid(atMs: number, seed: string): string {
  return encodeUlid(atMs, createHash('sha256').update(seed).digest().subarray(0, 10));
}

export function randomUlid(atMs: number = Date.now()): string {
  return encodeUlid(atMs, randomBytes(10));
}
