/**
 * A fake destination, added the way a vendor is meant to be added: this folder (settings with a
 * secret, ops, a client, inbound, a simulator) and one registry line (`registerDestination`, or
 * `KOMMO_SYNC_DESTINATIONS=<this file>` for CLI processes), touching no other file. The test kit
 * (test/kit/fake-destination.test.ts) proves the core then treats it like any built-in vendor.
 */
import { joinUrl, vendorRequest } from '../../../src/destinations/http.js';
import type { Destination } from '../../../src/destinations/types.js';
import { parseFake, verifyFake } from './inbound.js';
import { results, toItem } from './ops.js';
import { fakeSettings } from './settings.js';
import { fakeSimulator } from './simulator.js';

export const fake = {
  type: 'fake',
  title: 'Fake vendor',
  settings: fakeSettings,
  limits: { maxBatch: 50 },
  supports: { upsertPerson: true, trackEvent: true, triggerWorkflow: true, addToList: true, removeFromList: true, groupAccount: true, suppress: true, erasePerson: true },
  async check(ctx) {
    const res = await vendorRequest({ method: 'GET', url: joinUrl(ctx.settings.baseUrl, '/v1/me'), headers: { 'x-fake-token': ctx.settings.passphrase }, timeoutMs: ctx.timeoutMs, log: ctx.log });
    if (res.status !== 200) throw new Error(`the fake vendor refused the token (HTTP ${res.status})`);
  },
  async deliver(ctx, ops) {
    const items = ops.map((op) => toItem(op, ctx.identifyBy));
    const res = await vendorRequest({ method: 'POST', url: joinUrl(ctx.settings.baseUrl, '/v1/batch'), headers: { 'x-fake-token': ctx.settings.passphrase }, json: { items }, timeoutMs: ctx.timeoutMs, log: ctx.log });
    return results(ops.length, res);
  },
  inbound: { auth: { kind: 'header-token', header: 'x-fake-webhook-token', setting: 'webhookToken' }, verify: verifyFake, parse: parseFake },
  simulator: fakeSimulator,
} satisfies Destination<typeof fakeSettings>;

/** For `KOMMO_SYNC_DESTINATIONS`. */
export const destination = fake;
