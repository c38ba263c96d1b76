/**
 * Records the Kommo simulator keeps. Entity records use Kommo's v4 field names (snake_case) so tests
 * can compare them with what the API returns; the only additions are the link lists
 * (`contact_ids`, `lead_ids`, `company_id`) and `tags`, which v4 nests under `_embedded`.
 */

export type EntityType = 'leads' | 'contacts';
/** Entities with custom fields (companies have fields too, but no notes or tags here). */
export type FieldEntityType = EntityType | 'companies';

/** A reason a lead was lost (`GET /api/v4/leads/loss_reasons`, `with=loss_reason`). */
export interface SimLossReason {
  id: number;
  name: string;
  sort: number;
  created_at: number;
  updated_at: number;
}

export interface KommoSimulatorOAuthOptions {
  clientId: string;
  clientSecret: string;
  /** The refresh token the integration already holds (first link of the rotation chain). */
  refreshToken: string;
  /** An access token that is valid from the start (optional). */
  accessToken?: string;
  /** Lifetime of issued access tokens in seconds (Kommo: 86400). */
  expiresIn?: number;
  /** When set, token requests must send exactly this redirect_uri (any non-empty one otherwise). */
  redirectUri?: string;
}

export interface KommoSimulatorOptions {
  subdomain?: string;
  accountId?: number;
  /** Long-lived token accepted as `Authorization: Bearer <token>`. */
  accessToken?: string;
  oauth?: KommoSimulatorOAuthOptions;
  /** Requests admitted per 1000 ms sliding window, all tokens together (Kommo: 7). */
  rateLimitPerSecond?: number;
  /** 429s within 60 s after which every request gets 403 (Kommo blocks the IP). 0 disables. */
  blockAfterViolations?: number;
  /** false: the token user is not an admin, so GET /api/v4/users answers 403. */
  usersEndpointAdmin?: boolean;
  /** Delay added to every admitted request. */
  latencyMs?: number;
}

export interface SimUser {
  id: number;
  name: string;
  email: string;
  lang: string;
  is_admin: boolean;
}

export interface SimStatus {
  id: number;
  name: string;
  sort: number;
  is_editable: boolean;
  pipeline_id: number;
  color: string;
  /** 1 = "Incoming leads" (unsorted), 0 = any other stage, including 142/143. */
  type: 0 | 1;
  account_id: number;
}

export interface SimPipeline {
  id: number;
  name: string;
  sort: number;
  is_main: boolean;
  is_unsorted_on: boolean;
  is_archive: boolean;
  account_id: number;
  statuses: SimStatus[];
}

export const CUSTOM_FIELD_TYPES = [
  'text',
  'numeric',
  'checkbox',
  'select',
  'multiselect',
  'multitext',
  'date',
  'date_time',
  'birthday',
  'url',
  'textarea',
  'radiobutton',
  'streetaddress',
  'price',
  'monetary',
] as const;
export type CustomFieldType = (typeof CUSTOM_FIELD_TYPES)[number];

export interface SimEnum {
  id: number;
  value: string;
  sort: number;
}

export interface SimCustomField {
  id: number;
  name: string;
  code: string | null;
  sort: number;
  type: CustomFieldType;
  entity_type: FieldEntityType;
  is_predefined: boolean;
  is_deletable: boolean;
  is_visible: boolean;
  is_required: boolean;
  is_api_only: boolean;
  group_id: string | null;
  required_statuses: { status_id: number; pipeline_id: number }[];
  enums: SimEnum[] | null;
}

export type CustomFieldScalar = string | number | boolean;

export interface SimFieldValue {
  value: CustomFieldScalar;
  enum_id?: number;
  enum_code?: string | null;
}

/** v4 read shape of one custom field on an entity. */
export interface SimCustomFieldValue {
  field_id: number;
  field_name: string;
  field_code: string | null;
  field_type: CustomFieldType;
  values: SimFieldValue[];
}

export interface SimTag {
  id: number;
  name: string;
  color: string | null;
}

export interface SimLead {
  id: number;
  name: string;
  price: number;
  responsible_user_id: number;
  group_id: number;
  status_id: number;
  pipeline_id: number;
  loss_reason_id: number | null;
  created_by: number;
  updated_by: number;
  /** Unix seconds. */
  created_at: number;
  /** Unix seconds; strictly increases on every change of this lead. */
  updated_at: number;
  closed_at: number | null;
  closest_task_at: number | null;
  custom_fields_values: SimCustomFieldValue[] | null;
  score: number | null;
  account_id: number;
  labor_cost: number | null;
  is_deleted: boolean;
  tags: SimTag[];
  /** Linked contacts; the first one is the main contact. */
  contact_ids: number[];
  /** The linked company (a lead has at most one). */
  company_id: number | null;
}

/** What contacts and companies share in Kommo's v4 shape. */
export interface SimParty {
  id: number;
  name: string;
  responsible_user_id: number;
  group_id: number;
  created_by: number;
  updated_by: number;
  created_at: number;
  updated_at: number;
  closest_task_at: number | null;
  custom_fields_values: SimCustomFieldValue[] | null;
  account_id: number;
  is_deleted: boolean;
  tags: SimTag[];
  lead_ids: number[];
}

export interface SimContact extends SimParty {
  first_name: string;
  last_name: string;
  /** The linked company (a contact has at most one). */
  company_id: number | null;
}

export interface SimCompany extends SimParty {
  contact_ids: number[];
}

export interface SimNote {
  id: number;
  entity_id: number;
  entity_type: EntityType;
  created_by: number;
  updated_by: number;
  created_at: number;
  updated_at: number;
  responsible_user_id: number;
  group_id: number;
  note_type: string;
  params: Record<string, unknown>;
  account_id: number;
}

export interface SimTask {
  id: number;
  created_by: number;
  updated_by: number;
  created_at: number;
  updated_at: number;
  responsible_user_id: number;
  group_id: number;
  entity_id: number | null;
  entity_type: string | null;
  duration: number;
  is_completed: boolean;
  task_type_id: number;
  text: string;
  result: { text: string } | null;
  complete_till: number;
  account_id: number;
}

export const WEBHOOK_EVENTS = [
  'add_lead',
  'update_lead',
  'delete_lead',
  'restore_lead',
  'status_lead',
  'responsible_lead',
  'note_lead',
  'add_contact',
  'update_contact',
  'delete_contact',
  'restore_contact',
  'responsible_contact',
  'note_contact',
  'add_company',
  'update_company',
  'delete_company',
  'restore_company',
  'responsible_company',
  'note_company',
  'add_customer',
  'update_customer',
  'delete_customer',
  'responsible_customer',
  'note_customer',
  'add_task',
  'update_task',
  'delete_task',
  'responsible_task',
  'add_talk',
  'update_talk',
  'add_chat_template_review',
] as const;
export type WebhookEventName = (typeof WEBHOOK_EVENTS)[number];

export interface SimWebhook {
  id: number;
  destination: string;
  created_at: number;
  updated_at: number;
  account_id: number;
  created_by: number;
  sort: number;
  disabled: boolean;
  settings: string[];
}

export interface RequestLogEntry {
  /** Arrival time, epoch ms (fractional, monotonic). */
  at: number;
  method: string;
  /** Path as received, without the plugin prefix and without the query string. */
  path: string;
  /** Raw query string without the leading `?` ('' when none). */
  query: string;
  /** Response status; 0 until the response is sent. */
  status: number;
}

/**
 * One entry of the account's event log (GET /api/v4/events, kommo.md "Events"): Kommo records it
 * whatever the webhooks do, which is what makes it the way to find a webhook that never arrived.
 */
export interface SimEvent {
  /** Kommo's event ids are strings. */
  id: string;
  type: 'lead_added' | 'lead_status_changed' | 'lead_deleted';
  entity_id: number;
  entity_type: 'lead';
  /** The user who made the change (0: a robot or the system). */
  created_by: number;
  /** Unix seconds: for a lead change, the lead's `updated_at` after it. */
  created_at: number;
  value_after: unknown[];
  value_before: unknown[];
  account_id: number;
}

/** A webhook the simulator was told to drop: Kommo failed to deliver it and never retried. */
export interface WebhookDropRecord {
  url: string;
  event: WebhookEventName;
  body: string;
  at: number;
}

export interface WebhookSendRecord {
  url: string;
  event: WebhookEventName;
  /** HTTP status of the receiver, 0 when the POST failed or timed out (Kommo waits 2 s). */
  status: number;
  /** The form-encoded body that was POSTed. */
  body: string;
  at: number;
  error?: string;
}

export interface OAuthRefreshRecord {
  at: number;
  grantType: 'refresh_token' | 'authorization_code';
  /** The refresh token presented (refresh_token grant) or the code (authorization_code grant). */
  refreshToken: string;
  issuedAccessToken: string;
  issuedRefreshToken: string;
}

export interface BurnedRefreshTokenReuse {
  at: number;
  refreshToken: string;
}
