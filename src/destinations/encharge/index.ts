/**
 * Encharge: people and tags out through the REST API, events through the Ingest API (a separate
 * write key); event subscriptions and the Activity Stream in. See README.md in this folder for
 * settings, limits and what is unconfirmed.
 */
import { vendorMessage } from '../http.js';
import type { Destination } from '../types.js';
import { getFields } from './client.js';
import { enchargeDefaults } from './defaults.js';
import { deliverOps } from './deliver.js';
import { parseEncharge } from './inbound.js';
import { UNSUPPORTED } from './ops.js';
import { INGEST_URL, REST_URL, enchargeSettings, type EnchargeSettings } from './settings.js';
import { enchargeSimulator } from './simulator.js';
import { listSubscriptions, registerSubscriptions } from './subscriptions.js';

export const encharge = {
  type: 'encharge',
  title: 'Encharge',
  settings: enchargeSettings,
  // Encharge publishes no rate limit: no perSecond. 50 jobs a round make one people upsert
  // request and up to 50 Ingest events, four at a time (deliver.ts).
  limits: { maxBatch: 50 },
  supports: { upsertPerson: true, trackEvent: true, addToList: true, removeFromList: true, suppress: true, erasePerson: true },
  unsupportedReasons: UNSUPPORTED,
  defaults: enchargeDefaults,

  configWarnings(settings: EnchargeSettings): string[] {
    const warnings: string[] = [];
    if (settings.apiKey === settings.writeKey) {
      warnings.push('writeKey equals apiKey: the Ingest API takes its own write key, not the REST API key; events will be refused');
    }
    if (hostOf(settings.baseUrl) === hostOf(INGEST_URL)) warnings.push(`baseUrl points at the Ingest host; the REST API lives at ${REST_URL}`);
    if (hostOf(settings.ingestUrl) === hostOf(REST_URL)) warnings.push(`ingestUrl points at the REST host; events go to ${INGEST_URL}`);
    if (!settings.webhookEvents.includes('unsubscribedUser')) {
      warnings.push('webhookEvents leaves out unsubscribedUser: unsubscribes in Encharge will not reach Kommo (unless the Activity Stream sends them)');
    }
    return warnings;
  },

  async check(ctx) {
    const res = await getFields(ctx);
    if (res.error !== undefined) throw new Error(`Could not reach Encharge at ${ctx.settings.baseUrl}: ${res.error}`);
    if (res.status === 401 || res.status === 403) throw new Error(`Encharge rejected the API key (${res.status})`);
    if (res.status < 200 || res.status >= 300) {
      const message = vendorMessage(res.body);
      throw new Error(`Encharge fields lookup failed: HTTP ${res.status}${message ? `: ${message}` : ''}`);
    }
    // The write key cannot be checked without sending an event (the Ingest API has no read call):
    // a wrong one shows as `auth` failures of the first events in the delivery log.
  },

  deliver: deliverOps,

  inbound: {
    // Encharge signs nothing: the secret path segment is the only proof a webhook is Encharge's.
    auth: { kind: 'path-secret' },
    verify() {},
    parse: parseEncharge,
  },
  webhookRegistration: {
    list: listSubscriptions,
    register: registerSubscriptions,
  },
  simulator: enchargeSimulator,
} satisfies Destination<typeof enchargeSettings>;

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}
