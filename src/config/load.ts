/**
 * Loads kommo-sync.yaml: YAML -> ${ENV} interpolation -> zod validation, with errors that say
 * `file:line path: expected ..., got ...`. Destination blocks are validated against the registry.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type YAMLError } from 'yaml';
import { z } from 'zod';
import { getDestination, destinationTypes } from '../destinations/index.js';
import { secretKeys, secretPaths } from '../model/index.js';
import { configHints, configSchema, destinationCommon, destinationCommonKeys, type Config, type DestinationConfig } from './schema.js';
import { isRecord } from '../model/json.js';
import { defOf } from '../model/zod-def.js';

/** Literal-secret warnings named one by one; the rest are counted in one line. */
const MAX_SECRET_WARNINGS = 10;

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
  /** Whether the file sets this key itself (a default does not count): `has(['server', 'port'])`. */
  has(path: Array<string | number>): boolean;
}

const ENV_RE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

export function defaultConfigPath(): string {
  return process.env.KOMMO_SYNC_CONFIG ?? './kommo-sync.yaml';
}

export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  return parseConfigText(readConfigText(file), file, env);
}

function readConfigText(file: string): string {
  try {
    return readFileSync(resolve(file), 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError([code === 'ENOENT'
      ? `${file}: file not found (pass --config FILE, set KOMMO_SYNC_CONFIG, or copy kommo-sync.example.yaml)`
      : `${file}: cannot read (${code ?? String(err)})`]);
  }
}

interface ParsedYaml {
  raw: unknown;
  where(path: Array<string | number>): string;
}

function parseYaml(text: string, file: string): ParsedYaml {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: true });
  if (doc.errors.length > 0) throw new ConfigError(yamlIssues(doc.errors, text, file));
  return { raw: doc.toJS() ?? {}, where: (path) => `${file}:${lineOf(doc, lines, path)} ${formatPath(path)}` };
}

export function parseConfigText(text: string, file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const { raw, where } = parseYaml(text, file);
  const issues: string[] = [];
  const secretAt = secretMatcher(raw);
  const interpolated = interpolate(raw, [], env, (path, name) => issues.push(`${where(path)}: environment variable ${name} is not set (use \${${name}:-default} for a default)`));
  if (issues.length) throw new ConfigError(issues);

  const parsed = configSchema.safeParse(interpolated);
  if (!parsed.success) throw new ConfigError(parsed.error.issues.map((i: z.core.$ZodIssue) => describeIssue(i, [], interpolated, configSchema, where, secretAt)));
  const config = parsed.data;

  const destinations: Record<string, DestinationConfig[]> = {};
  for (const [accountName, account] of Object.entries(config.accounts)) {
    const list: DestinationConfig[] = [];
    for (const [name, block] of Object.entries(account.destinations)) {
      const base = ['accounts', accountName, 'destinations', name];
      const common = destinationCommon.safeParse(pick(block, destinationCommonKeys));
      if (!common.success) {
        issues.push(...common.error.issues.map((i) => describeIssue(i, base, block, destinationCommon, where, secretAt)));
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
        issues.push(...settings.error.issues.map((i) => describeIssue(i, base, block, dest.settings, where, secretAt)));
        continue;
      }
      list.push({ name, type, common: common.data, settings: settings.data });
    }
    destinations[accountName] = list;
  }
  if (issues.length) throw new ConfigError(issues);
  const literal = literalSecrets(raw, [], secretAt);
  // A generated agency config can hold a thousand: name a few, count the rest.
  const warnings = literal.slice(0, MAX_SECRET_WARNINGS).map((path) => `${where(path)}: a secret is written in the file; put it in the environment and write \${VAR} here, so the file can be shared and committed`);
  if (literal.length > MAX_SECRET_WARNINGS) warnings.push(`${file}: ${literal.length - MAX_SECRET_WARNINGS} more secrets are written in the file (${literal.length} in all); put them in the environment too`);
  return { file, config, warnings, destinations, where, has: (path) => valueAt(raw, path) !== undefined };
}

/** What `status` and `replay` need from the config: the store, and the names they may be asked about. */
export interface StoreConfig {
  file: string;
  store: string;
  /** Account name -> the names of its destination blocks (the blocks themselves are not validated). */
  accounts: Record<string, string[]>;
}

/**
 * Reads only `store` and the account and destination names, for commands that work on the store
 * alone (`status`, `replay`): `${VAR}`s elsewhere may be unset and the rest of the file is not
 * validated, so an operator can look at the queue without every vendor secret in the environment.
 */
export function loadStoreConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): StoreConfig {
  return parseStoreConfigText(readConfigText(file), file, env);
}

export function parseStoreConfigText(text: string, file: string, env: NodeJS.ProcessEnv = process.env): StoreConfig {
  const { raw, where } = parseYaml(text, file);
  const issues: string[] = [];
  const top = isRecord(raw) ? raw : {};
  const store = configSchema.shape.store.safeParse(interpolate(top.store, ['store'], env, (path, name) => issues.push(`${where(path)}: environment variable ${name} is not set (use \${${name}:-default} for a default)`)));
  if (issues.length) throw new ConfigError(issues);
  if (!store.success) throw new ConfigError([`${where(['store'])}: expected a store URL like sqlite:./data/kommo-sync.db or postgres://user@host/db; got ${describeValue(top.store, ['store'], () => false)}`]);
  const accounts: Record<string, string[]> = {};
  for (const [name, account] of Object.entries(isRecord(top.accounts) ? top.accounts : {})) {
    accounts[name] = isRecord(account) && isRecord(account.destinations) ? Object.keys(account.destinations) : [];
  }
  return { file, store: store.data, accounts };
}

/**
 * YAML errors as `file:line` issues. A key indented deeper than the keys above it makes the yaml
 * library report the line *before* it (it reads the two lines as one multi-line key); we name the
 * deeper line instead, which is the one to fix. Only the first such error is kept: the others
 * follow from it.
 */
function yamlIssues(errors: readonly YAMLError[], text: string, file: string): string[] {
  const lines = text.split(/\r?\n/);
  const indent = (l: string) => l.length - l.trimStart().length;
  const out: string[] = [];
  const multiline = errors.filter((e) => e.code === 'MULTILINE_IMPLICIT_KEY');
  let indentReported = false;
  for (const e of errors) {
    const line = e.linePos?.[0]?.line;
    const deeper = line !== undefined && multiline.some((m) => m.linePos?.[0]?.line === line);
    if (deeper && line !== undefined) {
      if (indentReported) continue;
      const above = lines[line - 1] ?? '';
      let at = line; // the line after the reported one: lines[] is 0-based, line numbers 1-based
      while (at < lines.length && /^\s*(#.*)?$/.test(lines[at]!)) at++;
      const bad = lines[at];
      if (bad !== undefined && indent(bad) > indent(above)) {
        indentReported = true;
        out.push(`${file}:${at + 1} YAML syntax: ${keyOf(bad)} is indented ${indent(bad)} spaces, deeper than ${keyOf(above)} on line ${line} (${indent(above)}); keys of one map must start in the same column`);
        continue;
      }
    }
    const msg = `${file}:${line ?? '?'} YAML syntax: ${e.message.split('\n')[0]}`;
    if (!out.includes(msg)) out.push(msg);
  }
  return out;
}

/** The key a YAML line starts with, for messages: never the value, which may be a secret. */
function keyOf(line: string): string {
  const key = /^\s*(?:-\s+)?([^\s:#][^:#]*?)\s*:(?:\s|$)/.exec(line)?.[1];
  return key ? `\`${key}\`` : 'this line';
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

function describeIssue(issue: z.core.$ZodIssue, base: Array<string | number>, root: unknown, schema: z.ZodType, where: (p: Array<string | number>) => string, secretAt: SecretAt): string {
  const rel = issue.path.map((p) => (typeof p === 'symbol' ? String(p) : p));
  const path = [...base, ...rel];
  if (issue.code === 'unrecognized_keys') {
    // Point at the (first) unknown key's own line: that is the line to fix.
    return `${where([...path, issue.keys[0]!])}: unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`;
  }
  const got = valueAt(root, rel);
  // A missing key (or `key:` with nothing after it): say what belongs there, not "got nothing".
  if ((got === undefined || got === null) && issue.code === 'invalid_type') {
    const expected = hintAt(schema, rel) ?? (secretAt(path) ? 'a secret (put it in the environment and write ${VAR} here)' : typeName(issue.expected));
    return `${where(path)}: required: ${expected}${got === null ? ' (the key is there, but empty)' : ''}`;
  }
  const hint = issue.code === 'custom' ? undefined : hintAt(schema, rel);
  return `${where(path)}: ${issue.message}${hint && !issue.message.includes(hint) ? ` (${hint})` : ''}; got ${describeValue(got, path, secretAt)}`;
}

/** `string` -> "a string": zod's expected type names, in the words of the docs. */
function typeName(expected: string): string {
  const names: Record<string, string> = { string: 'a string', number: 'a number', int: 'an integer', boolean: 'true or false', object: 'a map', record: 'a map', array: 'a list' };
  return names[expected] ?? expected;
}


/** The hint (schema.ts `hint()`, or a `.describe()` text) of the schema at `path`, through wrappers. */
function hintAt(schema: z.ZodType, path: Array<string | number>): string | undefined {
  let cur: z.ZodType | undefined = schema;
  for (const key of path) cur = cur && childThrough(cur, key);
  // Wrappers (optional, default, pipe, ...) may carry the hint: look at each layer.
  for (let layer = cur; layer; layer = unwrapOnce(layer)) {
    const text = configHints.get(layer)?.hint ?? layer.description;
    if (text) return text;
  }
  return undefined;
}

function childThrough(s: z.ZodType, key: string | number): z.ZodType | undefined {
  for (let layer: z.ZodType | undefined = s; layer; layer = unwrapOnce(layer)) {
    const child = childOf(layer, key);
    if (child) return child;
  }
  return undefined;
}

function unwrapOnce(s: z.ZodType): z.ZodType | undefined {
  const d = defOf(s);
  if (d.type === 'pipe') return d.in;
  return ['optional', 'nullable', 'default', 'prefault', 'readonly', 'catch', 'nonoptional'].includes(d.type) ? d.innerType : undefined;
}

function childOf(s: z.ZodType, key: string | number): z.ZodType | undefined {
  const d = defOf(s);
  if (d.type === 'object') return d.shape?.[String(key)];
  if (d.type === 'record') return d.valueType;
  if (d.type === 'array') return d.element;
  if (d.type === 'union') {
    for (const o of d.options ?? []) {
      const child = childThrough(o, key);
      if (child) return child;
    }
  }
  return undefined;
}

/** Shows what was found, but never a secret's value (nor anything that looks like one). */
function describeValue(v: unknown, path: Array<string | number>, secretAt: SecretAt): string {
  const key = String(path[path.length - 1] ?? '');
  // The name pattern is a second guard, for a key mistyped so its schema is not found.
  if ((secretAt(path) || /token|secret|key|password/i.test(key)) && v !== null && typeof v !== 'object') return `a value of ${String(v).length} characters`;
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? `${v.slice(0, 57)}...` : v);
  if (Array.isArray(v)) return v.length ? 'a list' : 'an empty list';
  if (v && typeof v === 'object') return Object.keys(v).length ? 'a map' : 'an empty map';
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

/**
 * Line of the deepest existing node on the path. For a missing key that is the line of its
 * parent's key (`kommo:` for a missing `kommo.subdomain`): where the key has to be added.
 */
function lineOf(doc: Document, lines: LineCounter, path: Array<string | number>): number {
  for (let n = path.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
    if (!node || !(isScalar(node) || isMap(node) || isSeq(node)) || !node.range) continue;
    if (n < path.length && n > 0) {
      const parent = n === 1 ? doc.contents : doc.getIn(path.slice(0, n - 1), true);
      const pair = isMap(parent) ? parent.items.find((p) => isScalar(p.key) && String(p.key.value) === String(path[n - 1])) : undefined;
      if (pair && isScalar(pair.key) && pair.key.range) return lines.linePos(pair.key.range[0]).line;
    }
    return lines.linePos(node.range[0]).line;
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
