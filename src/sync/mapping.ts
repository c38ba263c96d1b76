/**
 * The mapping language: JSONata expressions over the enriched lead (docs/mapping.md), plus `{{ }}`
 * templates for note and task texts. Everything is compiled and checked when the config loads, so a
 * typo fails at start with its location instead of once per lead at delivery time.
 */
import jsonata from 'jsonata';
import type { z } from 'zod';
import type { AttrValue } from '../destinations/types.js';
import { enrichedLeadSchema, type EnrichedLead } from '../model/index.js';
import { defOf } from '../model/zod-def.js';

/** A mistake in a mapping expression or template. The message starts with where it is. */
export class MappingError extends Error {
  constructor(
    message: string,
    readonly where: string,
  ) {
    super(message);
    this.name = 'MappingError';
  }
}

/** The top-level names of EnrichedLead: the only names a mapping may start a path with. */
export const LEAD_ROOTS = ['account', 'event', 'lead', 'contact', 'company', 'pipeline', 'stage', 'previousStage', 'responsible'] as const;

export type MappingValue = AttrValue | AttrValue[] | undefined;

export interface CompiledExpr {
  source: string;
  where: string;
  /** Throws MappingError when JSONata fails at run time (e.g. `"a" + 1`): a config mistake, not data. */
  evaluate(input: EnrichedLead | Record<string, unknown>): Promise<MappingValue>;
  /** @internal the parsed AST, for fieldNamesReferenced. */
  readonly ast: AstNode;
}

export interface CompiledTemplate {
  source: string;
  where: string;
  /** Literal text and compiled placeholders, in order. */
  parts: Array<string | CompiledExpr>;
  /** Missing values render as '', arrays as a comma list. */
  render(input: EnrichedLead | Record<string, unknown>): Promise<string>;
}

/**
 * Where a config value lives, for error messages: a prefix (`kommo-sync.yaml:23 accounts.acme.destinations.cio`)
 * that sub-paths are appended to, or a function the loader gives to map sub-paths to exact lines.
 */
export type Where = string | ((subPath: string) => string);
export const whereOf = (where: Where, subPath: string): string => (typeof where === 'string' ? `${where}.${subPath}` : where(subPath));

export interface CompileOptions {
  /** Allowed first path steps; default LEAD_ROOTS. Rules and templates over other inputs pass theirs. */
  roots?: readonly string[];
  /**
   * The input's schema: every path is checked against it (`lead.feilds` fails, naming
   * `lead.fields`). Default: the enriched lead when `roots` includes every lead root (names beyond
   * them are not checked further); otherwise only the first step of a path is checked, against `roots`.
   */
  input?: z.ZodType;
}

/**
 * JSONata's built-in functions (jsonata 2.x; mapping.test.ts checks each exists). Calls to other
 * `$names` that the expression does not bind itself are load errors: JSONata would only fail at run time.
 */
const BUILTINS = new Set(
  ('sum count max min average string substring substringBefore substringAfter lowercase uppercase length trim pad ' +
    'match contains replace split join formatNumber formatBase formatInteger parseInteger number floor ceil round abs ' +
    'sqrt power random boolean not map zip filter single reduce sift keys lookup append exists spread merge reverse ' +
    'each error assert type sort shuffle distinct base64encode base64decode encodeUrlComponent encodeUrl ' +
    'decodeUrlComponent decodeUrl eval toMillis fromMillis clone now millis').split(' '),
);
export const JSONATA_BUILTINS: ReadonlySet<string> = BUILTINS;

/** The parts of JSONata's AST we read. Its published types use `any`; we narrow to `unknown`. */
export interface AstNode {
  type: string;
  value?: unknown;
  position?: number;
  steps?: AstNode[];
  stages?: AstNode[];
  arguments?: AstNode[];
  procedure?: AstNode;
  expressions?: AstNode[];
  expression?: AstNode;
  lhs?: AstNode | AstNode[][];
  rhs?: AstNode;
  condition?: AstNode;
  then?: AstNode;
  else?: AstNode;
  body?: AstNode;
  focus?: string;
  index?: string;
  /** A predicate's expression (`[...]` on a path step), a path's grouping (`{...}`), sort terms (`^(...)`). */
  expr?: AstNode;
  group?: { lhs: AstNode[][] };
  terms?: Array<{ expression: AstNode }>;
}

// ---------------------------------------------------------------------------------------------
// Expressions

/**
 * Compiled JSONata by expression text. A compiled expression is some 5 KB of closures, and an
 * agency config repeats the same few hundred expressions (built-in defaults, shared mappings) in
 * every account: 200 accounts spent over 1 MiB each on copies. Sharing is safe: JSONata 2.x
 * evaluates each call in a fresh frame over the expression's environment, and nothing here binds
 * into that environment (no `assign`/`registerFunction`).
 */
const compiledByText = new Map<string, jsonata.Expression>();

function compileJsonata(text: string): jsonata.Expression {
  let compiled = compiledByText.get(text);
  if (!compiled) {
    compiled = jsonata(text);
    compiledByText.set(text, compiled);
  }
  return compiled;
}

export function compileExpression(source: string, where: string, opts: CompileOptions = {}): CompiledExpr {
  const roots = opts.roots ?? LEAD_ROOTS;
  const { text, originalIndex } = rewriteBracketLookups(source, where);
  let compiled: jsonata.Expression;
  try {
    compiled = compileJsonata(text);
  } catch (err) {
    const e = err as Partial<jsonata.JsonataError>;
    const at = typeof e.position === 'number' ? ` at character ${originalIndex(e.position)}` : '';
    throw new MappingError(`${where}: invalid expression \`${source}\`: ${e.message ?? String(err)}${at}`, where);
  }
  const ast = compiled.ast() as unknown as AstNode;
  checkNames(ast, source, where, rootShape(roots, opts.input));

  return {
    source,
    where,
    ast,
    async evaluate(input) {
      let out: unknown;
      try {
        out = await compiled.evaluate(input);
      } catch (err) {
        const e = err as Partial<jsonata.JsonataError>;
        throw new MappingError(`${where}: expression \`${source}\` failed: ${e.message ?? String(err)}`, where);
      }
      return normalize(out);
    },
  };
}

/**
 * The documented field syntax is `lead.fields["Industry"]`, but in JSONata `["Industry"]` is a
 * predicate (a string is truthy, so it would return all fields). Before compiling we rewrite a
 * bracketed string that directly follows a path step (a name, `)`, `]` or a backtick name) into a
 * backtick name: `lead.fields["Industry"]` -> lead.fields.`Industry`. Array constructors
 * (`["a", "b"]`, `x in ["a"]`) and strings, backtick names and comments are left alone.
 * `originalIndex` maps a JSONata error position back onto the text the user wrote.
 */
function rewriteBracketLookups(source: string, where: string): { text: string; originalIndex: (pos: number) => number } {
  let out = '';
  const map: number[] = []; // map[i] = index in `source` of out[i]
  const emit = (s: string, from: number) => {
    for (const ch of s) {
      out += ch;
      map.push(from);
    }
  };
  let i = 0;
  while (i < source.length) {
    const ch = source[i]!;
    if (ch === '"' || ch === "'" || ch === '`') {
      const end = ch === '`' ? source.indexOf('`', i + 1) : stringEnd(source, i);
      const stop = end < 0 ? source.length : end + 1; // unterminated: JSONata reports it
      for (let k = i; k < stop; k++) emit(source[k]!, k);
      i = stop;
      continue;
    }
    if (ch === '/' && source[i + 1] === '*') {
      const end = source.indexOf('*/', i + 2);
      const stop = end < 0 ? source.length : end + 2;
      for (let k = i; k < stop; k++) emit(source[k]!, k);
      i = stop;
      continue;
    }
    if (ch === '[' && followsPathStep(out)) {
      const lookup = bracketString(source, i);
      if (lookup) {
        if (lookup.name.includes('`')) {
          throw new MappingError(`${where}: field name ${JSON.stringify(lookup.name)} contains a backtick; write $lookup(lead.fields, ${JSON.stringify(lookup.name)}) instead`, where);
        }
        emit(`.\`${lookup.name}\``, i);
        i = lookup.end;
        continue;
      }
    }
    emit(ch, i);
    i++;
  }
  return {
    text: out,
    // JSONata positions point just past the offending token (1-based end); report 1-based columns.
    originalIndex: (pos) => (map[Math.min(Math.max(pos - 1, 0), map.length - 1)] ?? 0) + 1,
  };
}

/** True when the text so far ends with something a `[...]` lookup can apply to. */
function followsPathStep(before: string): boolean {
  const trimmed = before.trimEnd();
  const last = trimmed[trimmed.length - 1];
  if (last === undefined) return false;
  if (last === ')' || last === ']' || last === '`') return true;
  const word = /[A-Za-z0-9_$]+$/.exec(trimmed)?.[0];
  if (!word) return false;
  // Operators spelled as words precede an array constructor, not a lookup.
  return !['and', 'or', 'in'].includes(word) && !/^\d/.test(word);
}

/** Index of the closing quote of the string literal starting at `start`, or -1. */
function stringEnd(s: string, start: number): number {
  const q = s[start];
  for (let k = start + 1; k < s.length; k++) {
    if (s[k] === '\\') k++;
    else if (s[k] === q) return k;
  }
  return -1;
}

/** `[ "name" ]` at `start` (one string literal, nothing else): the decoded name and the index after `]`. */
function bracketString(s: string, start: number): { name: string; end: number } | null {
  let k = start + 1;
  while (s[k] === ' ' || s[k] === '\t') k++;
  const q = s[k];
  if (q !== '"' && q !== "'") return null;
  const close = stringEnd(s, k);
  if (close < 0) return null;
  let j = close + 1;
  while (s[j] === ' ' || s[j] === '\t') j++;
  if (s[j] !== ']') return null;
  return { name: unescapeString(s.slice(k + 1, close)), end: j + 1 };
}

function unescapeString(body: string): string {
  const simple: Record<string, string> = { n: '\n', t: '\t', r: '\r', b: '\b', f: '\f' };
  return body.replace(/\\(u[0-9a-fA-F]{4}|.)/g, (_, esc: string) =>
    esc.length === 5 ? String.fromCharCode(parseInt(esc.slice(1), 16)) : (simple[esc] ?? esc),
  );
}

/**
 * Load-time name checks: every path must exist in the input's shape (`root`: its first step is
 * one of the roots, `lead.feilds` is not a field of `lead`), starting from the input or from `$`,
 * `$$`, a variable or a function call; `$names` must be built-ins or bound in the expression itself.
 */
function checkNames(ast: AstNode, source: string, where: string, root: ShapeObject): void {
  const bound = new Set<string>(['', '$']); // `$` (context) and `$$` (root)
  forEachNode(ast, (n) => {
    if (n.type === 'bind' && isNode(n.lhs) && n.lhs.type === 'variable') bound.add(String(n.lhs.value));
    if (n.type === 'lambda') for (const a of n.arguments ?? []) bound.add(String(a.value));
    if (n.focus) bound.add(n.focus);
    if (n.index) bound.add(n.index);
  });
  forEachNode(ast, (n) => {
    if (n.type !== 'variable') return;
    const name = String(n.value);
    if (bound.has(name) || BUILTINS.has(name)) return;
    const near = nearestName(name, [...BUILTINS, ...bound].filter(Boolean));
    throw new MappingError(
      `${where}: unknown function or variable \`$${name}\` in \`${source}\`${near ? ` (did you mean \`$${near}\`?)` : ''}`,
      where,
    );
  });

  const describe = (prefix: string, name: string) => (prefix ? `${prefix}.${name}` : name);
  const unknown = (prefix: string, name: string, shape: ShapeObject): never => {
    const keys = [...shape.fields.keys()];
    const near = nearestName(name, keys);
    if (!prefix) {
      const inSource = source.trim() === name ? '' : ` in \`${source}\``;
      throw new MappingError(`${where}: unknown name \`${name}\`${inSource}${near ? ` (did you mean \`${near}\`?)` : ''}; expected one of ${keys.join(', ')}`, where);
    }
    throw new MappingError(
      `${where}: unknown name \`${describe(prefix, name)}\` in \`${source}\`${near ? ` (did you mean \`${describe(prefix, near)}\`?)` : ''}; \`${prefix}\` has ${keys.join(', ')}`,
      where,
    );
  };

  /** The shape a name step leads to from `shape` (arrays apply the step to each item, as JSONata does). */
  const step = (shape: Shape, name: string, prefix: string): Shape => {
    const item = itemOf(shape);
    switch (item.kind) {
      case 'object':
        return item.fields.get(name) ?? unknown(prefix, name, item);
      case 'record':
        return item.value;
      case 'scalar': {
        const what = shape.kind === 'array' ? `a list of plain values (${item.type})` : item.type;
        throw new MappingError(`${where}: \`${prefix}\` is ${what}: it has no \`${name}\` (in \`${source}\`)`, where);
      }
      default:
        return ANY;
    }
  };

  // Walks the expression with the shape of its context: the input at the top, the current item
  // inside a predicate, grouping or sort term, and a path's result after each of its steps.
  const walk = (n: AstNode | undefined, ctx: Shape, prefix: string): void => {
    if (!n) return;
    if (n.type === 'path') return walkPath(n, ctx, prefix);
    if (n.type === 'name') {
      step(ctx, String(n.value), prefix);
      return walkStages(n, ctx, prefix);
    }
    if (Array.isArray(n.lhs)) for (const pair of n.lhs) for (const p of pair) walk(p, ctx, prefix); // object constructor
    else walk(n.lhs, ctx, prefix);
    for (const c of [n.rhs, n.condition, n.then, n.else, n.body, n.expression, n.procedure]) walk(c, ctx, prefix);
    for (const c of [...(n.arguments ?? []), ...(n.expressions ?? [])]) walk(c, ctx, prefix);
  };
  const walkStages = (n: AstNode, shape: Shape, prefix: string): void => {
    for (const st of n.stages ?? []) walk(st.expr, itemOf(shape), prefix);
  };
  const walkPath = (n: AstNode, ctx: Shape, prefix: string): void => {
    let cur = ctx;
    let at = prefix;
    (n.steps ?? []).forEach((st, i) => {
      if (st.type === 'name') {
        cur = step(cur, String(st.value), at);
        at = describe(at, String(st.value));
        walkStages(st, cur, at);
        return;
      }
      if (i === 0 && st.type === 'variable' && (st.value === '$' || (st.value === '' && ctx === root))) {
        cur = root; // `$$.lead`, and `$.lead` where the context is the input
        at = '';
        return;
      }
      if (st.type === 'sort') {
        for (const t of st.terms ?? []) walk(t.expression, itemOf(cur), at);
        return;
      }
      // A block, function call, wildcard, literal, ...: its own paths are relative to the current
      // context, and what it yields is not checked further.
      walk(st, i === 0 ? ctx : itemOf(cur), i === 0 ? prefix : at);
      walkStages(st, ANY, at);
      cur = ANY;
      at = '';
    });
    if (n.group) for (const pair of n.group.lhs) for (const p of pair) walk(p, itemOf(cur), at);
  };
  walk(ast, root, '');
}

// ---------------------------------------------------------------------------------------------
// Input shapes: what paths exist, from the zod schemas (model/lead.ts for the enriched lead)

type Shape = ShapeObject | { kind: 'record'; value: Shape } | { kind: 'array'; item: Shape } | { kind: 'scalar'; type: string } | { kind: 'any' };
interface ShapeObject {
  kind: 'object';
  fields: Map<string, Shape>;
}
const ANY: Shape = { kind: 'any' };

/** An array's items (JSONata applies a path step to each), else the shape itself. */
function itemOf(shape: Shape): Shape {
  return shape.kind === 'array' ? itemOf(shape.item) : shape;
}

const SCALARS: Record<string, string> = { string: 'a string', number: 'a number', int: 'a number', boolean: 'true or false', enum: 'a string', literal: 'a constant', null: 'null' };

function shapeOf(schema: z.ZodType): Shape {
  const d = defOf(schema);
  switch (d.type) {
    case 'optional': case 'nullable': case 'default': case 'prefault': case 'readonly': case 'catch': case 'nonoptional':
      return d.innerType ? shapeOf(d.innerType) : ANY;
    case 'pipe':
      return d.in ? shapeOf(d.in) : ANY;
    case 'object':
      return { kind: 'object', fields: new Map(Object.entries(d.shape ?? {}).map(([k, v]) => [k, shapeOf(v)])) };
    case 'record':
      return { kind: 'record', value: d.valueType ? shapeOf(d.valueType) : ANY };
    case 'array':
      return { kind: 'array', item: d.element ? shapeOf(d.element) : ANY };
    case 'union': {
      // Only a union of plain values is a value; anything richer (a custom field: value or list) is not checked.
      const options = (d.options ?? []).map(shapeOf);
      return options.every((o) => o.kind === 'scalar') && options.length ? { kind: 'scalar', type: 'a value' } : ANY;
    }
    default:
      return SCALARS[d.type] ? { kind: 'scalar', type: SCALARS[d.type]! } : ANY;
  }
}

const LEAD_SHAPE = shapeOf(enrichedLeadSchema) as ShapeObject;

/**
 * The input's shape for a compile: `input` when given; the enriched lead when `roots` includes every
 * lead root (extra roots, like `destinations` in CRM notes, are not checked past their name);
 * otherwise just the allowed first names.
 */
function rootShape(roots: readonly string[], input: z.ZodType | undefined): ShapeObject {
  const given = input ? shapeOf(input) : undefined;
  const base: ShapeObject | undefined = given?.kind === 'object' ? given : LEAD_ROOTS.every((r) => roots.includes(r)) ? LEAD_SHAPE : undefined;
  return { kind: 'object', fields: new Map(roots.map((r) => [r, base?.fields.get(r) ?? ANY])) };
}

function isNode(x: unknown): x is AstNode {
  return typeof x === 'object' && x !== null && !Array.isArray(x) && typeof (x as { type?: unknown }).type === 'string';
}

/** Visits every AST node, including those in predicates and steps. */
function forEachNode(root: unknown, fn: (n: AstNode) => void): void {
  if (Array.isArray(root)) {
    for (const x of root) forEachNode(x, fn);
    return;
  }
  if (typeof root !== 'object' || root === null) return;
  if (isNode(root)) fn(root);
  for (const v of Object.values(root)) if (typeof v === 'object') forEachNode(v, fn);
}

/** JSONata result -> what destinations accept. Objects become JSON strings; functions are dropped. */
function normalize(v: unknown): MappingValue {
  if (Array.isArray(v)) {
    const items: AttrValue[] = [];
    for (const x of v) {
      const n = normalize(x);
      if (n === undefined) continue;
      if (Array.isArray(n)) items.push(...n);
      else items.push(n);
    }
    return items;
  }
  return scalar(v);
}

function scalar(v: unknown): AttrValue | undefined {
  if (v === undefined) return undefined;
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return v;
  if (typeof v === 'number') return Number.isFinite(v) ? v : undefined;
  if (typeof v === 'object') {
    // JSONata marks its function values; they are not data.
    if ('_jsonata_function' in v || '_jsonata_lambda' in v) return undefined;
    return JSON.stringify(v);
  }
  return undefined; // functions, symbols, bigint
}

// ---------------------------------------------------------------------------------------------
// Templates

export function compileTemplate(text: string, where: string, opts: CompileOptions = {}): CompiledTemplate {
  const parts: Array<string | CompiledExpr> = [];
  let i = 0;
  while (i < text.length) {
    const open = text.indexOf('{{', i);
    if (open < 0) {
      parts.push(text.slice(i));
      break;
    }
    if (open > i) parts.push(text.slice(i, open));
    const close = placeholderEnd(text, open + 2);
    if (close < 0) throw new MappingError(`${where}: \`{{\` at character ${open + 1} of the template has no matching \`}}\``, where);
    const expr = text.slice(open + 2, close).trim();
    if (!expr) throw new MappingError(`${where}: empty \`{{ }}\` at character ${open + 1} of the template`, where);
    parts.push(compileExpression(expr, `${where} {{ ${expr} }}`, opts));
    i = close + 2;
  }
  return {
    source: text,
    where,
    parts,
    async render(input) {
      const out = await Promise.all(parts.map(async (p) => (typeof p === 'string' ? p : toText(await p.evaluate(input)))));
      return out.join('');
    },
  };
}

/** Index of the `}}` closing a placeholder: skips strings and balanced `{ }` (object constructors). */
function placeholderEnd(text: string, from: number): number {
  let depth = 0;
  for (let k = from; k < text.length; k++) {
    const ch = text[k];
    if (ch === '"' || ch === "'") {
      const end = stringEnd(text, k);
      if (end < 0) return -1;
      k = end;
    } else if (ch === '`') {
      const end = text.indexOf('`', k + 1);
      if (end < 0) return -1;
      k = end;
    } else if (ch === '{') depth++;
    else if (ch === '}') {
      if (depth === 0 && text[k + 1] === '}') return k;
      depth = Math.max(0, depth - 1);
    }
  }
  return -1;
}

function toText(v: MappingValue): string {
  if (v === undefined || v === null) return '';
  if (Array.isArray(v)) return v.filter((x) => x !== null).map(String).join(', ');
  return String(v);
}

// ---------------------------------------------------------------------------------------------
// Helpers for the config loader

export interface FieldReference {
  entity: 'lead' | 'contact' | 'company';
  name: string;
}

/**
 * Custom field names an expression or template reads (`lead.fields["X"]`, `lead.fields.X`,
 * `$lookup(contact.fields, "X")`), so the loader can check them against Kommo and suggest near names.
 */
export function fieldNamesReferenced(expr: CompiledExpr | CompiledTemplate): FieldReference[] {
  const exprs = 'parts' in expr ? expr.parts.filter((p): p is CompiledExpr => typeof p !== 'string') : [expr];
  const seen = new Map<string, FieldReference>();
  const add = (entity: unknown, name: unknown) => {
    if ((entity === 'lead' || entity === 'contact' || entity === 'company') && typeof name === 'string') seen.set(`${entity}\0${name}`, { entity, name });
  };
  const fieldsOf = (n: AstNode | undefined): unknown => {
    const s = n?.type === 'path' ? n.steps : undefined;
    return s?.length === 2 && s[0]?.type === 'name' && s[1]?.type === 'name' && s[1].value === 'fields' ? s[0].value : undefined;
  };
  for (const e of exprs) {
    forEachNode(e.ast, (n) => {
      const s = n.steps;
      if (n.type === 'path' && s && s.length >= 3 && s[0]?.type === 'name' && s[1]?.value === 'fields' && s[2]?.type === 'name') {
        add(s[0].value, s[2].value);
      }
      if (n.type === 'function' && n.procedure?.type === 'variable' && n.procedure.value === 'lookup' && n.arguments?.[1]?.type === 'string') {
        add(fieldsOf(n.arguments[0]), n.arguments[1].value);
      }
    });
  }
  return [...seen.values()];
}

/** The candidate closest to `word` (case-insensitive edit distance), if close enough to be a typo. */
export function nearestName(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  const w = word.toLowerCase();
  for (const c of candidates) {
    const d = editDistance(w, c.toLowerCase());
    if (d < bestD) {
      best = c;
      bestD = d;
    }
  }
  return bestD <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

/** `48h`, `30m`, `2d`: how templates show a duration in ms. */
export function humanDuration(ms: number): string {
  const units: Array<[string, number]> = [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]];
  // Up to two days reads better in hours ("48h" rather than "2d").
  if (ms % 3_600_000 === 0 && ms <= 48 * 3_600_000 && ms > 0) return `${ms / 3_600_000}h`;
  for (const [u, size] of units) if (ms > 0 && ms % size === 0) return `${ms / size}${u}`;
  return `${ms}ms`;
}
