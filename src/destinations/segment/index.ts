/**
 * Segment and RudderStack: one HTTP Tracking API, registered twice (`type: segment`,
 * `type: rudderstack`) by one factory. They differ in host, size limits, answers, and in what
 * `check()` can prove: RudderStack refuses a wrong write key (401), Segment accepts any key with 200
 * and drops its events. See README.md in this folder for settings, limits and what is unconfirmed.
 */
import type { z } from 'zod';
import { redactUrl, vendorMessage } from '../http.js';
import type { Destination, DestinationSimulatorFactory, SyncOpKind } from '../types.js';
import { postBatch, rudderstackBatchUrl, segmentBatchUrl } from './client.js';
import { TRACKING_DEFAULTS } from './defaults.js';
import { planBatches, RUDDERSTACK_WIRE, SEGMENT_WIRE, sendBatches, type WireLimits } from './ops.js';
import { rudderstackSettings, rudderstackWarnings, segmentSettings, segmentWarnings, type TrackingSettings } from './settings.js';
import { rudderstackSimulator, segmentSimulator } from './simulator.js';

interface Variant<S extends TrackingSettings> {
  type: string;
  title: string;
  settings: z.ZodType<S>;
  wire: WireLimits;
  batchUrl(settings: S): string;
  /** The settings key naming the host, for messages. */
  urlKey: string;
  configWarnings(settings: S): string[];
  /** Where a person's data is deleted or suppressed, since the tracking API cannot. */
  privacy: string;
  /** RudderStack refuses an unknown write key (401); Segment answers 200 and drops the events. */
  verifiesWriteKey: boolean;
  simulator: DestinationSimulatorFactory;
}

const SUPPORTS = { upsertPerson: true, trackEvent: true, groupAccount: true } as const;

function unsupportedReasons(title: string, privacy: string): Partial<Record<SyncOpKind, string>> {
  return {
    erasePerson: `${title}'s tracking API cannot delete anyone, so nothing was deleted there: ${privacy}`,
    suppress: `${title}'s tracking API has no per-person opt-out (the opt-out still reaches the email tools): ${privacy}`,
    triggerWorkflow: `${title} has no workflows to start: the tools it forwards events to start theirs from the event`,
    addToList: `${title} has no lists: build an audience on the kommo_stage trait instead`,
    removeFromList: `${title} has no lists: build an audience on the kommo_stage trait instead`,
  };
}

export function trackingDestination<S extends TrackingSettings>(v: Variant<S>): Destination<z.ZodType<S>> {
  const reasons = unsupportedReasons(v.title, v.privacy);
  return {
    type: v.type,
    title: v.title,
    settings: v.settings,
    // A delivery is split into as few requests as the size limits allow, so claims can be large:
    // the worker's batchSize (default 250, at most 1000 jobs) is the cap that matters.
    limits: { maxBatch: 1000, maxBatchBytes: v.wire.maxRequestBytes },
    supports: SUPPORTS,
    unsupportedReasons: reasons,
    defaults: TRACKING_DEFAULTS,
    configWarnings: (settings) => v.configWarnings(settings),
    ...(v.verifiesWriteKey ? {} : {
      credentialsUnverifiable: `${v.title} answers 200 to any write key and drops the events of a wrong one; check that events arrive in the source's debugger`,
    }),

    async check(ctx) {
      const url = v.batchUrl(ctx.settings);
      // Error texts name the URL: without any user info a data plane URL might carry.
      const shown = redactUrl(url);
      // An empty batch: authenticated, applies nothing (Segment lists it as an empty batch discard).
      const res = await postBatch(ctx, url, { batch: [], sentAt: new Date().toISOString() });
      if (res.error !== undefined) throw new Error(`Could not reach ${v.title} at ${shown}: ${res.error}`);
      const message = vendorMessage(res.body);
      const answer = `HTTP ${res.status}${message ? `: ${message}` : ''}`;
      if (res.status === 401 || res.status === 403 || (res.status >= 400 && /write ?key/i.test(message ?? ''))) {
        throw new Error(`${v.title} rejected the write key (${answer})`);
      }
      if (res.status === 404) throw new Error(`${v.title} answered ${answer} at ${shown}: the source is disabled, or ${v.urlKey} is wrong`);
      // Past authentication, RudderStack may still refuse the empty body (400): the key was accepted.
      const ok = (res.status >= 200 && res.status < 300) || (v.verifiesWriteKey && res.status === 400);
      if (!ok) throw new Error(`${v.title} test request to ${shown} failed: ${answer}`);
      if (!v.verifiesWriteKey) {
        ctx.log.warn(
          { destination: ctx.name },
          `${v.title} answered, but it accepts any write key (events sent with a wrong one vanish): check the source's debugger after the first sync`,
        );
      }
    },

    async deliver(ctx, ops) {
      const plan = planBatches(ops, {
        vendor: v.title,
        identifyBy: ctx.identifyBy,
        wire: v.wire,
        destination: ctx.name,
        sendGroups: ctx.settings.group,
        sentAt: new Date().toISOString(),
        unsupported: reasons,
      });
      const url = v.batchUrl(ctx.settings);
      return sendBatches(plan, ops.length, (body) => postBatch(ctx, url, body), v.title);
    },

    simulator: v.simulator,
  };
}

export const segment = trackingDestination({
  type: 'segment',
  title: 'Segment',
  settings: segmentSettings,
  wire: SEGMENT_WIRE,
  batchUrl: segmentBatchUrl,
  urlKey: 'baseUrl (or region)',
  configWarnings: segmentWarnings,
  privacy: 'file a deletion regulation (SUPPRESS_WITH_DELETE) for the person\'s userId (their email, or kommo-contact-<id> with identifyBy: id) in the Segment workspace, Settings > End User Privacy, or through the Public API\'s Deletion and Suppression endpoints',
  verifiesWriteKey: false,
  simulator: segmentSimulator,
});

export const rudderstack = trackingDestination({
  type: 'rudderstack',
  title: 'RudderStack',
  settings: rudderstackSettings,
  wire: RUDDERSTACK_WIRE,
  batchUrl: rudderstackBatchUrl,
  urlKey: 'dataPlaneUrl',
  configWarnings: rudderstackWarnings,
  privacy: 'create a suppression-with-delete regulation for the person\'s userId (their email, or kommo-contact-<id> with identifyBy: id) with RudderStack\'s User Suppression API, or ask RudderStack support',
  verifiesWriteKey: true,
  simulator: rudderstackSimulator,
});
