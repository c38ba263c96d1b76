/**
 * Iterable's naming conventions, layered between the core defaults and the user's config
 * (src/sync/outbound.ts): camelCase user fields and event properties as Iterable projects usually
 * name them, the deal fields of a won or lost deal, and the event names the issue documents.
 * `null` removes a core default that an Iterable name replaces.
 */
import type { MappingDefaults } from '../types.js';
import type { IterableSettings } from './settings.js';

/** Iterable's own date format (as its webhooks write `createdAt`), which it detects as a date. */
const DATE = '"[Y0001]-[M01]-[D01] [H01]:[m01]:[s01] +00:00"';
const at = (path: string) => `${path} ? $fromMillis(${path}, ${DATE})`;

export function iterableDefaults(settings: Pick<IterableSettings, 'planField'>): MappingDefaults {
  const { planField } = settings;
  // A field name is checked against Kommo when the config loads, so `plan` exists only when named.
  const plan: Record<string, string> = planField ? { plan: `lead.fields[${JSON.stringify(planField)}]` } : {};
  return {
    attributes: {
      // Kommo often has only the full name; an empty value would blank the name in Iterable.
      firstName: 'contact.firstName ? contact.firstName : (contact.name ? $substringBefore(contact.name, " "))',
      lastName: 'contact.lastName ? contact.lastName : ($contains(contact.name, " ") ? $substringAfter(contact.name, " "))',
      first_name: null,
      last_name: null,
      company: 'company.name',
      crmDealId: 'lead.id',
      kommo_lead_id: null,
      dealValue: 'lead.price',
      deal_value: null,
      wonAt: at('lead.wonAt'),
      // true only on a won deal and false only on a lost one: other events leave the field alone.
      isCustomer: 'event.kind = "lead.won" ? true : (event.kind = "lead.lost" ? false)',
      ...plan,
    },
    events: {
      'lead.created': 'crm_lead_created',
      'lead.stage_changed': 'crm_stage_changed',
      'lead.won': 'deal_won',
      'lead.lost': 'deal_lost',
    },
    properties: {
      '*': {
        dealId: 'lead.id',
        lead_id: null,
        stageId: 'stage.id',
        stage_id: null,
        stageName: 'stage.name',
        stage_name: null,
        dealValue: 'lead.price',
        deal_value: null,
        previousStage: 'previousStage.key',
        previous_stage: null,
        previousStageId: 'previousStage.id',
        previous_stage_id: null,
        previousStageName: 'previousStage.name',
        previous_stage_name: null,
      },
      'lead.won': { wonAt: at('lead.wonAt'), won_at: null, ...plan },
      'lead.lost': { lossReason: 'lead.lossReason', loss_reason: null, lostAt: at('lead.lostAt'), lost_at: null },
      'lead.responsible_changed': { ownerEmail: 'responsible.email', owner_email: null },
    },
  };
}
