/**
 * A simulated world: the Kommo simulator plus every registered destination's simulator (one Fastify
 * app, each under its own path prefix), and a kommo-sync config pointing at them. The demo runs on
 * it, and so do the integration tests and benchmarks: they exercise the real service over real HTTP.
 */
import { randomBytes } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import { stringify } from 'yaml';
import { parseConfigText, type LoadedConfig } from '../config/load.js';
import { destinationTypes, getDestination } from '../destinations/index.js';
import type { DestinationSimulator } from '../destinations/types.js';
import { DEFAULT_ACCESS_TOKEN, KommoSimulator } from '../kommo/simulator/index.js';

export interface WorldOptions {
  /** Store URL for the generated config (default: an in-memory SQLite). */
  store?: string;
  account?: string;
  /** Destination types to include (default: every registered one). */
  destinations?: readonly string[];
  /** Kommo simulator options. */
  kommoRateLimit?: number;
  kommoLatencyMs?: number;
  /** The long-lived token the Kommo simulator accepts (default: the simulator's own). */
  kommoAccessToken?: string;
  /** Extra account-level config merged over the defaults (engagement, crmNotes, ...). */
  account_overrides?: Record<string, unknown>;
  /** Extra top-level config (server, worker, log). */
  overrides?: Record<string, unknown>;
}

export interface World {
  account: string;
  kommo: KommoSimulator;
  kommoUrl: string;
  vendors: Map<string, { type: string; sim: DestinationSimulator; baseUrl: string; webhookSecret: string }>;
  vendorUrl: string;
  kommoWebhookSecret: string;
  /** The generated config as YAML (printed by the demo) and parsed. */
  yaml: string;
  loaded: LoadedConfig;
  /** Webhook URLs on a running service. */
  kommoWebhookUrl(serviceUrl: string): string;
  vendorWebhookUrl(serviceUrl: string, name: string): string;
  /** Subscribes the service's Kommo webhook URL for lead events, as an admin would in Kommo. */
  subscribe(serviceUrl: string): void;
  close(): Promise<void>;
}

const secret = () => randomBytes(18).toString('base64url');

export async function startWorld(o: WorldOptions = {}): Promise<World> {
  const account = o.account ?? 'acme';
  const kommo = new KommoSimulator({
    subdomain: account,
    rateLimitPerSecond: o.kommoRateLimit ?? 7,
    ...(o.kommoLatencyMs ? { latencyMs: o.kommoLatencyMs } : {}),
    ...(o.kommoAccessToken ? { accessToken: o.kommoAccessToken } : {}),
  });
  const kommoUrl = await kommo.listen(0);

  const types = o.destinations ?? destinationTypes();
  const vendorApp: FastifyInstance = Fastify({ logger: false, bodyLimit: 10 * 1024 * 1024 });
  const vendors: World['vendors'] = new Map();
  const sims: Array<{ name: string; type: string; sim: DestinationSimulator; prefix: string }> = [];
  for (const type of types) {
    const dest = getDestination(type);
    if (!dest) throw new Error(`unknown destination type "${type}" (registered: ${destinationTypes().join(', ')})`);
    const sim = dest.simulator();
    const prefix = `/${type}`;
    await vendorApp.register(sim.plugin, { prefix });
    sims.push({ name: type, type, sim, prefix });
  }
  const vendorUrl = (await vendorApp.listen({ port: 0, host: '127.0.0.1' })).replace('[::1]', 'localhost');
  for (const s of sims) vendors.set(s.name, { type: s.type, sim: s.sim, baseUrl: `${vendorUrl}${s.prefix}`, webhookSecret: secret() });

  const kommoWebhookSecret = secret();
  const destinationBlocks: Record<string, unknown> = {};
  for (const [name, v] of vendors) {
    destinationBlocks[name] = {
      type: v.type,
      ...v.sim.settingsFor(v.baseUrl),
      webhookSecret: v.webhookSecret,
      attributes: { industry: 'lead.fields["Industry"]', lead_source: 'lead.fields["Source"]' },
      events: { 'lead.won': 'deal_won', 'lead.lost': 'deal_lost' },
      ...v.sim.demoConfig?.(),
    };
  }
  const config = {
    store: o.store ?? 'sqlite::memory:',
    server: { port: 0, host: '127.0.0.1' },
    log: { level: 'warn' },
    ...o.overrides,
    accounts: {
      [account]: {
        kommo: { subdomain: account, baseUrl: kommoUrl, accessToken: o.kommoAccessToken ?? DEFAULT_ACCESS_TOKEN, webhookSecret: kommoWebhookSecret },
        stages: { 'Proposal sent': 'proposal_sent', 'Demo scheduled': 'demo_scheduled' },
        destinations: destinationBlocks,
        engagement: {
          notes: ['email.clicked', 'email.unsubscribed', 'email.bounced'],
          hotLead: { on: 'email.opened', count: 3, within: '48h', cooldown: '24h', task: { text: 'Hot lead: {{count}} opens in {{within}} ({{email}}). Call them!', due: '8h' } },
          unsubscribe: { contactField: 'Email opt-in', value: false, tag: 'Email Unsubscribed', note: true },
          bounce: { tag: 'Email Bounced', note: true },
        },
        crmNotes: { on: ['lead.stage_changed', 'lead.won', 'lead.lost'], text: 'kommo-sync: {{stage.name}} queued for {{sent}}' },
        ...o.account_overrides,
      },
    },
  };
  const yaml = stringify(config);
  const loaded = parseConfigText(yaml, 'generated-demo-config.yaml', {});

  const world: World = {
    account,
    kommo,
    kommoUrl,
    vendors,
    vendorUrl,
    kommoWebhookSecret,
    yaml,
    loaded,
    kommoWebhookUrl: (serviceUrl) => `${serviceUrl}/webhooks/${account}/kommo/${kommoWebhookSecret}`,
    vendorWebhookUrl: (serviceUrl, name) => `${serviceUrl}/webhooks/${account}/${name}/${vendors.get(name)!.webhookSecret}`,
    subscribe(serviceUrl) {
      kommo.subscribe(world.kommoWebhookUrl(serviceUrl), ['add_lead', 'update_lead', 'status_lead', 'responsible_lead', 'delete_lead', 'update_contact']);
    },
    async close() {
      await kommo.flushWebhooks();
      await kommo.close();
      await vendorApp.close();
    },
  };
  return world;
}
