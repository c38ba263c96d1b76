/**
 * The normalized events that flow from intake through the inbox to the router. Intake turns every
 * vendor webhook into these; nothing past intake sees a vendor's raw shape except through
 * `CrmEvent.entity` (the Kommo v2-shaped entity, kept for custom fields).
 *
 * They are stored as inbox payloads, so each is a zod schema: a stored row is read back through it.
 */
import { z } from 'zod';

export const CRM_EVENT_KINDS = [
  'lead.created',
  'lead.updated',
  'lead.stage_changed',
  'lead.won',
  'lead.lost',
  'lead.responsible_changed',
  'lead.deleted',
  'contact.updated',
  /**
   * An existing lead synced by `kommo-sync backfill`: the person and the list of the lead's current
   * stage, like a stage entry, but no marketing event or workflow unless configured for this kind,
   * and never a Kommo note (crmNotes). Not a change in Kommo: no webhook has this kind.
   */
  'lead.backfill',
] as const;
export const crmEventKind = z.enum(CRM_EVENT_KINDS);
export type CrmEventKind = z.infer<typeof crmEventKind>;

const id = z.number().int();

/** A change in Kommo, as one webhook entity told it. Ids are numbers (Kommo sends strings). */
export const crmEventSchema = z.object({
  type: z.literal('crm'),
  kind: crmEventKind,
  /** Kommo entity id: the lead for lead.*, the contact (or company) for contact.updated. */
  entityId: id,
  entityType: z.enum(['lead', 'contact', 'company']),
  pipelineId: id.optional(),
  statusId: id.optional(),
  oldPipelineId: id.optional(),
  oldStatusId: id.optional(),
  responsibleUserId: id.optional(),
  oldResponsibleUserId: id.optional(),
  price: z.number().optional(),
  /** Kommo's `updated_at` / `last_modified` (unix seconds): dedup and echo suppression use it. */
  updatedAt: z.number().optional(),
  /** Kommo account id and subdomain from the webhook's `account[...]` block. */
  kommoAccountId: id.optional(),
  subdomain: z.string().optional(),
  /** The webhook entity as parsed (v2 field names, string values), for fields the API read lacks. */
  entity: z.record(z.string(), z.unknown()),
});
export type CrmEvent = z.infer<typeof crmEventSchema>;

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
  /** A click or bounce on another channel (in-app, push, SMS): `detail` names the channel. */
  'message.clicked',
  'message.bounced',
  /** A tool tagged the person (`detail` is the tag): intent signals (`signals.tags`). */
  'tag.added',
  'tag.removed',
  /**
   * An event the vendor sends that kommo-sync has no rule for (`detail` is the vendor's name for it):
   * stored and counted, so nothing a vendor reports is silently dropped, and otherwise ignored.
   */
  'vendor.other',
] as const;
export const engagementKind = z.enum(ENGAGEMENT_KINDS);
export type EngagementKind = z.infer<typeof engagementKind>;

/** Something a marketing tool saw a person do (or a journey reach), matched to a lead by email. */
export const engagementEventSchema = z.object({
  type: z.literal('engagement'),
  kind: engagementKind,
  /** Lower-cased, trimmed (model/email.ts). */
  email: z.string(),
  /** Unix milliseconds when the vendor says it happened. */
  occurredAt: z.number(),
  /** The vendor's own event id (dedup). */
  vendorEventId: z.string(),
  /** The destination name the webhook arrived on (`cio`, `iterable`, ...). */
  source: z.string(),
  subject: z.string().optional(),
  link: z.string().optional(),
  campaign: z.string().optional(),
  /** Bounce reason, milestone name, channel, ... */
  detail: z.string().optional(),
  /**
   * The vendor says no person caused it: a machine open (Apple Mail privacy protection, a proxy or a
   * scanner prefetching images) or a link-checker click. Noted, never counted toward a hot lead.
   */
  machine: z.boolean().optional(),
});
export type EngagementEvent = z.infer<typeof engagementEventSchema>;

export const inboundEventSchema = z.discriminatedUnion('type', [crmEventSchema, engagementEventSchema]);
export type InboundEvent = z.infer<typeof inboundEventSchema>;

/** What intake stores: the event plus the key that makes a re-sent webhook a no-op. */
export interface NormalizedInbound {
  dedupKey: string;
  event: InboundEvent;
}
