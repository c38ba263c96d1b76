/** The fake vendor: `POST /v1/batch` with per-item results, `GET /v1/me`, token auth; webhooks back. */
import { randomBytes } from 'node:crypto';
import type { FastifyPluginAsync } from 'fastify';
import { SimulatorHarness } from '../../../src/destinations/simulator-kit.js';
import type { DestinationSimulator, DestinationSimulatorFactory, EngagementExtra, EngagementSample, SyncOpKind } from '../../../src/destinations/types.js';
import { randomUlid } from '../../../src/model/index.js';

export interface FakeSimulator extends DestinationSimulator {
  readonly credentials: { token: string; webhookToken: string };
  /** person -> attributes of the last upsert. */
  readonly people: Map<string, Record<string, unknown>>;
}

const KINDS = new Set<SyncOpKind>(['upsertPerson', 'trackEvent', 'triggerWorkflow', 'addToList', 'removeFromList', 'groupAccount', 'suppress', 'erasePerson']);

export const fakeSimulator = ((opts: { perSecond?: number } = {}): FakeSimulator => {
  // Distinctive values, so a leak test can search every log line, metric and API answer for them.
  const credentials = { token: `FAKE-SECRET-token-${randomBytes(8).toString('hex')}`, webhookToken: `FAKE-SECRET-hook-${randomBytes(8).toString('hex')}` };
  const harness = new SimulatorHarness({ errorBody: (status) => ({ error: `simulated HTTP ${status}` }), ...(opts.perSecond ? { perSecond: opts.perSecond } : {}) });
  const people = new Map<string, Record<string, unknown>>();
  const seen = new Set<string>();

  const plugin: FastifyPluginAsync = async (app) => {
    app.addHook('onSend', harness.beforeAnswer);
    app.addHook('onRequest', async (request, reply) => {
      const faulted = await harness.fault(request, reply);
      if (faulted) return faulted;
      if (request.headers['x-fake-token'] !== credentials.token) return reply.code(401).send({ error: 'bad token' });
      return harness.overLimit(reply);
    });
    harness.install(app, (request) => request.body);
    app.get('/v1/me', async () => ({ ok: true }));
    app.post('/v1/batch', async (request, reply) => {
      const items = (request.body as { items?: unknown } | undefined)?.items;
      if (!Array.isArray(items)) return reply.code(400).send({ error: 'expected {items: [...]}' });
      return {
        results: items.map((raw: { op?: SyncOpKind; person?: string; target?: string; data?: Record<string, unknown> }) => {
          const kind = raw.op && KINDS.has(raw.op) ? raw.op : undefined;
          const person = typeof raw.person === 'string' ? raw.person.toLowerCase() : '';
          if (!kind) return { ok: false, message: `unknown op ${String(raw.op)}` };
          const refuse = !person ? 'person is required' : kind === 'trackEvent' && !raw.target ? 'event name is required' : undefined;
          if (refuse) {
            harness.item({ kind, person, ok: false, reason: refuse });
            return { ok: false, message: refuse };
          }
          const id = kind === 'trackEvent' ? String(raw.data?.id ?? '') : '';
          const duplicate = id !== '' && seen.has(id);
          if (id) seen.add(id);
          if (kind === 'upsertPerson') people.set(person, { ...people.get(person), ...raw.data });
          if (kind === 'erasePerson' || kind === 'suppress') people.delete(person);
          harness.item({ kind, person, ok: true, ...(raw.target ? { target: raw.target } : {}), ...(duplicate ? { duplicate } : {}) });
          return { ok: true };
        }),
      };
    });
  };

  const sendEngagement = async (url: string, kind: EngagementSample, email: string, extra: EngagementExtra = {}): Promise<number> => {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-fake-webhook-token': credentials.webhookToken },
      body: JSON.stringify({ id: extra.eventId ?? randomUlid(), type: kind, email, at: extra.timestamp ?? Date.now(), subject: extra.subject, link: extra.link, machine: extra.machine }),
    });
    await res.arrayBuffer();
    return res.status;
  };

  return {
    plugin,
    fieldsOf: (key) => people.get(key),
    requests: harness.requests,
    items: harness.items,
    faults: harness.faults,
    credentials,
    people,
    settingsFor: (baseUrl) => ({ passphrase: credentials.token, baseUrl, webhookToken: credentials.webhookToken }),
    demoConfig: () => ({ lists: { 'Demo scheduled': 'demo-list', 'Proposal sent': 'proposal-list' } }),
    sendEngagement,
    reset: () => {
      harness.reset();
      people.clear();
      seen.clear();
    },
  };
}) satisfies DestinationSimulatorFactory;
