/**
 * Kommo as a destination: queued KommoOps -> batched v4 writes -> one ItemResult per op, in order.
 * Like every destination it never sleeps or retries by itself beyond what the client does for one
 * request; the worker owns backoff, dead letters and replay.
 */
import type { ItemResult } from '../destinations/types.js';
import type { KommoClient, WriteResult } from './client.js';
import type { KommoApiError } from './transport.js';
import type { EchoEntity, EchoMarks } from './echo.js';
import type { KommoOp } from '../model/index.js';

export type { EchoMarks } from './echo.js';

/** A 403 block usually lifts after a while; try again much later rather than dead-lettering. */
const BLOCKED_RETRY_MS = 15 * 60_000;

type Indexed<K extends KommoOp['kind']> = { index: number; op: Extract<KommoOp, { kind: K }> };

export async function deliverKommoOps(client: KommoClient, ops: readonly KommoOp[], echo: EchoMarks): Promise<ItemResult[]> {
  const results: ItemResult[] = new Array<ItemResult>(ops.length);
  const notes: Indexed<'addNote'>[] = [];
  const tasks: Indexed<'addTask'>[] = [];
  const contacts: Indexed<'updateContact'>[] = [];
  const moves: Indexed<'moveLead'>[] = [];
  ops.forEach((op, index) => {
    switch (op.kind) {
      case 'addNote': notes.push({ index, op }); break;
      case 'addTask': tasks.push({ index, op }); break;
      case 'updateContact': contacts.push({ index, op }); break;
      case 'moveLead': moves.push({ index, op }); break;
    }
  });

  const settle = (group: Array<{ index: number }>, written: WriteResult[]): void => {
    group.forEach((g, i) => {
      results[g.index] = toItemResult(written[i]);
    });
  };

  // The kinds touch different endpoints and do not depend on each other; the limiter paces them.
  await Promise.all([
    notes.length > 0 && client.addNotes(notes.map(({ op }) => ({ entityId: op.leadId, text: op.text })))
      .then((w) => settle(notes, w)),
    tasks.length > 0 && client.addTasks(tasks.map(({ op }) => ({
      entityId: op.leadId,
      entityType: 'leads',
      text: op.text,
      completeTill: op.completeTill,
      taskTypeId: op.taskTypeId,
      ...(op.responsibleUserId !== undefined ? { responsibleUserId: op.responsibleUserId } : {}),
    }))).then((w) => settle(tasks, w)),
    patchInRounds(contacts, (g) => g.op.contactId, 'contact', (group) => client.patchContacts(group.map(({ op }) => ({
      id: op.contactId,
      ...(op.fields?.length
        ? {
            customFields: op.fields.map((f) => ({
              ...(f.fieldId !== undefined ? { fieldId: f.fieldId } : { fieldCode: f.fieldCode ?? '' }),
              values: [{ value: f.value }],
            })),
          }
        : {}),
      ...(op.tagsToAdd?.length ? { tagsToAdd: op.tagsToAdd } : {}),
    }))), settle, echo),
    patchInRounds(moves, (g) => g.op.leadId, 'lead', (group) => client.patchLeads(group.map(({ op }) => ({
      id: op.leadId,
      pipelineId: op.pipelineId,
      statusId: op.statusId,
    }))), settle, echo),
  ]);
  return results;
}

/**
 * PATCHes in rounds where each entity appears once: two updates of one contact in one array would
 * leave their order to Kommo. Each successful PATCH is remembered as an echo before we report ok,
 * so the webhook it triggers is recognized however fast it arrives.
 */
async function patchInRounds<G extends { index: number }>(
  group: G[],
  idOf: (g: G) => number,
  entity: EchoEntity,
  send: (round: G[]) => Promise<WriteResult[]>,
  settle: (round: G[], written: WriteResult[]) => void,
  echo: EchoMarks,
): Promise<void> {
  let rest = group;
  while (rest.length > 0) {
    const seen = new Set<number>();
    const round: G[] = [];
    const later: G[] = [];
    for (const g of rest) {
      const id = idOf(g);
      if (seen.has(id)) later.push(g);
      else {
        seen.add(id);
        round.push(g);
      }
    }
    const written = await send(round);
    await Promise.all(round.map(async (g, i) => {
      const w = written[i];
      if (!w?.ok || w.updatedAt === null) return;
      // The write is done: failing the op now would only repeat it (and the notes beside it).
      // A lost mark costs at most one echoed webhook being synced out again.
      await echo.remember(entity, idOf(g), w.updatedAt).catch(() => undefined);
    }));
    settle(round, written);
    rest = later;
  }
}

/** The one place a Kommo answer becomes retry / fail / ok for the worker. */
export function toItemResult(w: WriteResult | undefined): ItemResult {
  if (!w) return { retry: { reason: 'no result from Kommo for this item' } };
  if (w.ok) return { ok: true, httpStatus: w.status };
  return classifyError(w.error);
}

export function classifyError(e: KommoApiError): ItemResult {
  const httpStatus = e.status || undefined;
  const base = httpStatus !== undefined ? { httpStatus } : {};
  const reason = `Kommo ${e.status || 'no response'}: ${e.detail}`;
  if (e.status === 0 || e.status === 429 || e.status >= 500) {
    return { retry: { reason, ...(e.retryAfterMs !== undefined ? { afterMs: e.retryAfterMs } : {}) }, ...base };
  }
  if (e.status === 403) {
    return { retry: { reason, afterMs: Math.max(e.retryAfterMs ?? 0, BLOCKED_RETRY_MS) }, ...base };
  }
  if (e.status === 401 || e.status === 402) return { fail: { reason, code: 'auth' }, ...base };
  if (e.status === 404 || onlyNotFound(e)) return { fail: { reason, code: 'not_found' }, ...base };
  if (e.status === 400 || e.status === 422) return { fail: { reason, code: 'invalid' }, ...base };
  return { fail: { reason, code: 'rejected' }, ...base };
}

/** A batch item rejected only because its entity is gone (Kommo reports it as a validation error). */
function onlyNotFound(e: KommoApiError): boolean {
  const errors = e.validationErrors?.flatMap((v) => v.errors) ?? [];
  return e.status === 400 && errors.length > 0 && errors.every((x) => x.code === 'NotFound');
}
