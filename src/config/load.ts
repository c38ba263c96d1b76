/**
 * Loads kommo-sync.yaml: YAML -> ${ENV} interpolation -> zod validation, with errors that say
 * `file:line path: expected ..., got ...`. Destination blocks are validated against the registry.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document } from 'yaml';
import { z } from 'zod';
import { getDestination, destinationTypes } from '../destinations/index.js';
import { secretKeys, secretPaths } from '../model/index.js';
import { configSchema, destinationCommon, destinationCommonKeys, type Config, type DestinationConfig } from './schema.js';

export class ConfigError extends Error {
  constructor(readonly issues: string[]) {
    super(`Invalid configuration:\n${issues.map((i) => `  - ${i}`).join('\n')}`);
  }
}

export interface LoadedConfig {
  file: string;
  config: Config;
  /** Things that work but should be changed (a secret written in the file instead of `${VAR}`). */
  warnings: string[];
  /** Per account: its destination blocks after both validation steps. */
  destinations: Record<string, DestinationConfig[]>;
  /** `file:line path` for a config path, for errors raised later (stage names, mappings). */
  where(path: Array<string | number>): string;
}

const ENV_RE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

export function defaultConfigPath(): string {
  return process.env.KOMMO_SYNC_CONFIG ?? './kommo-sync.yaml';
}

export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const abs = resolve(file);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError([code === 'ENOENT'
      ? `${file}: file not found (pass --config FILE, set KOMMO_SYNC_CONFIG, or copy kommo-sync.example.yaml)`
      : `${file}: cannot read (${code ?? String(err)})`]);
  }
  return parseConfigText(text, file, env);
}

export function parseConfigText(text: string, file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: true });
  const where = (path: Array<string | number>): string => `${file}:${lineOf(doc, lines, path)} ${formatPath(path)}`;
  if (doc.errors.length > 0) {
    throw new ConfigError(doc.errors.map((e) => `${file}:${e.linePos?.[0]?.line ?? '?'} YAML syntax: ${e.message.split('\n')[0]}`));
  }
  const raw: unknown = doc.toJS() ?? {};
  const issues: string[] = [];
  const secretAt = secretMatcher(raw);
  const interpolated = interpolate(raw, [], env, (path, name) => issues.push(`${where(path)}: environment variable ${name} is not set (use \${${name}:-default} for a default)`));
  if (issues.length) throw new ConfigError(issues);

  const parsed = configSchema.safeParse(interpolated);
  if (!parsed.success) throw new ConfigError(parsed.error.issues.map((i: z.core.$ZodIssue) => describeIssue(i, [], interpolated, where, secretAt)));
  const config = parsed.data;

  const destinations: Record<string, DestinationConfig[]> = {};
  for (const [accountName, account] of Object.entries(config.accounts)) {
    const list: DestinationConfig[] = [];
    for (const [name, block] of Object.entries(account.destinations)) {
      const base = ['accounts', accountName, 'destinations', name];
      const common = destinationCommon.safeParse(pick(block, destinationCommonKeys));
      if (!common.success) {
        issues.push(...common.error.issues.map((i) => describeIssue(i, base, block, where, secretAt)));
        continue;
      }
      const type = common.data.type ?? name;
      const dest = getDestination(type);
      if (!dest) {
        issues.push(`${where([...base, ...(common.data.type ? ['type'] : [])])}: unknown destination type "${type}"; expected one of ${destinationTypes().join(', ')} (set \`type:\` when the name differs)`);
        continue;
      }
      const settings = dest.settings.safeParse(omit(block, destinationCommonKeys));
      if (!settings.success) {
        issues.push(...settings.error.issues.map((i) => describeIssue(i, base, block, where, secretAt)));
        continue;
      }
      list.push({ name, type, common: common.data, settings: settings.data });
    }
    destinations[accountName] = list;
  }
  if (issues.length) throw new ConfigError(issues);
  const warnings = literalSecrets(raw, [], secretAt).map((path) => `${where(path)}: a secret is written in the file; put it in the environment and write \${VAR} here, so the file can be shared and committed`);
  return { file, config, warnings, destinations, where };
}

/** Replaces ${VAR} and ${VAR:-default} in every string value. A whole-value reference keeps YAML typing off: it stays a string. */
function interpolate(value: unknown, path: Array<string | number>, env: NodeJS.ProcessEnv, missing: (path: Array<string | number>, name: string) => void): unknown {
  if (typeof value === 'string') {
    return value.replace(ENV_RE, (_m, name: string, def: string | undefined) => {
      const v = env[name];
      if (v !== undefined && v !== '') return v;
      if (def !== undefined) return def;
      missing(path, name);
      return '';
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => interpolate(v, [...path, i], env, missing));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v, [...path, k], env, missing)]));
  }
  return value;
}

type SecretAt = (path: Array<string | number>) => boolean;

/**
 * Whether a config path holds a secret, from the `secret()` marks of the core schema and of the
 * destination schema each block's `type` selects (nothing here lists key names).
 */
function secretMatcher(raw: unknown): SecretAt {
  const core = secretPaths(configSchema);
  const common = new Set(secretKeys(destinationCommon));
  const matches = (pattern: string[], path: Array<string | number>) => pattern.length === path.length && pattern.every((p, i) => p === '*' || p === String(path[i]));
  return (path) => {
    if (core.some((p) => matches(p, path))) return true;
    // accounts.<a>.destinations.<name>.<key>
    if (path.length === 5 && path[0] === 'accounts' && path[2] === 'destinations') {
      const key = String(path[4]);
      if (common.has(key)) return true;
      const block = valueAt(raw, path.slice(0, 4));
      const type = block && typeof block === 'object' && typeof (block as Record<string, unknown>).type === 'string' ? String((block as Record<string, unknown>).type) : String(path[3]);
      const dest = getDestination(type);
      return dest ? secretKeys(dest.settings).includes(key) : false;
    }
    return false;
  };
}

/** Paths of secrets whose value in the file is not (only) a `${VAR}` reference. */
function literalSecrets(value: unknown, path: Array<string | number>, secretAt: SecretAt): Array<Array<string | number>> {
  if (typeof value === 'string') return secretAt(path) && !/^\s*\$\{[^}]+\}\s*$/.test(value) ? [path] : [];
  if (Array.isArray(value)) return value.flatMap((v, i) => literalSecrets(v, [...path, i], secretAt));
  if (value && typeof value === 'object') return Object.entries(value).flatMap(([k, v]) => literalSecrets(v, [...path, k], secretAt));
  return [];
}

function describeIssue(issue: z.core.$ZodIssue, base: Array<string | number>, root: unknown, where: (p: Array<string | number>) => string, secretAt: SecretAt): string {
  const rel = issue.path.map((p) => (typeof p === 'symbol' ? String(p) : p));
  const path = [...base, ...rel];
  if (issue.code === 'unrecognized_keys') {
    // Point at the (first) unknown key's own line: that is the line to fix.
    return `${where([...path, issue.keys[0]!])}: unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`;
  }
  const got = valueAt(root, rel);
  const gotText = got === undefined ? 'nothing' : describeValue(got, path, secretAt);
  return `${where(path)}: ${issue.message}; got ${gotText}`;
}

/** Shows what was found, but never a secret's value (nor anything that looks like one). */
function describeValue(v: unknown, path: Array<string | number>, secretAt: SecretAt): string {
  const key = String(path[path.length - 1] ?? '');
  // The name pattern is a second guard, for a key mistyped so its schema is not found.
  if ((secretAt(path) || /token|secret|key|password/i.test(key)) && v !== null && typeof v !== 'object') return `a value of ${String(v).length} characters`;
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? `${v.slice(0, 57)}...` : v);
  if (Array.isArray(v)) return 'a list';
  if (v && typeof v === 'object') return 'a map';
  return String(v);
}

function valueAt(root: unknown, path: Array<string | number>): unknown {
  let cur: unknown = root;
  for (const p of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string | number, unknown>)[p];
  }
  return cur;
}

/** Line of the deepest existing node on the path (the parent when the key is missing). */
function lineOf(doc: Document, lines: LineCounter, path: Array<string | number>): number {
  for (let n = path.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
    if (node && (isScalar(node) || isMap(node) || isSeq(node)) && node.range) {
      return lines.linePos(node.range[0]).line;
    }
  }
  return 1;
}

function formatPath(path: Array<string | number>): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : /^[A-Za-z_][\w-]*$/.test(p) ? `${i ? '.' : ''}${p}` : `[${JSON.stringify(p)}]`)).join('') || '(top)';
}

function pick(obj: Record<string, unknown>, keys: readonly string[]): Record<string, unknown> {
  return Object.fromEntries(Object.entries(obj).filter(([k]) => keys.includes(k)));
}
function omit(obj: Record<string, unknown>, keys: readonly string[]): Record<string, unknown> {
  return Object.fromEntries(Object.entries(obj).filter(([k]) => !keys.includes(k)));
}
