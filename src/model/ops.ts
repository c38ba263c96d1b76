/**
 * The operations kommo-sync queues and the results a destination answers with. Built once by sync/,
 * stored in job rows (queue/jobs.ts reads them back through these schemas), translated by each
 * destination (SyncOp) or by the Kommo writer (KommoOp).
 */
import { z } from 'zod';

/** Attribute values we send: what every vendor accepts. */
export const attrValue = z.union([z.string(), z.number(), z.boolean(), z.null()]);
export type AttrValue = z.infer<typeof attrValue>;
export const attributesSchema = z.record(z.string(), attrValue);
export type Attributes = z.infer<typeof attributesSchema>;

/** Who an operation is about. `email` is always set for people ('' when unknown); `id` is the Kommo contact key. */
export const personRefSchema = z.object({
  email: z.string(),
  /** Stable id (`kommo-contact-<id>`), used when a destination identifies by id. */
  id: z.string().optional(),
});
export type PersonRef = z.infer<typeof personRefSchema>;

const person = personRefSchema;
const attributes = attributesSchema;
/** Unix milliseconds; connectors convert to what their vendor wants. */
const timestamp = z.number();
/** Deterministic per (inbox event, destination, op): a retry or replay sends the same id. */
const messageId = z.string();

/** The vendor-neutral vocabulary every marketing destination translates (ARCHITECTURE §3). */
export const syncOpSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('upsertPerson'), person, attributes, timestamp }),
  z.object({ kind: z.literal('trackEvent'), person, name: z.string(), properties: attributes, timestamp, messageId }),
  z.object({ kind: z.literal('triggerWorkflow'), person, workflowId: z.string(), data: attributes, messageId }),
  z.object({ kind: z.literal('addToList'), person, listId: z.string(), attributes }),
  z.object({ kind: z.literal('removeFromList'), person, listId: z.string() }),
  z.object({ kind: z.literal('groupAccount'), person, groupId: z.string(), traits: attributes, timestamp, messageId }),
  /** Stop marketing email to the person (they opted out somewhere). */
  z.object({ kind: z.literal('suppress'), person }),
  /** GDPR erasure: delete the person. */
  z.object({ kind: z.literal('erasePerson'), person }),
]);
export type SyncOp = z.infer<typeof syncOpSchema>;
export type SyncOpKind = SyncOp['kind'];
export const SYNC_OP_KINDS = ['upsertPerson', 'trackEvent', 'triggerWorkflow', 'addToList', 'removeFromList', 'groupAccount', 'suppress', 'erasePerson'] as const satisfies readonly SyncOpKind[];

/**
 * A few words for one operation, for people (the note in Kommo that says what was sent where):
 * `identify`, `event deal_won`, `workflow 12345`, `list 111`...
 */
export function describeSyncOp(op: SyncOp): string {
  switch (op.kind) {
    case 'upsertPerson': return 'identify';
    case 'trackEvent': return `event ${op.name}`;
    case 'triggerWorkflow': return `workflow ${op.workflowId}`;
    case 'addToList': return `list ${op.listId}`;
    case 'removeFromList': return `off list ${op.listId}`;
    case 'groupAccount': return `group ${op.groupId}`;
    case 'suppress': return 'suppress';
    case 'erasePerson': return 'erase';
  }
}

const fieldWrite = z.object({
  fieldId: z.number().optional(),
  fieldCode: z.string().optional(),
  value: z.union([z.string(), z.number(), z.boolean()]),
});

/**
 * Writes into Kommo, queued as jobs for the `kommo` destination like any vendor operation, so they
 * share the worker's retries, dead letters, replay and the account's rate limit.
 */
export const kommoOpSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('addNote'), leadId: z.number(), text: z.string() }),
  z.object({
    kind: z.literal('addTask'),
    leadId: z.number(),
    text: z.string(),
    /** Unix seconds. */
    completeTill: z.number(),
    responsibleUserId: z.number().optional(),
    taskTypeId: z.number(),
  }),
  z.object({
    kind: z.literal('updateContact'),
    contactId: z.number(),
    /** Custom field writes by id (resolved from names when the rule was compiled) or code. */
    fields: z.array(fieldWrite).optional(),
    tagsToAdd: z.array(z.string()).optional(),
  }),
  z.object({ kind: z.literal('moveLead'), leadId: z.number(), pipelineId: z.number(), statusId: z.number() }),
]);
export type KommoOp = z.infer<typeof kommoOpSchema>;
export type KommoOpKind = KommoOp['kind'];

export const failCode = z.enum(['auth', 'invalid', 'not_found', 'rejected']);
export type FailCode = z.infer<typeof failCode>;

/** One per operation, same order: what happened to it, so only failed items are retried or failed. */
export const itemResultSchema = z.union([
  z.object({ ok: z.literal(true), httpStatus: z.number().optional() }),
  z.object({
    retry: z.object({
      reason: z.string(),
      afterMs: z.number().optional(),
      /**
       * The vendor is throttling us (an HTTP 429, or a rate-limit answer inside a 200): nothing more
       * goes to it until `afterMs` passed, not only this item. Implied by `httpStatus` 429.
       */
      throttled: z.boolean().optional(),
    }),
    httpStatus: z.number().optional(),
  }),
  z.object({ fail: z.object({ reason: z.string(), code: failCode }), httpStatus: z.number().optional() }),
]);
export type ItemResult = z.infer<typeof itemResultSchema>;
