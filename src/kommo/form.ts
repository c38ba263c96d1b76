/**
 * PHP bracket-notation forms (`leads[status][0][id]=1`), the encoding Kommo webhooks use.
 * Our own parser because `qs` defaults (depth 5, 1000 params, arrayLimit 20) silently drop
 * or mangle real Kommo payloads.
 */
import querystring from 'node:querystring';

export class FormParseError extends Error {
  override name = 'FormParseError';
}

export interface FormParseLimits {
  /** Most key/value pairs accepted (default 20000). */
  maxParams?: number;
  /** Most bracket segments after the base name (default 20). */
  maxDepth?: number;
}

export interface FormEncodeOptions {
  /** Leave `[` `]` literal instead of `%5B` `%5D` (PHP encodes them; both parse the same). */
  rawBrackets?: boolean;
}

type Node = Record<string, unknown>;

const DEFAULT_MAX_PARAMS = 20000;
const DEFAULT_MAX_DEPTH = 20;
// Rejected outright: even with own-property access these keys invite pollution downstream.
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);
const INDEX_RE = /^(?:0|[1-9]\d*)$/;

function isNode(v: unknown): v is Node {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `a[b][]` -> ['a', 'b', '']; a key that is not well-formed bracket notation stays one literal segment. */
function splitKey(key: string): string[] {
  const open = key.indexOf('[');
  if (open < 0) return [key];
  const firstClose = key.indexOf(']');
  if (open === 0 || (firstClose >= 0 && firstClose < open)) return [key];
  const segments = [key.slice(0, open)];
  let i = open;
  while (i < key.length) {
    if (key.charCodeAt(i) !== 91 /* [ */) return [key];
    const close = key.indexOf(']', i + 1);
    if (close < 0) return [key];
    const inner = key.indexOf('[', i + 1);
    if (inner >= 0 && inner < close) return [key];
    segments.push(key.slice(i + 1, close));
    i = close + 1;
  }
  return segments;
}

/**
 * Raw (still encoded) key -> its checked path. Webhooks of one account repeat the same few hundred
 * keys (`leads%5Bstatus%5D%5B0%5D%5Bid%5D`), so decoding and splitting each once saves most of the
 * parse. Bounded: cleared when full, so hostile bodies with endless distinct keys cannot grow it.
 */
const pathCache = new Map<string, string[]>();
const PATH_CACHE_MAX = 4096;

function pathOf(rawKey: string, maxDepth: number): string[] {
  const cached = pathCache.get(rawKey);
  if (cached !== undefined && cached.length - 1 <= maxDepth) return cached;
  const key = decodeComponent(rawKey);
  const path = splitKey(key);
  const depth = path.length - 1;
  if (depth > maxDepth) throw new FormParseError(`key "${key}" is nested ${depth} levels deep, over maxDepth=${maxDepth}`);
  for (const segment of path) {
    if (FORBIDDEN_KEYS.has(segment)) throw new FormParseError(`forbidden key segment "${segment}" in "${key}"`);
  }
  if (pathCache.size >= PATH_CACHE_MAX) pathCache.clear();
  pathCache.set(rawKey, path);
  return path;
}

/**
 * `application/x-www-form-urlencoded` decoding of one key or value, as URLSearchParams does it:
 * `+` is a space, and a malformed escape or invalid UTF-8 is kept leniently instead of failing
 * (querystring.unescape falls back to a byte-wise decode). Most values (ids, timestamps) need no
 * decoding at all and are returned as they are.
 */
function decodeComponent(s: string): string {
  const plus = s.indexOf('+');
  if (plus < 0 && s.indexOf('%') < 0) return s;
  return querystring.unescape(plus < 0 ? s : s.replaceAll('+', ' '));
}

/**
 * Parses an `application/x-www-form-urlencoded` body with PHP bracket keys into nested objects.
 * Every leaf is a string. Numeric segments give objects keyed by the index string (Kommo's
 * indices can be sparse); use `listOf` to read them as arrays. `k[]=a&k[]=b` appends.
 * One pass over the string instead of URLSearchParams: this runs on every webhook, and skipping
 * the decode of plain values plus the key cache makes it about 3x faster.
 */
export function parseBracketForm(raw: string, limits: FormParseLimits = {}): Record<string, unknown> {
  const maxParams = limits.maxParams ?? DEFAULT_MAX_PARAMS;
  const maxDepth = limits.maxDepth ?? DEFAULT_MAX_DEPTH;
  const root: Node = {};
  // Next free index per container, for `[]` appends (PHP: highest integer key + 1). Created at the
  // first `[]`, so forms without appends (Kommo's) never pay for the bookkeeping.
  const appends: Appends = { next: null };
  let count = 0;
  const end = raw.length;
  let start = 0;
  while (start < end) {
    let amp = raw.indexOf('&', start);
    if (amp < 0) amp = end;
    if (amp > start) {
      count += 1;
      if (count > maxParams) throw new FormParseError(`too many parameters: more than maxParams=${maxParams}`);
      let eq = raw.indexOf('=', start);
      if (eq < 0 || eq > amp) eq = amp;
      // PHP drops nameless pairs too
      if (eq > start) {
        const path = pathOf(raw.slice(start, eq), maxDepth);
        const value = eq < amp ? decodeComponent(raw.slice(eq + 1, amp)) : '';
        assign(root, path, value, appends);
      }
    }
    start = amp + 1;
  }
  return root;
}

interface Appends {
  next: WeakMap<Node, number> | null;
}

/** Highest integer key + 1 of a container (0 when none): seeds the append index of a node once. */
function firstFreeIndex(node: Node): number {
  let next = 0;
  for (const k of Object.keys(node)) if (INDEX_RE.test(k)) next = Math.max(next, Number(k) + 1);
  return next;
}

function assign(root: Node, path: string[], value: string, appends: Appends): void {
  let node = root;
  for (let i = 0; i < path.length; i++) {
    let segment = path[i] ?? '';
    if (segment === '') {
      appends.next ??= new WeakMap();
      segment = String(appends.next.get(node) ?? firstFreeIndex(node));
    }
    if (appends.next && INDEX_RE.test(segment)) {
      appends.next.set(node, Math.max(appends.next.get(node) ?? firstFreeIndex(node), Number(segment) + 1));
    }
    const existing = Object.hasOwn(node, segment) ? node[segment] : undefined;
    if (i === path.length - 1) {
      if (isNode(existing)) throw new FormParseError(`key conflict: "${formatKey(path)}" sets a value where "${where(path, i)}" already has nested keys`);
      node[segment] = value; // a repeated plain key: last one wins, as in PHP
      return;
    }
    if (existing === undefined) {
      const child: Node = {};
      node[segment] = child;
      node = child;
    } else if (isNode(existing)) {
      node = existing;
    } else {
      throw new FormParseError(`key conflict: "${formatKey(path)}" nests under "${where(path, i)}", which already holds a value`);
    }
  }
}

function where(path: string[], i: number): string {
  return formatKey(path.slice(0, i + 1));
}

function formatKey(segments: string[]): string {
  const [base = '', ...rest] = segments;
  return base + rest.map((s) => `[${s}]`).join('');
}

/**
 * Index-keyed object (`{"0": a, "2": b}`) or array -> array in numeric index order.
 * null/undefined -> []; any other object or scalar -> [it] (Kommo sends e.g. radiobutton
 * `values` as a bare object).
 */
export function listOf(x: unknown): unknown[] {
  if (x === null || x === undefined) return [];
  if (Array.isArray(x)) return x;
  if (isNode(x)) {
    const keys = indexKeysInOrder(x);
    if (keys) return keys.map((k) => x[k]);
  }
  return [x];
}

/**
 * The keys of an index-keyed object in numeric order, or null when some key is not an index.
 * JavaScript already lists integer keys in ascending order, so the sort is only a safety net for
 * indices too large to be array indices.
 */
function indexKeysInOrder(x: Node): string[] | null {
  const keys = Object.keys(x);
  let prev = -1;
  let sorted = true;
  for (const k of keys) {
    if (!INDEX_RE.test(k)) return null;
    const n = Number(k);
    if (n < prev) sorted = false;
    prev = n;
  }
  return sorted ? keys : keys.sort((a, b) => Number(a) - Number(b));
}

/** Like `listOf`, but keeps each item's index key (for error paths). */
export function listEntries(x: unknown): Array<[string, unknown]> {
  if (x === null || x === undefined) return [];
  if (Array.isArray(x)) return x.map((v, i): [string, unknown] => [String(i), v]);
  if (isNode(x)) {
    const keys = indexKeysInOrder(x);
    if (keys) return keys.map((k): [string, unknown] => [k, x[k]]);
  }
  return [['0', x]];
}

/**
 * Nested objects/arrays -> PHP `http_build_query` output: arrays as `[0]`,`[1]`, spaces as `+`,
 * booleans as "1"/"0", null/undefined and empty containers skipped.
 */
export function encodeBracketForm(value: Record<string, unknown>, options: FormEncodeOptions = {}): string {
  const [open, close] = options.rawBrackets ? ['[', ']'] : ['%5B', '%5D'];
  const parts: string[] = [];
  const walk = (segments: string[], v: unknown): void => {
    if (v === null || v === undefined) return;
    if (Array.isArray(v)) {
      v.forEach((item, i) => walk([...segments, String(i)], item));
      return;
    }
    if (v instanceof Date) throw new TypeError(`${formatKey(segments)}: encode dates yourself (Kommo uses unix seconds)`);
    if (typeof v === 'object') {
      for (const [k, item] of Object.entries(v)) walk([...segments, k], item);
      return;
    }
    const [base = '', ...rest] = segments;
    const name = phpUrlEncode(base) + rest.map((s) => open + phpUrlEncode(s) + close).join('');
    parts.push(`${name}=${phpUrlEncode(scalarToString(v, segments))}`);
  };
  for (const [k, v] of Object.entries(value)) walk([k], v);
  return parts.join('&');
}

function scalarToString(v: unknown, segments: string[]): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'bigint') return String(v);
  if (typeof v === 'boolean') return v ? '1' : '0';
  throw new TypeError(`${formatKey(segments)}: cannot form-encode a ${typeof v}`);
}

/** PHP `urlencode`: only `A-Za-z0-9-_.` stay literal, space becomes `+`. */
function phpUrlEncode(s: string): string {
  return encodeURIComponent(s)
    .replace(/[!'()*~]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replace(/%20/g, '+');
}
