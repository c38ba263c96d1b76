/**
 * Iterable: users, events, lists, workflow triggers, opt-outs and erasure out through its API (bulk
 * endpoints for bursts); system webhooks in. See README.md in this folder for settings, limits and
 * what is unconfirmed.
 */
import type { Destination, ItemResult } from '../types.js';
import { CHECK_EMAIL, getUserByEmail, send } from './client.js';
import { iterableDefaults } from './defaults.js';
import { parseIterableRequest, verifyIterable } from './inbound.js';
import { classifyAnswer, MAX_BODY_BYTES, planDelivery, readAnswer, type Endpoint } from './ops.js';
import { apiRoot, iterableSettings } from './settings.js';
import { iterableSimulator } from './simulator.js';

export const iterable = {
  type: 'iterable',
  title: 'Iterable',
  settings: iterableSettings,
  // perSecond: one delivery sends at most one bulkUpdate in practice (250 jobs are far below 4 MB),
  // and bulkUpdate is Iterable's tightest bulk limit (5 requests/s per project; trackBulk 10/s).
  // The budget is shared by every process on PostgreSQL, as Iterable's limit is per project.
  limits: { perSecond: 5, maxBatch: 250, maxBatchBytes: MAX_BODY_BYTES },
  supports: { upsertPerson: true, trackEvent: true, triggerWorkflow: true, addToList: true, removeFromList: true, suppress: true, erasePerson: true },
  unsupportedReasons: {
    groupAccount: 'Iterable has no accounts or groups in its user API; company fields go on the user (the default `company` data field)',
  },
  defaults: iterableDefaults,

  configWarnings(s) {
    const out: string[] = [];
    if (!s.region && !s.baseUrl) out.push('region is not set, so the US data center (api.iterable.com) is used; a project in Iterable\'s EU data center needs `region: eu`');
    if (s.suppressListId === undefined) out.push('suppressListId is not set: opt-outs reported by other tools cannot unsubscribe people in Iterable (those suppress jobs fail and wait in the dead-letter list)');
    if (!s.webhookAuthToken) out.push('webhookAuthToken is not set: Iterable webhooks are checked by the secret in the URL only; set a token on the Iterable webhook (Authorization) and here');
    if (s.erase === 'forget') out.push('erase: forget uses POST /users/forget, limited by Iterable to 3 requests per second and 1000 per day per project; erasures beyond that wait and retry');
    return out;
  },

  async check(ctx) {
    const res = await getUserByEmail(ctx, CHECK_EMAIL);
    const root = apiRoot(ctx.settings);
    if (res.error !== undefined) throw new Error(`Could not reach Iterable at ${root}: ${res.error}`);
    const result = classifyAnswer(res);
    if ('ok' in result) return;
    if ('fail' in result && result.fail.code === 'auth') {
      // An EU project's key is unknown to the US host (and the reverse): the usual first mistake.
      const other = ctx.settings.region === 'eu' ? 'us' : 'eu';
      const hint = ctx.settings.baseUrl ? '' : ` (a key works only in its project's data center: if the project is in the other one, set region: ${other})`;
      throw new Error(`Iterable rejected the API key at ${root}: ${result.fail.reason}${hint}`);
    }
    // Any other refusal still proves the key was accepted; a 5xx or 429 is worth reporting.
    if ('retry' in result) throw new Error(`Iterable at ${root} did not answer the check: ${result.retry.reason}`);
  },

  async deliver(ctx, ops) {
    const plan = planDelivery(ops, { identifyBy: ctx.identifyBy, suppressListId: ctx.settings.suppressListId, erase: ctx.settings.erase });
    const results = new Map<number, ItemResult>(plan.decided);
    // Once a request fails for everything (auth, outage, network), the rest would fail alike; once
    // an endpoint is throttled, its other requests would be too. Answer those without sending.
    let stopAll: ItemResult | undefined;
    const throttled = new Map<string, ItemResult>();
    // Suppress goes through /lists/unsubscribe: the same endpoint, the same limit.
    const limitOf = (e: Endpoint) => (e === 'suppress' ? 'unsubscribe' : e);
    for (const req of plan.requests) {
      const opIndexes = req.items.flatMap((i) => i.opIndexes);
      const blocked = stopAll ?? throttled.get(limitOf(req.endpoint));
      if (blocked) {
        for (const i of opIndexes) results.set(i, blocked);
        continue;
      }
      const waitingFor = (req.dependsOn ?? []).map((i) => results.get(i)).find((r) => r !== undefined && !('ok' in r));
      if (waitingFor) {
        const why = 'retry' in waitingFor ? waitingFor.retry.reason : 'fail' in waitingFor ? waitingFor.fail.reason : '';
        for (const i of opIndexes) results.set(i, { retry: { reason: `workflow not triggered yet: the person's update or event in this delivery did not succeed (${why})` } });
        continue;
      }
      const res = await send(ctx, req);
      const reading = readAnswer(req, res);
      req.items.forEach((item, k) => {
        const r = reading.results[k] ?? { retry: { reason: 'no result for item' } };
        for (const i of item.opIndexes) results.set(i, r);
      });
      if (reading.scope === 'all') stopAll = reading.results[0];
      if (reading.scope === 'endpoint' && reading.results[0]) throttled.set(limitOf(req.endpoint), reading.results[0]);
      if (reading.filteredOutFields) ctx.log.warn({ endpoint: req.path, fields: reading.filteredOutFields }, 'Iterable dropped fields it does not accept in this project (filteredOutFields)');
      if (reading.unattributed) ctx.log.warn({ endpoint: req.path, unattributed: reading.unattributed }, 'Iterable counted failures it did not name; the unnamed items are treated as delivered');
    }
    return ops.map((_, i) => results.get(i) ?? { retry: { reason: 'not sent' } });
  },

  inbound: {
    auth: { kind: 'header-token', header: 'authorization', setting: 'webhookAuthToken' },
    verify: verifyIterable,
    parse: parseIterableRequest,
  },
  simulator: iterableSimulator,
} satisfies Destination<typeof iterableSettings>;
