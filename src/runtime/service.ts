/**
 * A running kommo-sync process: the store, one runtime per account, and whichever roles this
 * process plays: intake (HTTP), router + worker, or both (`serve`). `worker` runs without intake,
 * for scale-out on PostgreSQL.
 */
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { ConfigError, type LoadedConfig } from '../config/load.js';
import { getDestination } from '../destinations/index.js';
import { adminRoutes } from '../http/admin.js';
import { buildApp } from '../http/app.js';
import type { IntakeAccount, IntakeSource } from '../http/webhooks.js';
import { Metrics } from '../observability/metrics.js';
import { Router } from '../queue/router.js';
import { Worker } from '../queue/worker.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';
import { AccountRuntime } from './account.js';
import { Sweeper } from './sweeper.js';
import { Backfiller, type BackfillAccount } from './backfill.js';
import { AccountPauses } from './pauses.js';
import { destinationKey } from '../queue/jobs.js';
import { getAccountBreaker } from '../kommo/rate-limit.js';
import { boundHeapGrowth } from './heap.js';
import { MAX_PAGE } from '../kommo/client.js';
import type { AdminAuth } from '../http/admin-auth.js';
import { dashboardOptions } from './dashboard.js';

export interface ServiceOptions {
  loaded: LoadedConfig;
  log: Logger;
  /** Serve HTTP (webhooks, probes, metrics, dashboard). */
  intake: boolean;
  /** Run the router and the workers. */
  work: boolean;
  port?: number;
  host?: string;
  /** Use this store instead of opening `config.store` (tests, demo). */
  store?: Store;
  /** Allow the dashboard without a token (only when listening on loopback). */
  openDashboard?: boolean;
  workerId?: string;
}

export interface Service {
  store: Store;
  metrics: Metrics;
  pauses: AccountPauses;
  accounts: Map<string, AccountRuntime>;
  app: FastifyInstance | null;
  /** Base URL when serving HTTP. */
  url: string | null;
  /** A one-time dashboard login link (when the dashboard needs the admin token), else null. */
  loginLink(): string | null;
  router: Router | null;
  worker: Worker | null;
  sweeper: Sweeper | null;
  /** Stops intake, then work; deliveries in flight get `graceMs` (default: as long as they take). */
  close(opts?: { graceMs?: number }): Promise<void>;
}

export async function startService(o: ServiceOptions): Promise<Service> {
  boundHeapGrowth();
  const { config } = o.loaded;
  const store = o.store ?? await openStore(config.store, { onWarning: (message) => o.log.warn(message) });
  const metrics = new Metrics(store);
  const accounts = new Map<string, AccountRuntime>();
  for (const [name, acct] of Object.entries(config.accounts)) {
    accounts.set(name, new AccountRuntime(name, acct, o.loaded.destinations[name] ?? [], o.loaded, store, o.log, metrics));
  }

  const pauses = new AccountPauses({
    store,
    log: o.log,
    metrics,
    recheckMs: config.worker.pauseRecheck,
    accounts: [...accounts.values()].map((a) => ({
      name: a.name,
      credential: a.credential,
      probe: async () => {
        await a.client.getAccount({ probe: true });
      },
      onResume: async () => {
        // The transport's own breaker may still hold the 403 cool-down: the account is fine now.
        getAccountBreaker(a.name).recordSuccess();
        await store.expediteRetries(destinationKey(a.name, 'kommo'), Date.now());
      },
    })),
  });
  for (const a of accounts.values()) a.pauses = pauses;
  await pauses.refresh();

  let router: Router | null = null;
  let worker: Worker | null = null;
  let sweeper: Sweeper | null = null;
  if (o.work && store.kind === 'sqlite') {
    // On SQLite this process is the store's only user (`worker` refuses SQLite), so any claim in it
    // was left by this process's previous life (kill -9, power cut): take the work back now
    // instead of waiting for the leases to expire.
    const released = await store.releaseAllClaims();
    if (released.jobs || released.inbox) o.log.info(released, 'released the claims a previous run left behind');
  }
  if (o.work) {
    // Config names (stages, fields, lists) are checked against Kommo now, so mistakes stop the start.
    // Kommo being unreachable does not: webhooks are still accepted and routed once it answers.
    for (const a of accounts.values()) {
      try {
        await a.init();
      } catch (err) {
        if (err instanceof ConfigError) throw err;
        o.log.warn({ account: a.name, err: (err as Error).message }, 'could not read stages and fields from Kommo yet; will retry');
      }
    }
    const w = config.worker;
    worker = new Worker({
      store,
      log: o.log.child({ role: 'worker' }),
      metrics,
      targets: [...accounts.values()].flatMap((a) => a.targets(w.batchSize)),
      batchSize: w.batchSize,
      leaseMs: w.lease,
      maxAgeMs: w.maxAge,
      maxAttempts: w.maxAttempts,
      pollMs: w.poll,
      backoff: w.backoff,
      ...(o.workerId ? { workerId: o.workerId } : {}),
    });
    const wk = worker;
    const backfiller = new Backfiller({
      store,
      log: o.log.child({ role: 'backfill' }),
      metrics,
      accounts: new Map([...accounts.values()].map((a): [string, BackfillAccount] => [a.name, {
        name: a.name,
        subdomain: a.cfg.kommo.subdomain,
        paused: () => pauses.reason(a.name),
        listPage: (filter, page, withContacts) => a.backfillPage(filter, page, withContacts),
        enrich: (leads) => a.backfillLeads(leads),
        destinations: a.destinations,
        remember: (leads) => a.remember(leads),
      }])),
    });
    router = new Router({
      store,
      log: o.log.child({ role: 'router' }),
      metrics,
      accounts,
      batch: w.routeBatch,
      lingerMs: w.routeLinger,
      pageSize: MAX_PAGE,
      leaseMs: w.lease,
      pollMs: w.poll,
      onJobs: () => wk.wake(),
      pausedAccounts: () => pauses.names(),
      // Existing leads (`kommo-sync backfill`) are read only when no live event waits.
      idle: () => backfiller.step(),
      sharedLinger: store.kind === 'postgres',
    });
    const rt = router;
    sweeper = new Sweeper({
      store,
      log: o.log.child({ role: 'sweeper' }),
      metrics,
      sources: [...accounts.values()].flatMap((a) => a.sweepSources()),
      onStored: () => rt.wake(),
    });
  }

  let app: FastifyInstance | null = null;
  let url: string | null = null;
  let loginLink = (): string | null => null;
  if (o.intake) {
    const host = o.host ?? config.server.host;
    const adminToken = process.env.KOMMO_SYNC_ADMIN_TOKEN ?? config.server.adminToken;
    const loopback = host === '127.0.0.1' || host === 'localhost' || host === '::1';
    if (!adminToken && !(loopback && o.openDashboard)) {
      o.log.info('dashboard and /api/* are disabled: set KOMMO_SYNC_ADMIN_TOKEN (or server.adminToken) to enable them');
    }
    const r = router;
    let dashboardAuth: AdminAuth | null = null;
    app = await buildApp({
      log: o.log,
      store,
      metrics,
      bodyLimit: config.server.bodyLimit,
      ...(config.server.metricsToken ? { metricsToken: config.server.metricsToken } : {}),
      intake: { store, metrics, accounts: intakeAccounts(o.loaded), ...(r ? { onStored: () => r.wake() } : {}) },
      degraded: () => pauses.list().map((p) => ({ account: p.account, reason: pauses.reason(p.account)!, since: p.since })),
      ...(adminToken || (loopback && o.openDashboard)
        ? { admin: adminRoutes({ store, ...(adminToken ? { token: adminToken } : {}), ...dashboardOptions({ loaded: o.loaded, store, accounts, pauses, worker }), onAuth: (auth) => (dashboardAuth = auth) }) }
        : {}),
    });
    const address = await app.listen({ port: o.port ?? config.server.port, host });
    url = address.replace('[::1]', 'localhost');
    loginLink = () => (dashboardAuth && !dashboardAuth.open ? `${url}/login/link/${dashboardAuth.issueCode()}` : null);
  }
  router?.start();
  worker?.start();
  sweeper?.start();
  pauses.start();
  // Housekeeping: finished work and logs past the retention period are deleted hourly.
  const retention = config.worker.retention;
  const prune = o.work
    ? setInterval(() => {
        store.prune(Date.now() - retention).then(
          (n) => n && o.log.info({ removed: n }, 'pruned finished jobs, routed events and delivery logs'),
          (err: unknown) => o.log.warn({ err }, 'prune failed; will retry in an hour'),
        );
      }, 3_600_000).unref()
    : null;

  return {
    store,
    metrics,
    pauses,
    accounts,
    app,
    url,
    loginLink: () => loginLink(),
    router,
    worker,
    sweeper,
    async close(opts = {}) {
      if (prune) clearInterval(prune);
      pauses.stop();
      await sweeper?.stop();
      await app?.close();
      await router?.stop();
      await worker?.stop(opts.graceMs);
      if (!o.store) await store.close();
    },
  };
}

function intakeAccounts(loaded: LoadedConfig): Map<string, IntakeAccount> {
  const out = new Map<string, IntakeAccount>();
  for (const [name, acct] of Object.entries(loaded.config.accounts)) {
    const sources = new Map<string, IntakeSource>();
    for (const d of loaded.destinations[name] ?? []) {
      if (!d.common.webhookSecret || !d.common.enabled) continue;
      const dest = getDestination(d.type);
      if (dest?.inbound) sources.set(d.name, { secret: d.common.webhookSecret, destination: dest, settings: d.settings });
    }
    out.set(name, { kommoSubdomain: acct.kommo.subdomain, kommoSecret: acct.kommo.webhookSecret, sources });
  }
  return out;
}
