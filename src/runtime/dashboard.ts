/**
 * What the dashboard needs from the running service, as the plain options of `adminRoutes`:
 * destinations, live state (pauses, breakers, the Kommo rate budget), the long-running operations
 * (backfill, reconciliation), the effective config with secrets masked and names resolved, "test
 * connection", lead search. http/ may not import runtime/, so everything is handed over from here.
 */
import type { LoadedConfig } from '../config/load.js';
import { configSchema, destinationCommon } from '../config/schema.js';
import { destinationTypes, getDestination } from '../destinations/index.js';
import type { AdminOptions, DashboardDestination } from '../http/admin.js';
import type { ConfigResponse, LeadMatch, ResolvedName } from '../http/admin-types.js';
import { getAccountBreaker, limiterUsage } from '../kommo/rate-limit.js';
import { maskSecrets, secretPaths } from '../model/index.js';
import type { Store } from '../store/store.js';
import type { Worker } from '../queue/worker.js';
import { fieldNamesReferenced } from '../sync/mapping.js';
import type { AccountRuntime } from './account.js';
import { readOperations } from './operations.js';
import type { AccountPauses } from './pauses.js';

const CHECK_TIMEOUT_MS = 15_000;

export interface DashboardDeps {
  loaded: LoadedConfig;
  store: Store;
  accounts: Map<string, AccountRuntime>;
  pauses: AccountPauses;
  worker: Worker | null;
  token?: string;
}

/** Every value at a `secret()`-marked path of `value` (per `schema`). */
export function secretValues(value: unknown, schema: Parameters<typeof secretPaths>[0]): string[] {
  const out: string[] = [];
  const walk = (v: unknown, rest: string[][]): void => {
    if (rest.some((p) => p.length === 0)) {
      if (typeof v === 'string' && v) out.push(v);
      return;
    }
    if (Array.isArray(v)) v.forEach((x) => walk(x, rest.filter((p) => p[0] === '*').map((p) => p.slice(1))));
    else if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) walk(x, rest.filter((p) => p[0] === k || p[0] === '*').map((p) => p.slice(1)));
    }
  };
  walk(value, secretPaths(schema));
  return out;
}

export function dashboardDestinations(accounts: Map<string, AccountRuntime>): DashboardDestination[] {
  return [...accounts.values()].flatMap((a) => [
    ...a.active.map((d) => ({
      key: `${a.name}/${d.cfg.name}`,
      account: a.name,
      name: d.cfg.name,
      type: d.cfg.type,
      title: d.dest.title,
      inbound: Boolean(d.dest.inbound && d.cfg.common.webhookSecret),
    })),
    { key: `${a.name}/kommo`, account: a.name, name: 'kommo', type: 'kommo', title: 'Kommo', inbound: true },
  ]);
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms / 1000} s`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export function dashboardOptions(d: DashboardDeps): Omit<AdminOptions, 'store' | 'token'> {
  const { loaded, accounts } = d;
  const secrets = [
    ...secretValues(loaded.config, configSchema),
    ...Object.values(loaded.destinations).flat().flatMap((dc) => {
      const dest = getDestination(dc.type);
      return [...secretValues(dc.common, destinationCommon), ...(dest ? secretValues(dc.settings, dest.settings) : [])];
    }),
  ];
  const runtime = (account: string): AccountRuntime => {
    const a = accounts.get(account);
    if (!a) throw new Error(`no account "${account}"`);
    return a;
  };

  return {
    destinations: dashboardDestinations(accounts),
    secrets,
    secureCookies: loaded.config.server.publicUrl?.startsWith('https:') ?? false,
    live: () => ({
      paused: d.pauses.list().map((p) => ({ account: p.account, since: p.since, reason: d.pauses.reason(p.account) ?? p.reason })),
      breakers: d.worker?.openBreakers() ?? [],
      kommo: [...accounts.keys()].map((account) => {
        const b = getAccountBreaker(account).check();
        return { account, budget: limiterUsage(account), breaker: b.state === 'open' ? `${b.detail} (${Math.ceil(b.retryAfterMs / 1000)} s left)` : null };
      }),
    }),
    operations: () => readOperations(d.store, [...accounts.keys()]),
    reconcileEveryMs: Object.fromEntries([...accounts].map(([name, a]) => [name, a.cfg.kommo.reconcile])),
    stageName: (account, pipelineId, statusId) => {
      try {
        return accounts.get(account)?.catalog.stage(pipelineId, statusId)?.name ?? null;
      } catch {
        return null;
      }
    },
    leadsByEmail: (account, email) => d.store.leadsByEmail(account, email),
    searchLeads: async (account, text): Promise<LeadMatch[]> => {
      const leads = await runtime(account).client.searchLeads(text, { limit: 20 });
      return leads.map((l) => ({ account, leadId: l.id, name: l.name ?? null, email: null, from: 'kommo' }));
    },
    checkConnection: async (key) => {
      const [account, name] = [key.slice(0, key.indexOf('/')), key.slice(key.indexOf('/') + 1)];
      const a = runtime(account);
      if (name === 'kommo') {
        await withTimeout(a.client.getAccount(), CHECK_TIMEOUT_MS, 'Kommo');
        return;
      }
      const active = a.active.find((x) => x.cfg.name === name);
      if (!active) throw new Error(`no enabled destination "${name}" in account ${account}`);
      await withTimeout(active.dest.check(active.ctx), CHECK_TIMEOUT_MS, active.dest.title);
      // As doctor says it: Segment answers 200 to any write key, so "accepted" would be untrue.
      return active.dest.credentialsUnverifiable ? `answers; its credentials cannot be verified: ${active.dest.credentialsUnverifiable}` : undefined;
    },
    config: (origin) => configView(d, origin),
  };
}

async function configView(d: DashboardDeps, origin: string): Promise<ConfigResponse> {
  const { loaded, accounts } = d;
  const base = loaded.config.server.publicUrl ?? origin;
  const masked = maskSecrets(loaded.config, configSchema) as { accounts: Record<string, Record<string, unknown>> };
  const out: ConfigResponse['accounts'] = [];
  for (const [account, a] of accounts) {
    const blocks = loaded.destinations[account] ?? [];
    // Destination blocks are free-form in the core schema: mask each with its own schema.
    const maskedBlocks = Object.fromEntries(blocks.map((b) => {
      const dest = getDestination(b.type);
      return [b.name, { ...(maskSecrets(b.common, destinationCommon) as object), ...(dest ? (maskSecrets(b.settings, dest.settings) as object) : {}) }];
    }));
    const acct = masked.accounts[account];
    if (acct) acct.destinations = maskedBlocks;

    let loadError: string | null = null;
    try {
      await withTimeout(a.init(), CHECK_TIMEOUT_MS, 'Kommo');
    } catch (err) {
      loadError = err instanceof Error ? err.message : String(err);
    }
    const names: ResolvedName[] = [];
    const resolve = (name: string, where: string, fn: () => string) => {
      if (loadError) return names.push({ name, where, resolved: null, error: `not checked: stages and fields could not be read from Kommo (${loadError})` });
      try {
        names.push({ name, where, resolved: fn(), error: null });
      } catch (err) {
        names.push({ name, where, resolved: null, error: err instanceof Error ? err.message : String(err) });
      }
    };
    const stage = (n: string) => {
      const s = a.catalog.resolveStageByName(n);
      return `${s.pipeline} / ${s.name} (pipeline ${s.pipelineId}, status ${s.id})`;
    };
    for (const n of Object.keys(a.cfg.stages)) resolve(n, `stages`, () => `${stage(n)} -> key "${a.cfg.stages[n]}"`);
    for (const x of a.active) {
      for (const n of Object.keys(x.cfg.common.lists ?? {})) resolve(n, `destinations.${x.cfg.name}.lists`, () => stage(n));
      const seen = new Set<string>();
      for (const { expr } of [...x.mapping.attributes, ...x.mapping.traits, ...Object.values(x.mapping.properties).flat()]) {
        for (const ref of fieldNamesReferenced(expr)) {
          const entity = ref.entity === 'company' ? 'companies' : ref.entity === 'contact' ? 'contacts' : 'leads';
          const key = `${entity}:${ref.name}`;
          if (seen.has(key)) continue;
          seen.add(key);
          resolve(`${ref.entity} field "${ref.name}"`, `destinations.${x.cfg.name}`, () => `field id ${a.catalog.field(entity, ref.name).id}`);
        }
      }
    }
    const unsub = a.cfg.engagement.unsubscribe;
    if (unsub?.contactField) resolve(`contact field "${unsub.contactField}"`, 'engagement.unsubscribe.contactField', () => `field id ${a.catalog.field('contacts', unsub.contactField!).id}`);
    if (unsub?.moveToStage) resolve(unsub.moveToStage, 'engagement.unsubscribe.moveToStage', () => stage(unsub.moveToStage!));

    // The path secret is the webhook's password: never shown here (`kommo-sync doctor` prints it).
    const hidden = '<secret>';
    const webhooks: ConfigResponse['accounts'][number]['webhooks'] = [
      { source: 'kommo', title: 'Kommo (Settings > Integrations > Web hooks)', url: `${base}/webhooks/${account}/kommo/${hidden}`, hint: 'replace <secret> with kommo.webhookSecret; `kommo-sync doctor` prints the full URL' },
      ...blocks.flatMap((b) => {
        const dest = getDestination(b.type);
        if (!dest?.inbound || !b.common.enabled) return [];
        return [b.common.webhookSecret
          ? { source: b.name, title: dest.title, url: `${base}/webhooks/${account}/${b.name}/${hidden}`, hint: `replace <secret> with destinations.${b.name}.webhookSecret; \`kommo-sync doctor\` prints the full URL` }
          : { source: b.name, title: dest.title, url: null, hint: `set destinations.${b.name}.webhookSecret to receive its webhooks` }];
      }),
    ];
    out.push({
      account,
      kommo: { subdomain: a.cfg.kommo.subdomain, baseUrl: a.client.baseUrl, loaded: loadError === null, error: loadError },
      names,
      webhooks,
      destinations: blocks.map((b) => {
        const dest = getDestination(b.type);
        return {
          key: `${account}/${b.name}`,
          account,
          name: b.name,
          type: b.type,
          title: dest?.title ?? b.type,
          inbound: Boolean(dest?.inbound && b.common.webhookSecret),
          enabled: b.common.enabled,
          settings: maskedBlocks[b.name],
        };
      }),
    });
  }
  const configured = new Set(Object.values(loaded.destinations).flat().map((b) => b.type));
  return {
    config: masked,
    accounts: out,
    registry: destinationTypes().map((type) => ({ type, title: getDestination(type)?.title ?? type, configured: configured.has(type) })),
  };
}
