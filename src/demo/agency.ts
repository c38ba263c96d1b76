/**
 * An agency's world: many Kommo accounts (one simulator each, all served by one HTTP server under
 * path prefixes) and one shared Customer.io simulator, with a generated config of one account per
 * Kommo simulator. The agency bench and test run the real service on it.
 */
import { randomBytes } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import { stringify } from 'yaml';
import { parseConfigText, type LoadedConfig } from '../config/load.js';
import { getDestination } from '../destinations/index.js';
import type { DestinationSimulator } from '../destinations/types.js';
import { DEFAULT_ACCESS_TOKEN, KommoSimulator } from '../kommo/simulator/index.js';

export interface AgencyWorld {
  accounts: Array<{ name: string; kommo: KommoSimulator; webhookSecret: string }>;
  cio: DestinationSimulator;
  yaml: string;
  loaded: LoadedConfig;
  /** Subscribes every account's Kommo to its webhook URL on the service. */
  subscribe(serviceUrl: string): void;
  close(): Promise<void>;
}

export async function startAgencyWorld(o: { accounts: number; store?: string; kommoLatencyMs?: number }): Promise<AgencyWorld> {
  const app: FastifyInstance = Fastify({ logger: false, bodyLimit: 10 * 1024 * 1024 });
  const accounts: AgencyWorld['accounts'] = [];
  for (let i = 0; i < o.accounts; i++) {
    const name = `acc${i}`;
    const kommo = new KommoSimulator({ subdomain: name, accountId: 40_000_000 + i, ...(o.kommoLatencyMs ? { latencyMs: o.kommoLatencyMs } : {}) });
    await app.register(kommo.plugin, { prefix: `/${name}` });
    accounts.push({ name, kommo, webhookSecret: randomBytes(18).toString('base64url') });
  }
  const cio = getDestination('customerio')!.simulator();
  await app.register(cio.plugin, { prefix: '/cio' });
  const url = (await app.listen({ port: 0, host: '127.0.0.1' })).replace('[::1]', 'localhost');
  const config = {
    store: o.store ?? 'sqlite::memory:',
    server: { port: 0, host: '127.0.0.1' },
    log: { level: 'warn' },
    accounts: Object.fromEntries(accounts.map((a) => [a.name, {
      kommo: { subdomain: a.name, baseUrl: `${url}/${a.name}`, accessToken: DEFAULT_ACCESS_TOKEN, webhookSecret: a.webhookSecret },
      destinations: { cio: { type: 'customerio', ...cio.settingsFor(`${url}/cio`) } },
      crmNotes: { on: ['lead.stage_changed'], text: 'kommo-sync: {{stage.name}} synced' },
    }])),
  };
  const yaml = stringify(config);
  return {
    accounts,
    cio,
    yaml,
    loaded: parseConfigText(yaml, 'agency.yaml', {}),
    subscribe(serviceUrl) {
      for (const a of accounts) a.kommo.subscribe(`${serviceUrl}/webhooks/${a.name}/kommo/${a.webhookSecret}`, ['add_lead', 'update_lead', 'status_lead']);
    },
    async close() {
      await Promise.all(accounts.map((a) => a.kommo.flushWebhooks()));
      await app.close();
    },
  };
}
