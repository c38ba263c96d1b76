/**
 * The Moosend config block (vendor keys only: the loader validates the common keys — lists,
 * leaveLists, attributes, webhookSecret, … — and strips them before this schema runs).
 */
import { z } from 'zod';
import { crmEventKind, duration, secret } from '../../model/index.js';

/** The API root Moosend documents; the client appends `/subscribers/...` and `/lists/...`. */
export const MOOSEND_URL = 'https://api.moosend.com/v3';

/** YAML may read an id made of digits as a number: keep it a string either way. */
const listId = z.union([z.string().trim().min(1), z.number()]).transform(String);

export const moosendSettings = z.object({
  /** API key from Settings → API key, sent as the `apikey` query parameter (Moosend has no header auth). */
  apiKey: secret(),
  /** The API root (`https://api.moosend.com/v3`); may carry a path prefix (simulators, proxies). */
  baseUrl: z.url({ protocol: /^https?$/ }).default(MOOSEND_URL),
  /**
   * CRM event kind -> id of a mailing list whose automation starts on "subscribes to a list".
   * Moosend's REST API has no custom events, so a list subscription is how we start an automation.
   */
  automations: z.partialRecord(crmEventKind, listId).optional(),
  /**
   * false (default): subscribers are flagged as opted in elsewhere (HasExternalDoubleOptIn), so
   * Moosend sends no confirmation email. true: Moosend confirms, where the list asks for it.
   * Per list: `{ "Demo scheduled": true, "<list id>": false }` (a stage name as in `lists`, or a
   * list id); lists not named there are false.
   */
  doubleOptIn: z.union([z.boolean(), z.record(z.string(), z.boolean())]).default(false),
  /** How often each mapped list's unsubscribed members are read (`10m`); 0 turns the sweep off. */
  unsubscribeSweep: duration.prefault('10m'),
  /** Per-request timeout, overriding the service default of 15 s (`10s`, `2500ms`, …). */
  timeout: duration.optional(),
}).strict();

export type MoosendSettings = z.infer<typeof moosendSettings>;

/**
 * Whether subscribers of `list` are flagged as having opted in elsewhere. `lists` is the common
 * `lists` key (stage -> list id), so a per-list setting may name the stage instead of the id.
 * When two entries name the same list differently, confirming wins (the cautious choice).
 */
export function externalOptIn(settings: Pick<MoosendSettings, 'doubleOptIn'>, list: string, lists: Readonly<Record<string, string>> = {}): boolean {
  const d = settings.doubleOptIn;
  if (typeof d === 'boolean') return !d;
  const answers = Object.entries(d).filter(([key]) => key === list || lists[key] === list).map(([, confirm]) => confirm);
  if (answers.length === 0) return true;
  return !answers.some((confirm) => confirm);
}

/** Config that loads but is probably wrong (doctor prints these). */
export function settingsWarnings(s: MoosendSettings): string[] {
  const out: string[] = [];
  if (!/\/v3\/?$/.test(new URL(s.baseUrl).pathname)) {
    out.push(`baseUrl ${s.baseUrl} does not end in /v3: Moosend's API root is ${MOOSEND_URL} and the client appends /subscribers/... to it`);
  }
  if (s.unsubscribeSweep === 0) {
    out.push('unsubscribeSweep is 0: unsubscribes reach Kommo only through an automation\'s webhook step, and one that is missed is never read back');
  } else if (s.unsubscribeSweep < 60_000) {
    out.push(`unsubscribeSweep is ${s.unsubscribeSweep} ms: each run reads every unsubscribed member of every mapped list; a minute or more is plenty`);
  }
  return out;
}
