/**
 * The enriched lead: what mapping expressions, templates and rules see. Built by the router from a
 * CrmEvent plus the batched Kommo read (lead, main contact, company, stage, users, custom fields,
 * loss reason, account). docs/mapping.md documents every path.
 */
import { z } from 'zod';
import { crmEventKind } from './events.js';

const scalar = z.union([z.string(), z.number(), z.boolean()]);
/** Custom field values by field name (and by code when the field has one). Multi-value fields are arrays. */
export const fieldValuesSchema = z.record(z.string(), z.union([scalar, z.null(), z.array(scalar)]));
export type FieldValues = z.infer<typeof fieldValuesSchema>;

export const stageInfoSchema = z.object({
  id: z.number(),
  name: z.string(),
  /** The key configured in `stages:`, or a slug of the name (`proposal_sent`). */
  key: z.string(),
  pipelineId: z.number(),
  pipeline: z.string(),
  /** won = 142, lost = 143, incoming = the pipeline's "Incoming leads" stage. */
  type: z.enum(['incoming', 'open', 'won', 'lost']),
});
export type StageInfo = z.infer<typeof stageInfoSchema>;

const ms = z.number();

export const enrichedLeadSchema = z.object({
  account: z.object({
    name: z.string(),
    subdomain: z.string(),
    /** The Kommo account's currency code (`USD`), null when the account could not be read. */
    currency: z.string().nullable(),
  }),
  event: z.object({
    kind: crmEventKind,
    /** Unix ms when Kommo says the change happened (updated_at), else when we received it. */
    at: ms,
  }),
  lead: z.object({
    id: z.number(),
    name: z.string(),
    price: z.number(),
    pipelineId: z.number(),
    statusId: z.number(),
    responsibleUserId: z.number(),
    createdAt: ms,
    updatedAt: ms,
    closedAt: ms.nullable(),
    /** closedAt when the lead sits in the won (142) stage, else null. */
    wonAt: ms.nullable(),
    /** closedAt when the lead sits in the lost (143) stage, else null. */
    lostAt: ms.nullable(),
    /** The loss reason's name (Kommo `with=loss_reason`), null when none is set. */
    lossReason: z.string().nullable(),
    tags: z.array(z.string()),
    fields: fieldValuesSchema,
    deleted: z.boolean(),
  }),
  contact: z.object({
    id: z.number(),
    name: z.string(),
    firstName: z.string(),
    lastName: z.string(),
    /** Lower-cased, trimmed; '' when the contact has none. */
    email: z.string(),
    phone: z.string(),
    tags: z.array(z.string()),
    fields: fieldValuesSchema,
  }).nullable(),
  company: z.object({ id: z.number(), name: z.string(), fields: fieldValuesSchema }).nullable(),
  pipeline: z.object({ id: z.number(), name: z.string() }),
  stage: stageInfoSchema,
  /** The stage before this change (stage events only). */
  previousStage: stageInfoSchema.nullable(),
  /** The lead's responsible user; name and email are null when the token may not read users. */
  responsible: z.object({ id: z.number(), name: z.string().nullable(), email: z.string().nullable() }),
});
export type EnrichedLead = z.infer<typeof enrichedLeadSchema>;
