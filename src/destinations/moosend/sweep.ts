/**
 * The unsubscribe sweep: reads each mapped list's unsubscribed members and reports those who
 * unsubscribed since the cursor as `email.unsubscribed`, with the same dedup key as the webhook
 * (inbound.ts `unsubscribeKey`), so a person is handled once whichever path sees them first.
 *
 * Moosend's member listing has no "since" filter and is sorted by subscription date (MS-APIB
 * example: `SortExpression: CreatedOn`), not by unsubscribe date, so each run pages through every
 * unsubscribed member and filters by `UnsubscribedOn`. The cursor is a time: each run re-reads
 * the previous run's window as well (the dedup keys drop the repeats), so a member shifted across
 * pages while we read, or a clock a few minutes off, is caught on the next run.
 */
import { z } from 'zod';
import { isEmail, normalizeEmail } from '../../model/index.js';
import type { InboundParsed } from '../types.js';
import type { MoosendContext } from './client.js';
import { LIST_NOT_FOUND, parseMoosendDate, reasonOf } from './envelope.js';
import { unsubscribeKey } from './inbound.js';
import { readAllLists, readMembersPage } from './reads.js';

/** The page size Moosend's own example answers with; larger pages are UNCONFIRMED. */
export const SWEEP_PAGE_SIZE = 500;
/** 100,000 unsubscribed members a list; past that the automation webhook is the reliable path. */
export const MAX_SWEEP_PAGES = 200;
/** The first run reports unsubscribes of the last day, not the account's whole history. */
export const FIRST_LOOKBACK_MS = 24 * 3_600_000;
/** Clock difference between Moosend and us that the window absorbs. */
export const SKEW_MS = 5 * 60_000;

const member = z.looseObject({
  Email: z.string(),
  UnsubscribedOn: z.unknown(),
  UpdatedOn: z.unknown(),
});

export interface SweepResult {
  events: InboundParsed[];
  cursor: string;
}

export async function sweepUnsubscribes(ctx: MoosendContext, cursor: string | null, now: number = Date.now()): Promise<SweepResult> {
  const since = readCursor(cursor) ?? now - FIRST_LOOKBACK_MS;
  const lists = await listsToSweep(ctx);
  // Earliest unsubscribe per person: one event, whichever lists they left.
  const found = new Map<string, { at: number; list: string }>();
  let undated = 0;
  for (const list of lists) {
    for (let page = 1; ; page++) {
      if (page > MAX_SWEEP_PAGES) {
        ctx.log.warn({ list, pages: MAX_SWEEP_PAGES }, 'Moosend list has more unsubscribed members than one sweep reads; the automation webhook is the reliable path for it');
        break;
      }
      const read = await readMembersPage(ctx, list, 'Unsubscribed', page, SWEEP_PAGE_SIZE);
      if (!read.ok) {
        if (read.code === LIST_NOT_FOUND) {
          // A deleted or mistyped list must not stop the others; doctor names it.
          ctx.log.warn({ list }, 'Moosend has no such mailing list; it is skipped by the unsubscribe sweep (run doctor)');
          break;
        }
        // The sweeper logs it and keeps the cursor: the next run reads this window again.
        throw new Error(`Moosend unsubscribe sweep of list ${list} failed: ${reasonOf(read.result)}`);
      }
      for (const raw of read.value.members) {
        const m = member.safeParse(raw);
        if (!m.success || !isEmail(m.data.Email)) continue;
        const at = parseMoosendDate(m.data.UnsubscribedOn) ?? parseMoosendDate(m.data.UpdatedOn);
        if (at === undefined) {
          undated++;
          continue;
        }
        if (at < since) continue;
        const email = normalizeEmail(m.data.Email);
        const seen = found.get(email);
        if (!seen || at < seen.at) found.set(email, { at, list });
      }
      if (read.value.last) break;
    }
  }
  if (undated) ctx.log.warn({ undated }, 'unsubscribed Moosend members without UnsubscribedOn or UpdatedOn were skipped');
  const events = [...found].map(([email, { at, list }]): InboundParsed => ({
    dedupKey: unsubscribeKey(ctx.name, email),
    event: {
      type: 'engagement',
      kind: 'email.unsubscribed',
      email,
      occurredAt: at,
      vendorEventId: `unsubscribed:${list}:${email}:${at}`,
      source: ctx.name,
      detail: `list ${list} (found by the unsubscribe sweep)`,
    },
  }));
  // The next window starts one interval (plus skew) before this run: it covers this run again.
  const interval = ctx.settings.unsubscribeSweep > 0 ? ctx.settings.unsubscribeSweep : 0;
  const next = Math.max(since, now - interval - SKEW_MS);
  return { events, cursor: new Date(next).toISOString() };
}

/**
 * The mapped lists (`lists`) and the automation trigger lists. Without the common `lists` in the
 * context (an older core), every list of the account.
 */
export async function listsToSweep(ctx: MoosendContext): Promise<string[]> {
  const automation = Object.values(ctx.settings.automations ?? {});
  if (ctx.lists) return [...new Set([...Object.values(ctx.lists), ...automation])];
  const all = await readAllLists(ctx);
  if (!all.ok) throw new Error(`could not read the Moosend lists to sweep: ${reasonOf(all.result)}`);
  return all.value.map((l) => l.id);
}

function readCursor(cursor: string | null): number | undefined {
  if (!cursor) return undefined;
  const at = Date.parse(cursor);
  return Number.isNaN(at) ? undefined : at;
}
