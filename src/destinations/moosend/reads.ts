/**
 * Paged reads: the account's mailing lists (doctor's check, erasure) and a list's members by
 * status (the unsubscribe sweep). Both answer `Context: {Paging, <items>}` (MS-APIB).
 */
import { z } from 'zod';
import type { ItemResult } from '../types.js';
import { moosendRequest, paths, type MoosendContext } from './client.js';
import { classifyAnswer, readEnvelope } from './envelope.js';

/** 100 lists a page: accounts rarely have more, so one request usually reads them all. */
export const LISTS_PAGE_SIZE = 100;
const MAX_LIST_PAGES = 50;

/** A failed read carries Moosend's `Code` when there was one (LIST_NOT_FOUND is skipped, not fatal). */
export type Read<T> = { ok: true; value: T } | { ok: false; result: ItemResult; code?: number };

const paging = z.looseObject({
  CurrentPage: z.coerce.number().optional().catch(undefined),
  TotalPageCount: z.coerce.number().optional().catch(undefined),
}).optional().catch(undefined);

const listsContext = z.looseObject({
  Paging: paging,
  MailingLists: z.array(z.looseObject({ ID: z.union([z.string(), z.number()]).transform(String), Name: z.string().nullish().catch(null) })),
});

const membersContext = z.looseObject({
  Paging: paging,
  Subscribers: z.array(z.unknown()),
});

export interface ListInfo {
  id: string;
  name: string;
}

/** Every active mailing list of the account. */
export async function readAllLists(ctx: MoosendContext): Promise<Read<ListInfo[]>> {
  const lists: ListInfo[] = [];
  for (let page = 1; page <= MAX_LIST_PAGES; page++) {
    const res = await moosendRequest(ctx, 'GET', paths.listsPage(page, LISTS_PAGE_SIZE));
    const verdict = classifyAnswer(res);
    if (!('ok' in verdict)) return { ok: false, result: verdict };
    const parsed = listsContext.safeParse(readEnvelope(res.body)?.context);
    if (!parsed.success) return { ok: false, result: { retry: { reason: 'Moosend answered the lists page without Context.MailingLists' } } };
    lists.push(...parsed.data.MailingLists.map((l) => ({ id: l.ID, name: l.Name ?? '' })));
    if (isLastPage(page, parsed.data.Paging, parsed.data.MailingLists.length, LISTS_PAGE_SIZE)) return { ok: true, value: lists };
  }
  ctx.log.warn({ lists: lists.length }, `Moosend account has more than ${MAX_LIST_PAGES * LISTS_PAGE_SIZE} lists; read the first ones only`);
  return { ok: true, value: lists };
}

/** One page of a list's members with this status; `last` when no page follows. */
export async function readMembersPage(
  ctx: MoosendContext,
  list: string,
  status: 'Unsubscribed' | 'Bounced',
  page: number,
  pageSize: number,
): Promise<Read<{ members: unknown[]; last: boolean }>> {
  const res = await moosendRequest(ctx, 'GET', paths.members(list, status), { query: { Page: page, PageSize: pageSize } });
  const verdict = classifyAnswer(res);
  if (!('ok' in verdict)) {
    const code = readEnvelope(res.body)?.code;
    return code === undefined ? { ok: false, result: verdict } : { ok: false, result: verdict, code };
  }
  const parsed = membersContext.safeParse(readEnvelope(res.body)?.context);
  if (!parsed.success) return { ok: false, result: { retry: { reason: `Moosend answered list ${list}'s ${status} members without Context.Subscribers` } } };
  return { ok: true, value: { members: parsed.data.Subscribers, last: isLastPage(page, parsed.data.Paging, parsed.data.Subscribers.length, pageSize) } };
}

/** TotalPageCount when Moosend sends it; else a short page ends the listing. */
function isLastPage(page: number, p: z.infer<typeof paging>, count: number, pageSize: number): boolean {
  if (p?.TotalPageCount !== undefined && Number.isFinite(p.TotalPageCount)) return page >= p.TotalPageCount || count === 0;
  return count < pageSize;
}
