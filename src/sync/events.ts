/**
 * The normalized events that flow from intake through the inbox to the router.
 * Intake turns every vendor webhook into these; nothing past intake sees a vendor's raw shape
 * except through `CrmEvent.entity` (the Kommo v2-shaped entity, kept for custom fields).
 */

export const CRM_EVENT_KINDS = [
  'lead.created',
  'lead.updated',
  'lead.stage_changed',
  'lead.won',
  'lead.lost',
  'lead.responsible_changed',
  'lead.deleted',
  'contact.updated',
] as const;
export type CrmEventKind = (typeof CRM_EVENT_KINDS)[number];

/** A change in Kommo, as one webhook entity told it. Ids are numbers (Kommo sends strings). */
export interface CrmEvent {
  type: 'crm';
  kind: CrmEventKind;
  /** Kommo entity id: the lead for lead.*, the contact (or company) for contact.updated. */
  entityId: number;
  entityType: 'lead' | 'contact' | 'company';
  pipelineId?: number;
  statusId?: number;
  oldPipelineId?: number;
  oldStatusId?: number;
  responsibleUserId?: number;
  oldResponsibleUserId?: number;
  price?: number;
  /** Kommo's `updated_at` / `last_modified` (unix seconds): dedup and echo suppression use it. */
  updatedAt?: number;
  /** Kommo account id and subdomain from the webhook's `account[...]` block. */
  kommoAccountId?: number;
  subdomain?: string;
  /** The webhook entity as parsed (v2 field names, string values), for fields the API read lacks. */
  entity: Record<string, unknown>;
}

export const ENGAGEMENT_KINDS = [
  'email.sent',
  'email.delivered',
  'email.opened',
  'email.clicked',
  'email.converted',
  'email.unsubscribed',
  'email.subscribed',
  'email.bounced',
  'email.dropped',
  'email.spammed',
  'email.failed',
  'journey.milestone',
] as const;
export type EngagementKind = (typeof ENGAGEMENT_KINDS)[number];

/** Something a marketing tool saw a person do (or a journey reach), matched to a lead by email. */
export interface EngagementEvent {
  type: 'engagement';
  kind: EngagementKind;
  /** Lower-cased, trimmed. */
  email: string;
  /** Unix milliseconds when the vendor says it happened. */
  occurredAt: number;
  /** The vendor's own event id (dedup). */
  vendorEventId: string;
  /** The destination name the webhook arrived on (`cio`, `iterable`, ...). */
  source: string;
  subject?: string;
  link?: string;
  campaign?: string;
  /** Bounce reason, milestone name, ... */
  detail?: string;
}

export type InboundEvent = CrmEvent | EngagementEvent;

/** What intake stores: the event plus the key that makes a re-sent webhook a no-op. */
export interface NormalizedInbound {
  dedupKey: string;
  event: InboundEvent;
}
