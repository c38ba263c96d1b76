/**
 * The account's vocabulary: pipelines with their stages, and lead/contact custom field definitions.
 * Loaded once per account and kept in memory; it changes rarely, and webhooks only carry ids.
 *
 * Stages are keyed by (pipeline_id, status_id): 142 (won) and 143 (lost) exist in every pipeline
 * (vendor-apis/kommo.md 2.6). A stage we do not know means someone edited the pipelines: the first
 * such lookup refreshes the cache (single flight, at most once per `refreshMinIntervalMs`), so an
 * event burst in a new stage costs one request, not one per event.
 */
import type { FieldValues, StageInfo } from '../model/index.js';
import type { KommoClient } from './client.js';
import type { KommoCustomField, KommoCustomFieldValue, KommoPipeline } from './schemas.js';

export type FieldEntity = 'leads' | 'contacts' | 'companies';

/** A configured name that matches nothing (or several things); the message says what to write. */
export class CatalogLookupError extends Error {
  override name = 'CatalogLookupError';
  constructor(message: string, readonly suggestion: string | null = null) {
    super(message);
  }
}

export interface KommoCatalogOptions {
  /** The account's `stages:` config: "Stage name" or "Pipeline / Stage" -> key. */
  stages?: Record<string, string>;
  /** Unknown-stage refreshes happen at most this often (default 30 s). */
  refreshMinIntervalMs?: number;
  now?: () => number;
}

export const WON_STATUS_ID = 142;
export const LOST_STATUS_ID = 143;

export class KommoCatalog {
  private pipelineList: KommoPipeline[] = [];
  private stages = new Map<string, StageInfo>();
  private fieldDefs: Record<FieldEntity, KommoCustomField[]> = { leads: [], contacts: [], companies: [] };
  private loading: Promise<void> | null = null;
  private pipelinesInflight: Promise<void> | null = null;
  private loaded = false;
  private lastUnknownRefreshAt = Number.NEGATIVE_INFINITY;
  private readonly stageKeys: Map<string, string>;
  /** As the user wrote them, for error messages. */
  private readonly stageNames: string[];
  private readonly minInterval: number;
  private readonly now: () => number;

  constructor(
    private readonly client: Pick<KommoClient, 'getPipelines' | 'getCustomFields'>,
    opts: KommoCatalogOptions = {},
  ) {
    this.stageKeys = new Map(Object.entries(opts.stages ?? {}).map(([name, key]) => [normalizeName(name), key]));
    this.stageNames = Object.keys(opts.stages ?? {});
    this.minInterval = opts.refreshMinIntervalMs ?? 30_000;
    this.now = opts.now ?? Date.now;
  }

  /** Loads pipelines and field definitions once; concurrent callers share the load. */
  load(): Promise<void> {
    if (this.loaded) return Promise.resolve();
    this.loading ??= Promise.all([
      this.refreshPipelines(),
      this.client.getCustomFields('leads').then((f) => { this.fieldDefs.leads = f; }),
      this.client.getCustomFields('contacts').then((f) => { this.fieldDefs.contacts = f; }),
      this.client.getCustomFields('companies').then((f) => { this.fieldDefs.companies = f; }),
    ]).then(
      () => {
        this.loaded = true;
        this.loading = null;
      },
      (err: unknown) => {
        this.loading = null; // let the next caller try again
        throw err;
      },
    );
    return this.loading;
  }

  /** Re-reads pipelines and stages now (single flight). */
  refreshPipelines(): Promise<void> {
    this.pipelinesInflight ??= this.client.getPipelines()
      .then((pipelines) => this.index(pipelines))
      .finally(() => {
        this.pipelinesInflight = null;
      });
    return this.pipelinesInflight;
  }

  get pipelines(): readonly KommoPipeline[] {
    return this.pipelineList;
  }

  fields(entity: FieldEntity): readonly KommoCustomField[] {
    return this.fieldDefs[entity];
  }

  /** From the cache only; null when unknown (see refreshIfUnknown). */
  stage(pipelineId: number, statusId: number): StageInfo | null {
    return this.stages.get(`${pipelineId}:${statusId}`) ?? null;
  }

  /**
   * The stage, refreshing the pipelines first when it is unknown. All concurrent lookups share one
   * refresh, and after one a further unknown stage waits `refreshMinIntervalMs` for the next.
   */
  async refreshIfUnknown(pipelineId: number, statusId: number): Promise<StageInfo | null> {
    await this.load();
    const known = this.stage(pipelineId, statusId);
    if (known) return known;
    if (this.pipelinesInflight) {
      await this.pipelinesInflight;
      return this.stage(pipelineId, statusId);
    }
    if (this.now() - this.lastUnknownRefreshAt < this.minInterval) return null;
    this.lastUnknownRefreshAt = this.now();
    await this.refreshPipelines();
    return this.stage(pipelineId, statusId);
  }

  /**
   * The pipeline of a stage id, from the cache; null for won (142) and lost (143), which every
   * pipeline has, and for an id it does not know.
   */
  pipelineOfStatus(statusId: number): number | null {
    if (statusId === WON_STATUS_ID || statusId === LOST_STATUS_ID) return null;
    for (const s of this.stages.values()) if (s.id === statusId) return s.pipelineId;
    return null;
  }

  /** A pipeline by name (case- and space-insensitive); CatalogLookupError with the nearest name. */
  resolvePipelineByName(name: string): KommoPipeline {
    this.assertLoaded();
    const found = this.pipelineList.filter((p) => normalizeName(p.name) === normalizeName(name));
    if (found.length === 1) return found[0]!;
    if (found.length > 1) throw new CatalogLookupError(`pipeline "${name}" is ambiguous (ids ${found.map((p) => p.id).join(', ')})`);
    throw notFound('pipeline', name, this.pipelineList.map((p) => p.name));
  }

  /**
   * A stage by "Stage name", "Pipeline / Stage" (needed when several pipelines have the name) or
   * a configured key. Throws CatalogLookupError with the options or the nearest name.
   */
  resolveStageByName(name: string): StageInfo {
    this.assertLoaded();
    const wanted = normalizeName(name);
    const all = [...this.stages.values()];
    const qualified = all.filter((s) => normalizeName(`${s.pipeline} / ${s.name}`) === wanted);
    if (qualified.length === 1) return qualified[0]!;
    const bare = all.filter((s) => normalizeName(s.name) === wanted);
    const byKey = bare.length === 0 ? all.filter((s) => s.key === name.trim()) : [];
    const found = bare.length > 0 ? bare : byKey;
    if (found.length === 1) return found[0]!;
    if (found.length > 1) {
      const options = found.map((s) => `"${s.pipeline} / ${s.name}"`).join(', ');
      throw new CatalogLookupError(`stage "${name}" exists in several pipelines: ${options}; write it as "Pipeline / Stage"`);
    }
    const candidates = all.flatMap((s) => [s.name, `${s.pipeline} / ${s.name}`]);
    throw notFound('stage', name, candidates);
  }

  /** A custom field definition by name, code (EMAIL, PHONE, ...) or numeric id. */
  field(entity: FieldEntity, nameOrCode: string): KommoCustomField {
    this.assertLoaded();
    const defs = this.fieldDefs[entity];
    const trimmed = nameOrCode.trim();
    const asId = /^\d+$/.test(trimmed) ? Number(trimmed) : null;
    const byId = asId !== null ? defs.find((f) => f.id === asId) : undefined;
    if (byId) return byId;
    const byCode = defs.filter((f) => f.code !== null && f.code.toLowerCase() === trimmed.toLowerCase());
    if (byCode.length === 1) return byCode[0]!;
    const byName = defs.filter((f) => normalizeName(f.name) === normalizeName(trimmed));
    if (byName.length === 1) return byName[0]!;
    if (byName.length > 1) {
      const ids = byName.map((f) => f.id).join(', ');
      throw new CatalogLookupError(`${entity} field "${nameOrCode}" is ambiguous (ids ${ids}); use its id or code`);
    }
    throw notFound(`${entity} field`, nameOrCode, defs.flatMap((f) => (f.code ? [f.name, f.code] : [f.name])));
  }

  /** `custom_fields_values` as FieldValues, using the definitions for types and missing names. */
  fieldValues(entity: FieldEntity, values: readonly KommoCustomFieldValue[] | null): FieldValues {
    const defs = new Map(this.fieldDefs[entity].map((f) => [f.id, f]));
    return toFieldValues(values, (id) => defs.get(id));
  }

  /** One message per `stages:` config entry that names no stage (for start-up and `doctor`). */
  configErrors(): string[] {
    this.assertLoaded();
    const errors: string[] = [];
    for (const name of this.stageNames) {
      try {
        this.resolveStageByName(name);
      } catch (err) {
        errors.push(`stages: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    return errors;
  }

  private assertLoaded(): void {
    if (!this.loaded) throw new Error('Kommo catalog not loaded yet: await catalog.load() first');
  }

  private index(pipelines: KommoPipeline[]): void {
    const stages = new Map<string, StageInfo>();
    for (const p of pipelines) {
      for (const s of p._embedded.statuses) {
        const configured = this.stageKeys.get(normalizeName(`${p.name} / ${s.name}`)) ?? this.stageKeys.get(normalizeName(s.name));
        stages.set(`${p.id}:${s.id}`, {
          id: s.id,
          name: s.name,
          key: configured ?? (slugify(s.name) || `stage_${s.id}`),
          pipelineId: p.id,
          pipeline: p.name,
          type: s.id === WON_STATUS_ID ? 'won' : s.id === LOST_STATUS_ID ? 'lost' : s.type === 1 ? 'incoming' : 'open',
        });
      }
    }
    // Swap whole maps, so a lookup never sees a half-built index.
    this.pipelineList = pipelines;
    this.stages = stages;
  }
}

// ---------------------------------------------------------------------------------------------
// Field values
// ---------------------------------------------------------------------------------------------

/** Types whose values are a list even when only one is set. */
const MULTI_TYPES = new Set(['multiselect', 'multitext', 'chained_list', 'category', 'items', 'linked_entity', 'file']);
const NUMBER_TYPES = new Set(['numeric', 'price', 'monetary', 'date', 'date_time', 'birthday']);

type Scalar = string | number | boolean;

/**
 * v4 `custom_fields_values` -> values keyed by field name AND by code (EMAIL, PHONE, ...):
 * multi-value fields as arrays, select/radio as their text, checkbox as boolean, numbers and
 * dates (unix seconds) as numbers, anything structured as JSON text.
 */
export function toFieldValues(
  values: readonly KommoCustomFieldValue[] | null,
  defOf: (fieldId: number) => Pick<KommoCustomField, 'name' | 'code' | 'type'> | undefined = () => undefined,
): FieldValues {
  const out: FieldValues = {};
  for (const f of values ?? []) {
    const def = defOf(f.field_id);
    const type = f.field_type ?? def?.type ?? 'text';
    const list = f.values.map((v) => scalar(v.value, type)).filter((v): v is Scalar => v !== null);
    const value = MULTI_TYPES.has(type) || list.length > 1 ? list : list[0] ?? null;
    const name = f.field_name ?? def?.name;
    const code = f.field_code ?? def?.code;
    if (name) out[name] = value;
    if (code && code !== name) out[code] = value;
  }
  return out;
}

function scalar(value: unknown, type: string): Scalar | null {
  if (value === null || value === undefined) return null;
  if (type === 'checkbox') return value === true || value === 1 || value === '1' || value === 'true';
  if (NUMBER_TYPES.has(type)) {
    const n = typeof value === 'number' ? value : Number(value);
    if (typeof value !== 'boolean' && value !== '' && Number.isFinite(n)) return n;
  }
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') return value;
  return JSON.stringify(value);
}

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

/** Case-, space- and slash-spacing-insensitive form used for every name comparison. */
export function normalizeName(s: string): string {
  return s.trim().toLowerCase().replace(/\s*\/\s*/g, ' / ').replace(/\s+/g, ' ');
}

/** `Proposal sent` -> `proposal_sent`; accents dropped; '' when nothing Latin is left. */
export function slugify(name: string): string {
  return name
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '_')
    .replace(/^_+|_+$/g, '');
}

function notFound(what: string, name: string, candidates: string[]): CatalogLookupError {
  const suggestion = nearestName(name, candidates);
  const hint = suggestion ? `; did you mean "${suggestion}"?` : candidates.length === 0 ? ' (Kommo has none)' : '';
  return new CatalogLookupError(`${what} "${name}" not found in Kommo${hint}`, suggestion);
}

/** The candidate closest to `name` by edit distance, if it is close enough to be a plausible typo. */
export function nearestName(name: string, candidates: readonly string[]): string | null {
  const wanted = normalizeName(name);
  let best: string | null = null;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    const d = editDistance(wanted, normalizeName(c));
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best !== null && bestDistance <= Math.max(2, Math.ceil(wanted.length / 2)) ? best : null;
}

/** Levenshtein distance, two rows. */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + cost);
    }
    prev = cur;
  }
  return prev[b.length]!;
}
