/**
 * Building blocks for settings schemas (the core config and every destination's block): durations,
 * and `secret()`, the one place a value is declared secret. Log redaction, the config loader's
 * messages, `status`, the admin API and the conformance suite all find secrets through these marks,
 * so no list of secret key names is kept anywhere else.
 */
import { z } from 'zod';
import { defOf } from './zod-def.js';

const secretRegistry = z.registry<{ secret: true }>();

/**
 * A secret string (token, key, password, webhook secret). `min` adds a length rule with its message.
 * The mark is on the finished schema: zod's refine() returns a new instance, which would lose it.
 */
export function secret(o: { min?: number; message?: string } = {}) {
  const base = z.string().min(1, 'must not be empty');
  const min = o.min;
  const s = min ? base.refine((v) => v.length >= min, o.message ?? `must be at least ${min} characters`) : base;
  return s.register(secretRegistry, { secret: true });
}


/** Wrappers that keep the value's meaning: optional, nullable, default, readonly, pipes, catch. */
function unwrap(schema: z.ZodType): z.ZodType[] {
  const d = defOf(schema);
  switch (d.type) {
    case 'optional': case 'nullable': case 'default': case 'prefault': case 'readonly': case 'catch': case 'nonoptional':
      return d.innerType ? [d.innerType] : [];
    case 'pipe':
      return [d.in, d.out].filter((x): x is z.ZodType => Boolean(x));
    default:
      return [];
  }
}

export function isSecret(schema: z.ZodType): boolean {
  if (secretRegistry.has(schema)) return true;
  return unwrap(schema).some(isSecret);
}

/**
 * Every path to a secret in `schema`: object keys by name, `*` for any record key or array index.
 * `secretPaths(z.object({ a: secret(), b: z.record(z.string(), z.object({ c: secret() })) }))`
 * is `[['a'], ['b', '*', 'c']]`.
 */
export function secretPaths(schema: z.ZodType, seen: Set<z.ZodType> = new Set()): string[][] {
  if (seen.has(schema)) return [];
  seen.add(schema);
  if (isSecret(schema)) return [[]];
  const d = defOf(schema);
  const inner = unwrap(schema);
  if (inner.length) return inner.flatMap((s) => secretPaths(s, seen));
  switch (d.type) {
    case 'object':
      return Object.entries(d.shape ?? {}).flatMap(([key, s]) => secretPaths(s, seen).map((p) => [key, ...p]));
    case 'record':
      return d.valueType ? secretPaths(d.valueType, seen).map((p) => ['*', ...p]) : [];
    case 'array':
      return d.element ? secretPaths(d.element, seen).map((p) => ['*', ...p]) : [];
    case 'union':
      return (d.options ?? []).flatMap((s) => secretPaths(s, seen));
    case 'intersection':
      return [d.left, d.right].filter((x): x is z.ZodType => Boolean(x)).flatMap((s) => secretPaths(s, seen));
    default:
      return [];
  }
}

/** The top-level keys of an object schema that hold secrets (a destination's block). */
export function secretKeys(schema: z.ZodType): string[] {
  return [...new Set(secretPaths(schema).filter((p) => p.length === 1).map((p) => p[0]!))];
}

/** A copy of `value` with every secret (per `schema`) replaced by `mask`: for showing config. */
export function maskSecrets(value: unknown, schema: z.ZodType, mask = '********'): unknown {
  const paths = secretPaths(schema);
  const walk = (v: unknown, rest: string[][]): unknown => {
    if (rest.some((p) => p.length === 0)) return v === undefined || v === null ? v : mask;
    if (Array.isArray(v)) return v.map((x) => walk(x, rest.filter((p) => p[0] === '*').map((p) => p.slice(1))));
    if (v && typeof v === 'object') {
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x, rest.filter((p) => p[0] === k || p[0] === '*').map((p) => p.slice(1)))]));
    }
    return v;
  };
  return walk(value, paths);
}

const DURATION_RE = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `48h`, `30m`, `10s`, `250ms`, `2d`, or a number of milliseconds; parsed to milliseconds. */
export const duration = z.union([
  z.number().nonnegative(),
  z.string().regex(DURATION_RE, 'expected a duration like "48h", "30m", "10s" or "250ms"'),
]).transform((v) => {
  if (typeof v === 'number') return v;
  const m = DURATION_RE.exec(v)!;
  return Number(m[1]) * UNIT_MS[m[2]!]!;
});
