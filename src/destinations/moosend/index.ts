/**
 * Moosend (API v3): stage-driven mailing lists and automation trigger lists out; opt-outs back in
 * through automation webhooks and a periodic sweep of each mapped list's unsubscribed members.
 * See README.md in this folder for settings, limits and what is unconfirmed.
 */
import { crmEventKind } from '../../model/index.js';
import type { Destination, InboundRequest, ItemResult, MappingDefaults } from '../types.js';
import { moosendRequest, type MoosendContext } from './client.js';
import { API_KEY_NOT_VALID, isRateLimited, readEnvelope, reasonOf } from './envelope.js';
import { parseMoosend } from './inbound.js';
import { combine, planDelivery, planErase, requestResults, SUPPORTS, UNSUPPORTED_REASONS, type Endpoint, type PlannedRequest } from './ops.js';
import { readAllLists } from './reads.js';
import { moosendSettings, settingsWarnings, type MoosendSettings } from './settings.js';
import { moosendSimulator } from './simulator.js';
import { sweepUnsubscribes } from './sweep.js';

/**
 * The core's default attributes are snake_case person attributes; Moosend accepts only custom fields
 * defined on the list, so they are dropped and three Moosend-style ones sent instead. `Name` is
 * the subscriber's name, not a custom field.
 */
const CORE_ATTRIBUTES = ['kommo_lead_id', 'kommo_stage', 'kommo_stage_name', 'kommo_stage_id', 'kommo_pipeline', 'deal_value', 'responsible', 'first_name', 'last_name'];
export const MOOSEND_ATTRIBUTES: Readonly<Record<string, string>> = { Name: 'contact.name', KommoStage: 'stage.name', DealValue: 'lead.price' };

export function moosendDefaults(s: MoosendSettings): MappingDefaults {
  const on: NonNullable<MappingDefaults['on']> = {};
  for (const kind of crmEventKind.options) {
    const list = s.automations?.[kind];
    if (list) on[kind] = { addToList: list };
  }
  return {
    // Lists only grow: a stage list is an audience ("everyone who reached Demo scheduled") and
    // removing a member stops the automations it started there.
    leaveLists: 'keep',
    attributes: { ...Object.fromEntries(CORE_ATTRIBUTES.map((name) => [name, null])), ...MOOSEND_ATTRIBUTES },
    ...(Object.keys(on).length ? { on } : {}),
  };
}

export const moosend = {
  type: 'moosend',
  title: 'Moosend',
  settings: moosendSettings,
  // Moosend's windows are per endpoint and 10 s long (subscribe_many: 2 per 10 s); one delivery a
  // second keeps rounds that find a window full cheap, and 1000 is subscribe_many's size limit.
  limits: { perSecond: 1, maxBatch: 1000 },
  supports: SUPPORTS,
  unsupportedReasons: UNSUPPORTED_REASONS,
  // Typed `unknown` because the registry holds every settings type and a function-valued property is
  // checked contravariantly; the loader parsed the block already, so parsing it again cannot fail.
  defaults: moosendDefaults,
  configWarnings: settingsWarnings,

  async check(ctx) {
    const all = await readAllLists(ctx);
    if (!all.ok) {
      const r = all.result;
      if ('fail' in r && r.fail.code === 'auth') throw new Error(`Moosend rejected the API key (${r.fail.reason})`);
      throw new Error(`Could not read the Moosend lists at ${ctx.settings.baseUrl}: ${reasonOf(r)}`);
    }
    const known = new Set(all.value.map((l) => l.id));
    const wanted = [
      ...Object.entries(ctx.lists ?? {}).map(([stage, id]) => ({ where: `lists."${stage}"`, id })),
      ...Object.entries(ctx.settings.automations ?? {}).map(([kind, id]) => ({ where: `automations.${kind}`, id })),
    ];
    const missing = wanted.filter((w) => !known.has(w.id));
    if (missing.length) {
      const have = all.value.slice(0, 20).map((l) => `${l.name || '(no name)'} (${l.id})`).join(', ') || 'none';
      throw new Error(`Moosend has no mailing list ${missing.map((m) => `${m.id} (${m.where})`).join(', ')}; the account's lists: ${have}`);
    }
  },

  async deliver(ctx, ops) {
    const plan = planDelivery(ops, { settings: ctx.settings, ...(ctx.lists ? { lists: ctx.lists } : {}) });
    const perOp: ItemResult[][] = ops.map(() => []);
    for (const [i, r] of plan.decided) perOp[i]!.push(r);
    const sender = new Sender(ctx);
    const collect = (req: PlannedRequest, results: ItemResult[]) => {
      req.entries.forEach((e, k) => {
        const r = results[k] ?? { retry: { reason: 'no result for item' } };
        for (const i of e.opIndexes) perOp[i]!.push(r);
      });
    };
    for (const req of plan.requests) collect(req, await sender.send(req));
    if (plan.erase.length) {
      // Erasure covers every list of the account, mapped or not: that is what GDPR asks for.
      const halted = sender.halted;
      const read = halted ? undefined : await readAllLists(ctx);
      if (read?.ok) {
        for (const req of planErase(read.value.map((l) => l.id), plan.erase)) collect(req, await sender.send(req));
        // An account without lists holds nobody: nothing to remove.
        for (const e of plan.erase) if (perOp[e.opIndex]!.length === 0) perOp[e.opIndex]!.push({ ok: true });
      } else {
        const why: ItemResult = halted ?? (read && !read.ok ? read.result : { retry: { reason: 'the account\'s lists were not read' } });
        for (const e of plan.erase) perOp[e.opIndex]!.push(why);
      }
    }
    return perOp.map((results) => combine(results));
  },

  inbound: {
    auth: { kind: 'path-secret' },
    // Moosend signs nothing: the secret path segment (checked by intake) is the only proof.
    verify: (_req: InboundRequest, _settings: MoosendSettings): void => undefined,
    parse: parseMoosend,
  },
  sweep: {
    intervalMs: (s) => s.unsubscribeSweep,
    run: (ctx, cursor) => sweepUnsubscribes(ctx, cursor),
  },
  simulator: moosendSimulator,
} satisfies Destination<typeof moosendSettings>;

/**
 * Sends the planned requests of one delivery. Once an answer concerns every request (auth,
 * outage, network) the rest are answered the same way without sending; a throttled endpoint stops
 * only that endpoint, since Moosend counts each endpoint in its own window.
 */
class Sender {
  private all: ItemResult | undefined;
  private readonly throttled = new Map<Endpoint, ItemResult>();

  constructor(private readonly ctx: MoosendContext) {}

  /** The result that stopped every request, if one did. */
  get halted(): ItemResult | undefined {
    return this.all;
  }

  async send(req: PlannedRequest): Promise<ItemResult[]> {
    const held = this.all ?? this.throttled.get(req.endpoint);
    if (held) return req.entries.map(() => held);
    const res = await moosendRequest(this.ctx, req.method, req.path, { json: req.body });
    const results = requestResults(req, res);
    const first = results[0];
    if (!first || 'ok' in first) return results;
    const env = res.error === undefined ? readEnvelope(res.body) : undefined;
    if (res.error !== undefined) this.all = first;
    else if ((env && isRateLimited(env)) || res.status === 429) this.throttled.set(req.endpoint, first);
    else if (res.status >= 500 || [401, 403, 408].includes(res.status) || env?.code === API_KEY_NOT_VALID || !env) this.all = first;
    return results;
  }
}
