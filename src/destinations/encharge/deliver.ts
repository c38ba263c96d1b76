/**
 * Sends a delivery's plan (ops.ts) wave by wave and collects one result per op. The decisions
 * about what an answer means live in ops.ts; this file only sequences the I/O.
 */
import { classifyResult } from '../http.js';
import type { ItemResult, SyncOp } from '../types.js';
import { send, type EnchargeContext } from './client.js';
import { callsFor, createThenRetry, failsForEveryone, planDelivery, readAnswer, splitUpsert, type Api, type EnchargeCall } from './ops.js';

/**
 * Calls of one wave in flight at once. Our choice: Encharge publishes no rate limit, events have
 * no batch endpoint, and a few at a time keeps a 50-job round well under a second.
 */
export const CONCURRENCY = 4;

const NOT_SENT: ItemResult = { retry: { reason: 'not sent: an earlier operation for the same person in this delivery did not succeed' } };

export async function deliverOps(ctx: EnchargeContext, ops: readonly SyncOp[]): Promise<ItemResult[]> {
  const plan = planDelivery(ops, ctx.identifyBy);
  const results = new Map<number, ItemResult>(plan.decided);
  // A person whose op did not succeed gets nothing more this time: their job is retried whole,
  // and an event sent now would then reach Encharge twice (it cannot drop copies).
  const blocked = new Set<string>();
  // Once a call fails in a way that concerns every call to the same API (auth, throttling,
  // outage), the others are answered alike without sending: a 429 is not answered with more traffic.
  const stopped = new Map<Api, ItemResult>();

  const run = async (call: EnchargeCall): Promise<ItemResult[]> => {
    const stop = stopped.get(call.api);
    if (stop) return call.opIndexes.map(() => stop);
    const res = await send(ctx, call);
    if (failsForEveryone(res)) {
      const result = classifyResult(res);
      stopped.set(call.api, result);
      return call.opIndexes.map(() => result);
    }
    const reading = readAnswer(call, res);
    if ('results' in reading) return reading.results;
    if ('split' in reading) {
      const out: ItemResult[] = [];
      for (const single of splitUpsert(call)) out.push(...(await run(single)));
      return out;
    }
    const steps = createThenRetry(call, ops[call.opIndexes[0]!]!, ctx.identifyBy);
    if (!steps) return call.opIndexes.map(() => classifyResult(res));
    const [create, again] = steps;
    const created = await run(create);
    return created.every((r) => 'ok' in r) ? run(again) : created;
  };

  for (const wave of plan.waves) {
    const ready = wave.filter((index) => {
      if (!blocked.has(plan.personOf.get(index) ?? '')) return true;
      results.set(index, NOT_SENT);
      return false;
    });
    await inPool(callsFor(ops, ready, ctx.identifyBy), CONCURRENCY, async (call) => {
      const answered = await run(call);
      call.opIndexes.forEach((index, k) => {
        const result = answered[k] ?? { retry: { reason: 'no result for item' } };
        results.set(index, result);
        if (!('ok' in result)) blocked.add(plan.personOf.get(index) ?? '');
      });
    });
  }
  return ops.map((_, i) => results.get(i) ?? { retry: { reason: 'not sent' } });
}

/** Runs `work` over `items` with at most `limit` at once. */
async function inPool<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++]!;
      await work(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
}
