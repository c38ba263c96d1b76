/**
 * Segment's spec conventions as mapping defaults (layered between the core's defaults and the
 * user's config, which overrides any of them; `null` in the config drops one). RudderStack follows
 * the same spec. Expressions are over the enriched lead (docs/mapping.md); a value that evaluates to
 * nothing is left out, so `customer` is only sent when a deal is won or lost.
 */
import type { MappingDefaults } from '../types.js';

export const TRACKING_DEFAULTS = {
  /** identify traits: Segment's reserved traits are camelCase; `company` is an object. */
  attributes: {
    // Replaced by the spec names below.
    first_name: null,
    last_name: null,
    kommo_lead_id: null,
    email: 'contact.email ? contact.email',
    firstName: 'contact.firstName ? contact.firstName',
    lastName: 'contact.lastName ? contact.lastName',
    name: 'contact.name ? contact.name',
    phone: 'contact.phone ? contact.phone',
    // Dotted names are sent nested: {company: {name, id}}. The id matches the group call's groupId.
    'company.name': 'company.name',
    'company.id': 'company ? "kommo-company-" & company.id',
    kommo_deal_id: 'lead.id',
    customer: 'event.kind = "lead.won" ? true : (event.kind = "lead.lost" ? false)',
    mrr: 'lead.wonAt ? lead.price',
  },
  events: {
    'lead.created': 'Lead Created',
    'lead.stage_changed': 'Stage Changed',
    'lead.won': 'Deal Won',
    'lead.lost': 'Deal Lost',
    'lead.responsible_changed': 'Owner Changed',
  },
  /** track properties: snake_case, as in Segment's spec events (`order_id`, `revenue`). */
  properties: {
    '*': {
      lead_id: null,
      deal_value: null,
      previous_stage: null,
      previous_stage_id: null,
      previous_stage_name: null,
      deal_id: 'lead.id',
      deal_name: 'lead.name',
      from_stage: 'previousStage.name',
      to_stage: 'stage.name',
      amount: 'lead.price',
    },
    'lead.won': { owner_email: 'responsible.email ? responsible.email' },
    'lead.lost': { owner_email: 'responsible.email ? responsible.email' },
    'lead.responsible_changed': { owner_id: 'responsible.id' },
  },
  /** group traits (the core adds `name`). */
  traits: {
    kommo_company_id: 'company.id',
  },
} as const satisfies MappingDefaults;
