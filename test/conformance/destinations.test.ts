/**
 * The conformance suite: EVERY destination in the registry, each against its own simulator over real
 * HTTP (a Fastify app on port 0, the simulator mounted under `/sim` to prove base-URL prefixes work).
 * A new destination is picked up by its registry line alone; nothing here names a vendor.
 *
 * What a destination and its simulator must do to pass:
 * - `simulator.settingsFor(baseUrl)` is a valid settings block (the destination's own schema parses it).
 * - every supported op is delivered ok, and the simulator records a request that names the person
 *   (email or id) and the op's subject (event name, attribute value, list, workflow or group id),
 *   and a neutral item (`sim.items`) of that kind for that person; simulators accept any
 *   list/workflow/group id the suite sends;
 * - an unsupported op is answered with a failure, not a throw;
 * - with every secret replaced by a wrong value, `check()` rejects and `deliver()` fails with `auth`;
 * - `faults.failNext(1, 429|503, s)` gives `retry` with `afterMs = s * 1000`; a 500 without
 *   Retry-After gives `retry`; an outage (errors, or no answer until the timeout) gives `retry`
 *   and deliveries pass again once it ends;
 * - when `limits.maxBatch > 1`: in one delivery, an event without a name (or, without trackEvent, a
 *   person without an email) fails alone;
 * - with `inbound` and `sendEngagement`: a signed webhook is parsed into `email.<kind>` for that
 *   email; a body that is not JSON is InboundRejected(400); when `inbound.auth` names a setting
 *   (a signing key or token) and the simulator's settings fill it, a wrong value there gives 401;
 * - no credential value ever appears in the destination's log output.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { destinationTypes, getDestination } from '../../src/destinations/index.js';
import { secretKeys } from '../../src/model/index.js';
import {
  InboundRejected,
  type Destination,
  type DestinationContext,
  type DestinationSimulator,
  type InboundParsed,
  type InboundRequest,
  type ItemResult,
  type SyncOp,
  type SyncOpKind,
} from '../../src/destinations/types.js';

const ALL_KINDS: SyncOpKind[] = ['upsertPerson', 'trackEvent', 'triggerWorkflow', 'addToList', 'removeFromList', 'groupAccount', 'suppress', 'erasePerson'];
const ENGAGEMENTS = ['opened', 'clicked', 'unsubscribed', 'bounced'] as const;

let seq = 0;

/** A fresh op of `kind` for a fresh person, and the strings its request must carry. */
function sampleOp(kind: SyncOpKind): { op: SyncOp; person: { email: string; id: string }; marker: string | undefined } {
  seq += 1;
  const person = { email: `conf-${kind.toLowerCase()}-${seq}@example.com`, id: `kommo-contact-${9000 + seq}` };
  const at = Date.now();
  const messageId = `conf-${kind}-${seq}-${at}`;
  switch (kind) {
    case 'upsertPerson':
      return { op: { kind, person, attributes: { kommo_stage: `stage-${seq}`, deal_value: 1200 }, timestamp: at }, person, marker: `stage-${seq}` };
    case 'trackEvent':
      return { op: { kind, person, name: `conf_event_${seq}`, properties: { price: 5 }, timestamp: at, messageId }, person, marker: `conf_event_${seq}` };
    case 'triggerWorkflow':
      return { op: { kind, person, workflowId: `${700 + seq}`, data: { source: 'conformance' }, messageId }, person, marker: `${700 + seq}` };
    case 'addToList':
      return { op: { kind, person, listId: `conf-list-${seq}`, attributes: { name: 'Conf' } }, person, marker: `conf-list-${seq}` };
    case 'removeFromList':
      return { op: { kind, person, listId: `conf-list-${seq}` }, person, marker: `conf-list-${seq}` };
    case 'groupAccount':
      return { op: { kind, person, groupId: `conf-group-${seq}`, traits: { name: 'Acme' }, timestamp: at, messageId }, person, marker: `conf-group-${seq}` };
    case 'suppress':
    case 'erasePerson':
      return { op: { kind, person }, person, marker: undefined };
  }
}

// CONFORMANCE_TYPES=a,b runs the suite for those types only (the test kit runs it for its fake).
const only = process.env.CONFORMANCE_TYPES?.split(',').map((t) => t.trim()).filter(Boolean);
for (const type of destinationTypes().filter((t) => !only || only.includes(t))) {
  const destination: Destination | undefined = getDestination(type);
  assert.ok(destination, `registry lists ${type}`);
  const supported = ALL_KINDS.filter((k) => destination.supports[k]);
  const secrets = secretKeys(destination.settings);

  describe(`destination ${type}`, () => {
    const sim: DestinationSimulator = destination.simulator();
    const logLines: string[] = [];
    const log = pino({ level: 'trace' }, { write: (line: string) => void logLines.push(line) });
    let app: FastifyInstance;
    let settings: unknown;
    let badSettings: unknown;
    const ctx = (s: unknown, timeoutMs = 5000): DestinationContext<unknown> => ({ name: `conf-${type}`, settings: s, identifyBy: 'email', log, timeoutMs });
    const deliver = (s: unknown, ops: SyncOp[]): Promise<ItemResult[]> => destination.deliver(ctx(s), ops);

    before(async () => {
      app = Fastify({ forceCloseConnections: true });
      await app.register(sim.plugin, { prefix: '/sim' });
      const address = await app.listen({ port: 0, host: '127.0.0.1' });
      const raw = sim.settingsFor(`${address}/sim`);
      settings = destination.settings.parse(raw);
      const wrong = Object.fromEntries(secrets.filter((k) => typeof raw[k] === 'string').map((k) => [k, `wrong-${k}-value`]));
      badSettings = destination.settings.parse({ ...raw, ...wrong });
    });
    after(() => app.close());

    it('has a simulator whose settings its own schema accepts, and passes check()', async () => {
      await destination.check(ctx(settings));
    });

    for (const kind of supported) {
      it(`delivers ${kind}`, async () => {
        const { op, person, marker } = sampleOp(kind);
        const seen = sim.requests.length;
        assert.deepEqual(okOnly(await deliver(settings, [op])), [true]);
        const sent = sim.requests.slice(seen);
        assert.ok(sent.length > 0, 'the simulator received a request');
        assert.ok(sent.every((r) => r.status < 300), `simulator answered ${sent.map((r) => r.status).join(', ')}`);
        const haystack = sent.map((r) => `${safeDecode(r.path)} ${JSON.stringify(r.body)}`).join('\n');
        assert.ok(haystack.includes(person.email) || haystack.includes(person.id), 'the request names the person');
        if (marker) assert.ok(haystack.includes(marker), `the request carries ${marker}`);
        const items = sim.items.filter((i) => i.kind === kind && (i.person === person.email || i.person === person.id));
        assert.ok(items.some((i) => i.ok), `the simulator lists an applied ${kind} item for the person (items: ${JSON.stringify(sim.items.slice(-3))})`);
      });
    }

    it('answers unsupported ops with a failure instead of throwing', async () => {
      const unsupported = ALL_KINDS.filter((k) => !destination.supports[k]).map((k) => sampleOp(k).op);
      const results = await deliver(settings, unsupported);
      assert.equal(results.length, unsupported.length);
      for (const r of results) assert.ok('fail' in r, JSON.stringify(r));
    });

    if (destination.credentialsUnverifiable) {
      it('accepts bad credentials as its vendor does (credentialsUnverifiable): check() passes, the op is answered ok, nothing is applied', async () => {
        await destination.check(ctx(badSettings));
        const [first] = supported;
        assert.ok(first, 'supports at least one op');
        const { op, person } = sampleOp(first);
        const seen = sim.items.length;
        const [result] = await deliver(badSettings, [op]);
        assert.ok(result && 'ok' in result, JSON.stringify(result));
        const applied = sim.items.slice(seen).filter((i) => i.ok && (i.person === person.email || i.person === person.id));
        assert.deepEqual(applied, [], 'the simulator applied nothing sent with a wrong key');
      });
    } else {
      it('rejects bad credentials: check() throws, deliver() fails with auth', async () => {
        await assert.rejects(destination.check(ctx(badSettings)));
        const [first] = supported;
        assert.ok(first, 'supports at least one op');
        const [result] = await deliver(badSettings, [sampleOp(first).op]);
        assert.ok(result && 'fail' in result && result.fail.code === 'auth', JSON.stringify(result));
      });
    }

    for (const [status, retryAfterSec] of [[429, 7], [503, 3], [500, undefined]] as const) {
      it(`retries on ${status}${retryAfterSec ? ` honouring Retry-After: ${retryAfterSec}` : ''}`, async () => {
        const [first] = supported;
        assert.ok(first);
        sim.faults.failNext(1, status, retryAfterSec);
        const [result] = await deliver(settings, [sampleOp(first).op]);
        assert.ok(result && 'retry' in result, JSON.stringify(result));
        if (retryAfterSec !== undefined) assert.equal(result.retry.afterMs, retryAfterSec * 1000);
        // Only the next request failed: the resend goes through.
        assert.deepEqual(okOnly(await deliver(settings, [sampleOp(first).op])), [true]);
      });
    }

    for (const outage of [{ status: 503 }, 'timeout'] as const) {
      it(`retries during an outage (${outage === 'timeout' ? 'no answer' : `HTTP ${outage.status}`}) and delivers once it ends`, async () => {
        const [first] = supported;
        assert.ok(first);
        sim.faults.outage(outage);
        try {
          const results = await destination.deliver(ctx(settings, 300), [sampleOp(first).op, sampleOp(first).op]);
          assert.deepEqual(results.map((r) => Object.keys(r).find((k) => k !== 'httpStatus')), ['retry', 'retry'], JSON.stringify(results));
        } finally {
          sim.faults.outage(null);
        }
        assert.deepEqual(okOnly(await deliver(settings, [sampleOp(first).op])), [true]);
      });
    }

    it('fails only the invalid op of a batch', async (t) => {
      if (destination.limits.maxBatch <= 1) return t.skip('no batch support (maxBatch <= 1)');
      const [first] = supported;
      assert.ok(first);
      const invalid = supported.includes('trackEvent')
        ? { ...(sampleOp('trackEvent').op as Extract<SyncOp, { kind: 'trackEvent' }>), name: '' }
        : { ...sampleOp(first).op, person: { email: '' } };
      const results = await deliver(settings, [sampleOp(first).op, invalid, sampleOp(first).op]);
      assert.deepEqual(results.map((r) => ('ok' in r ? 'ok' : 'fail' in r ? r.fail.code : 'retry')), ['ok', 'invalid', 'ok']);
    });

    describe('inbound webhooks', () => {
      const inbound = destination.inbound;
      const send = sim.sendEngagement?.bind(sim);
      let receiver: FastifyInstance;
      let url = '';
      let receiverSettings: unknown;
      const received: InboundParsed[] = [];

      before(async () => {
        if (!inbound || !send) return;
        receiverSettings = settings;
        receiver = Fastify({ forceCloseConnections: true });
        // Raw bytes, as the real intake hands them over: signatures are over the bytes sent.
        receiver.removeAllContentTypeParsers();
        receiver.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
        receiver.post('/hook', async (request, reply) => {
          const req: InboundRequest = {
            rawBody: Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0),
            headers: request.headers,
            query: Object.fromEntries(new URL(request.url, 'http://localhost').searchParams),
            now: Date.now(),
          };
          try {
            inbound.verify(req, receiverSettings);
            received.push(...inbound.parse(req, 'conf', receiverSettings));
            return { ok: true };
          } catch (err) {
            if (err instanceof InboundRejected) return reply.code(err.status).send({ error: err.code, message: err.message });
            throw err;
          }
        });
        url = `${await receiver.listen({ port: 0, host: '127.0.0.1' })}/hook`;
      });
      after(() => receiver?.close());

      for (const kind of ENGAGEMENTS) {
        it(`parses a signed ${kind} webhook`, async (t) => {
          if (!inbound || !send) return t.skip('no inbound webhooks');
          receiverSettings = settings;
          received.length = 0;
          const email = `Engaged.${kind}@Example.com`;
          assert.equal(await send(url, kind, email), 200);
          assert.equal(received.length, 1);
          assert.equal(received[0]?.event.kind, `email.${kind}`);
          assert.equal(received[0]?.event.email, email.toLowerCase());
          assert.ok(received[0]?.dedupKey);
        });
      }

      it('rejects a webhook checked against wrong secrets', async (t) => {
        if (!inbound || !send) return t.skip('no inbound webhooks');
        const auth = inbound.auth;
        if (auth.kind === 'path-secret') return t.skip('the vendor does not sign webhooks (path secret only)');
        if (typeof (settings as Record<string, unknown>)[auth.setting] !== 'string') return t.skip(`the simulator's settings leave ${auth.setting} unset`);
        receiverSettings = { ...(settings as Record<string, unknown>), [auth.setting]: `wrong-${auth.setting}-value` };
        try {
          assert.equal(await send(url, 'opened', 'someone@example.com'), 401);
        } finally {
          receiverSettings = settings;
        }
      });

      it('rejects a body that is not JSON with 400', (t) => {
        if (!inbound) return t.skip('no inbound webhooks');
        const req: InboundRequest = { rawBody: Buffer.from('<not json>'), headers: {}, query: {}, now: Date.now() };
        assert.throws(() => inbound.parse(req, 'conf', settings), (e: unknown) => e instanceof InboundRejected && e.status === 400);
      });
    });

    // Last: the log holds every delivery and failure above.
    it('never logs a credential', () => {
      const text = logLines.join('');
      assert.ok(text.length > 0, 'the destination logged its requests');
      for (const secret of credentialValues(destination, [settings, badSettings], sim)) {
        assert.ok(!text.includes(secret), `a credential (${secret.slice(0, 3)}…) appears in the logs`);
      }
    });
  });
}

function okOnly(results: ItemResult[]): Array<true | string> {
  return results.map((r) => ('ok' in r ? true : JSON.stringify(r)));
}

/** Secret settings values, and every credential the simulator saw in auth headers (decoded too). */
function credentialValues(destination: Destination, settingsList: unknown[], sim: DestinationSimulator): string[] {
  const secrets = secretKeys(destination.settings);
  const values = new Set<string>();
  for (const s of settingsList) {
    if (typeof s !== 'object' || s === null) continue;
    for (const key of secrets) {
      const v: unknown = (s as Record<string, unknown>)[key];
      if (typeof v === 'string') values.add(v);
    }
  }
  for (const r of sim.requests) {
    for (const [name, raw] of Object.entries(r.headers)) {
      if (!/authorization|api-key|token|secret/i.test(name)) continue;
      for (const value of Array.isArray(raw) ? raw : [raw ?? '']) {
        const [scheme, token] = value.split(/\s+/, 2);
        values.add(token ?? value);
        if (scheme?.toLowerCase() === 'basic' && token) {
          for (const part of Buffer.from(token, 'base64').toString('utf8').split(':')) values.add(part);
        }
      }
    }
  }
  // Very short values (an empty password) would match anywhere and prove nothing.
  return [...values].filter((v) => v.length >= 6);
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
