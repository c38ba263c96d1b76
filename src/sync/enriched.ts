/**
 * The enriched lead: what mapping expressions, templates and rules see. Built by the router from a
 * CrmEvent plus the batched Kommo read (lead, main contact, company, stage, users, custom fields).
 * docs/mapping.md documents every path.
 */
import type { CrmEventKind } from './events.js';

/** Custom field values by field name (and by code when the field has one). Multi-value fields are arrays. */
export type FieldValues = Record<string, string | number | boolean | null | Array<string | number | boolean>>;

export interface StageInfo {
  id: number;
  name: string;
  /** The key configured in `stages:`, or a slug of the name (`proposal_sent`). */
  key: string;
  pipelineId: number;
  pipeline: string;
  /** won = 142, lost = 143, incoming = the pipeline's "Incoming leads" stage. */
  type: 'incoming' | 'open' | 'won' | 'lost';
}

export interface EnrichedLead {
  account: { name: string; subdomain: string };
  event: {
    kind: CrmEventKind;
    /** Unix ms when Kommo says the change happened (updated_at), else when we received it. */
    at: number;
  };
  lead: {
    id: number;
    name: string;
    price: number;
    pipelineId: number;
    statusId: number;
    responsibleUserId: number;
    createdAt: number;
    updatedAt: number;
    closedAt: number | null;
    tags: string[];
    fields: FieldValues;
    deleted: boolean;
  };
  contact: {
    id: number;
    name: string;
    firstName: string;
    lastName: string;
    /** Lower-cased, trimmed; '' when the contact has none. */
    email: string;
    phone: string;
    tags: string[];
    fields: FieldValues;
  } | null;
  company: { id: number; name: string } | null;
  stage: StageInfo;
  /** The stage before this change (stage events only). */
  previousStage: StageInfo | null;
  responsible: { id: number; name: string | null; email: string | null };
}
