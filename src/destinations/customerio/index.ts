/**
 * Customer.io (Journeys Track API): people and events out through v2 batch, reporting webhooks in.
 * See README.md in this folder for settings, limits and what is unconfirmed.
 */
import { z } from 'zod';
import { vendorMessage } from '../http.js';
import type { Destination, ItemResult } from '../types.js';
import { getRegion, postBatch, trackUrl } from './client.js';
import { parseCio, verifyCio } from './inbound.js';
import { batchResults, planBatches } from './ops.js';
import { customerioSettings, regionMismatch } from './settings.js';
import { customerioSimulator } from './simulator.js';

const regionAnswer = z.looseObject({ region: z.string().optional() });

export const customerio = {
  type: 'customerio',
  title: 'Customer.io',
  settings: customerioSettings,
  // 1000 rps is Customer.io's documented (soft) limit, far above what one worker sends: no perSecond.
  // 100 ops of a few KB each fit one batch request easily.
  limits: { maxBatch: 100, maxBatchBytes: 500_000 },
  supports: { upsertPerson: true, trackEvent: true, suppress: true, erasePerson: true },

  async check(ctx) {
    const res = await getRegion(ctx);
    if (res.error !== undefined) throw new Error(`Could not reach Customer.io at ${trackUrl(ctx.settings)}: ${res.error}`);
    if (res.status === 401 || res.status === 403) throw new Error(`Customer.io rejected the site id / API key (${res.status})`);
    if (res.status < 200 || res.status >= 300) {
      const message = vendorMessage(res.body);
      throw new Error(`Customer.io region lookup failed: HTTP ${res.status}${message ? `: ${message}` : ''}`);
    }
    const answer = regionAnswer.safeParse(res.body);
    const region = answer.success ? answer.data.region : undefined;
    const mismatch = regionMismatch(ctx.settings, region);
    if (mismatch) throw new Error(mismatch);
  },

  async deliver(ctx, ops) {
    const plan = planBatches(ops, ctx.identifyBy);
    const results = new Map(plan.decided);
    // Once a request fails for every item (auth, throttling, outage, network), the rest would too:
    // answer them the same way without sending, so a 429 is not answered with more traffic.
    let stop: ItemResult | undefined;
    for (const req of plan.requests) {
      let itemResults: ItemResult[];
      if (stop) {
        const same = stop;
        itemResults = req.opIndexes.map(() => same);
      } else {
        const res = await postBatch(ctx, req.body);
        itemResults = batchResults(req, res);
        if (res.error !== undefined || [401, 403, 408, 429].includes(res.status) || res.status >= 500) stop = itemResults[0];
      }
      req.opIndexes.forEach((opIndex, k) => results.set(opIndex, itemResults[k] ?? { retry: { reason: 'no result for item' } }));
    }
    return ops.map((_, i) => results.get(i) ?? { retry: { reason: 'not sent' } });
  },

  inbound: {
    auth: { kind: 'hmac', header: 'x-cio-signature', timestampHeader: 'x-cio-timestamp', setting: 'webhookSigningKey' },
    verify: verifyCio,
    parse: parseCio,
  },
  simulator: customerioSimulator,
} satisfies Destination<typeof customerioSettings>;
