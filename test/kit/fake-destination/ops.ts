/** SyncOps -> the fake vendor's batch items, and its per-item answers -> ItemResults. Pure. */
import { classifyResult, type AnyVendorAnswer } from '../../../src/destinations/http.js';
import type { IdentifyBy, ItemResult, SyncOp } from '../../../src/destinations/types.js';

export interface FakeItem {
  op: SyncOp['kind'];
  person: string;
  target?: string;
  data?: Record<string, unknown>;
}

export function toItem(op: SyncOp, identifyBy: IdentifyBy): FakeItem {
  const person = identifyBy === 'id' ? op.person.id ?? '' : op.person.email;
  switch (op.kind) {
    case 'upsertPerson':
      return { op: op.kind, person, data: op.attributes };
    case 'trackEvent':
      return { op: op.kind, person, target: op.name, data: { ...op.properties, id: op.messageId } };
    case 'triggerWorkflow':
      return { op: op.kind, person, target: op.workflowId, data: op.data };
    case 'addToList':
      return { op: op.kind, person, target: op.listId, data: op.attributes };
    case 'removeFromList':
      return { op: op.kind, person, target: op.listId };
    case 'groupAccount':
      return { op: op.kind, person, target: op.groupId, data: op.traits };
    case 'suppress':
    case 'erasePerson':
      return { op: op.kind, person };
  }
}

/** One result per item: the vendor's per-item list on 200, the HTTP classification otherwise. */
export function results(count: number, res: AnyVendorAnswer): ItemResult[] {
  if (res.status !== 200 || res.error !== undefined) {
    const r = classifyResult(res);
    return Array.from({ length: count }, () => r);
  }
  const body = res.body as { results?: Array<{ ok: boolean; message?: string }> } | undefined;
  return Array.from({ length: count }, (_, i): ItemResult => {
    const r = body?.results?.[i];
    if (!r) return { retry: { reason: 'no result for this item' }, httpStatus: 200 };
    return r.ok ? { ok: true, httpStatus: 200 } : { fail: { reason: r.message ?? 'refused', code: 'invalid' }, httpStatus: 200 };
  });
}
