/**
 * Encharge event subscriptions for `doctor` / `doctor --fix`. Encharge's API creates
 * (`POST /event-subscriptions`) and deletes them, but documents no way to list them, and its
 * webhook body does not name the event. So each event type gets its own URL, our webhook URL plus
 * `?event=<eventType>`, which inbound.ts reads back.
 */
import { z } from 'zod';
import { vendorMessage } from '../http.js';
import { send, urlOf, type EnchargeContext } from './client.js';

export const EVENT_PARAM = 'event';

/** Our webhook URL as subscribed for one Encharge event type. */
export function subscriptionUrl(url: string, eventType: string): string {
  const u = new URL(url);
  u.searchParams.set(EVENT_PARAM, eventType);
  return u.toString();
}

/** The webhook URL without our `event` parameter: what doctor compares with its own URL. */
export function baseOfSubscriptionUrl(url: string): string {
  try {
    const u = new URL(url);
    u.searchParams.delete(EVENT_PARAM);
    return u.toString();
  } catch {
    return url;
  }
}

const created = z.looseObject({ subscription: z.looseObject({ id: z.union([z.number(), z.string()]) }) });
const subscriptionList = z.array(z.looseObject({ url: z.string() }));
/** A bare array, or one under `subscriptions` or `items` (the shape is not documented). */
const listed = z.union([
  subscriptionList,
  z.looseObject({ subscriptions: subscriptionList }).transform((b) => b.subscriptions),
  z.looseObject({ items: subscriptionList }).transform((b) => b.items),
]);

/** `webhookEvents`, then `added-tag-<tag>` for each signal tag not already in it. */
export function eventTypesOf(ctx: Pick<EnchargeContext, 'settings' | 'signalTags'>): string[] {
  return [...new Set([...ctx.settings.webhookEvents, ...(ctx.signalTags ?? []).map((t) => `added-tag-${t.trim()}`)])];
}

/**
 * Subscribes `url` to every type of `eventTypesOf` (webhookEvents and the signal tags). Throws a clear Error on the first refusal;
 * subscriptions created before it stay (registering again only duplicates them, and intake
 * stores a duplicated webhook once).
 */
export async function registerSubscriptions(ctx: EnchargeContext, url: string): Promise<void> {
  for (const eventType of eventTypesOf(ctx)) {
    const res = await send(ctx, { api: 'rest', method: 'POST', path: '/event-subscriptions', json: { eventType, url: subscriptionUrl(url, eventType) } });
    if (res.error !== undefined) throw new Error(`Could not reach Encharge at ${urlOf(ctx.settings, { api: 'rest', path: '/event-subscriptions' })}: ${res.error}`);
    if (res.status === 401 || res.status === 403) throw new Error(`Encharge rejected the API key (${res.status}) while subscribing to ${eventType}`);
    if (res.status < 200 || res.status >= 300 || !created.safeParse(res.body).success) {
      const message = vendorMessage(res.body);
      throw new Error(`Encharge did not create the ${eventType} subscription: HTTP ${res.status}${message ? `: ${message}` : ''}`);
    }
    ctx.log.info({ eventType }, 'Encharge event subscription created');
  }
}

/**
 * The URLs Encharge posts to, when its API can say (`GET /event-subscriptions` is not documented:
 * tried in case it exists). Throws an Error telling the user to check in Encharge otherwise.
 */
export async function listSubscriptions(ctx: EnchargeContext): Promise<string[]> {
  const res = await send(ctx, { api: 'rest', method: 'GET', path: '/event-subscriptions' });
  if (res.error !== undefined) throw new Error(`Could not reach Encharge: ${res.error}`);
  if (res.status === 401 || res.status === 403) throw new Error(`Encharge rejected the API key (${res.status})`);
  const parsed = res.status >= 200 && res.status < 300 ? listed.safeParse(res.body) : undefined;
  if (!parsed?.success) {
    throw new Error(
      'Encharge\'s API cannot list event subscriptions (only create and delete them), so they cannot be checked from here: '
      + `make sure ${eventTypesOf(ctx).join(', ')} ${eventTypesOf(ctx).length > 1 ? 'are' : 'is'} subscribed to this destination's webhook URL`,
    );
  }
  return [...new Set(parsed.data.map((s) => baseOfSubscriptionUrl(s.url)))];
}
