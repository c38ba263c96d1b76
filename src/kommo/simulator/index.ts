/**
 * KommoSimulator: a faithful fake of Kommo's REST API v4 and its outgoing webhooks, served over real
 * HTTP for tests, benchmarks and the demo. It follows Kommo's developer documentation
 * (https://developers.kommo.com/reference: leads, contacts, companies, pipelines, custom fields,
 * loss reasons, notes, tasks, users, account, webhooks, OAuth 2.0; and
 * https://developers.kommo.com/docs/webhooks for the form-encoded webhook bodies).
 *
 * Faithful on purpose, including the awkward parts: 204 with an empty body for empty lists, a fuzzy
 * `query`, 7 rps with 429 then a 403 block, rotating refresh tokens, `_embedded.tags` replacing the
 * tag set, and webhooks that are form-encoded, v2-shaped and fired by API writes too.
 *
 * Programmatic control methods change state synchronously (as a user in Kommo's UI would) and
 * queue the webhooks; `flushWebhooks()` waits for delivery. The parts: state.ts (records),
 * routes.ts (the HTTP API), writes.ts (write validation), render.ts (v4 JSON), webhooks.ts
 * (outgoing webhooks), oauth.ts, gate.ts (rate limit and blocks).
 */
import Fastify, { type FastifyInstance, type FastifyPluginAsync } from 'fastify';
import { RequestGate } from './gate.js';
import { OAuthServer } from './oauth.js';
import { createPlugin } from './routes.js';
import { LOST_STATUS_ID, SimState, WON_STATUS_ID, type LeadWrite } from './state.js';
import type {
  BurnedRefreshTokenReuse,
  CustomFieldScalar,
  CustomFieldType,
  EntityType,
  FieldEntityType,
  KommoSimulatorOptions,
  OAuthRefreshRecord,
  RequestLogEntry,
  SimCompany,
  SimContact,
  SimCustomField,
  SimEvent,
  SimLead,
  SimLossReason,
  SimNote,
  SimPipeline,
  SimStatus,
  SimTask,
  SimUser,
  SimWebhook,
  WebhookDropRecord,
  WebhookEventName,
  WebhookSendRecord,
} from './types.js';
import { WebhookDispatcher } from './webhooks.js';
import { fieldChangesByName } from './writes.js';

export type * from './types.js';
export { WEBHOOK_EVENTS, CUSTOM_FIELD_TYPES } from './types.js';
export { WON_STATUS_ID, LOST_STATUS_ID };

export const DEFAULT_ACCESS_TOKEN = 'sim-long-lived-token';

export type FieldInput = Record<string, CustomFieldScalar | CustomFieldScalar[]>;

export interface CreateContactInput {
  name: string;
  email?: string;
  phone?: string;
  /** Custom field values by field name (or code). */
  fields?: FieldInput;
  tags?: string[];
  responsibleUserId?: number;
}

export interface UpdateContactInput {
  name?: string;
  /** Replaces the EMAIL value list with this one address. */
  email?: string;
  phone?: string;
  fields?: FieldInput;
  /** Replaces the whole tag set. */
  tags?: string[];
  responsibleUserId?: number;
}

export interface CreateLeadInput {
  name: string;
  price?: number;
  pipelineId?: number;
  statusId?: number;
  /** Linked contacts; the first is the main contact. */
  contactIds?: number[];
  responsibleUserId?: number;
  fields?: FieldInput;
  tags?: string[];
}

export interface UpdateLeadInput {
  name?: string;
  price?: number;
  fields?: FieldInput;
  /** Replaces the whole tag set. */
  tags?: string[];
}

export interface CreateCompanyInput {
  name: string;
  /** Leads to link; each lead has at most one company, so this replaces a previous link. */
  leadIds?: number[];
  /** Contacts to link (at most one company per contact, as for leads). */
  contactIds?: number[];
  responsibleUserId?: number;
  /** Custom field values by field name (or code). */
  fields?: FieldInput;
}

export interface AddCustomFieldInput {
  name: string;
  code?: string;
  type: CustomFieldType;
  enums?: string[];
}

export class KommoSimulator {
  readonly subdomain: string;
  readonly accountId: number;
  /** The long-lived token accepted as Bearer (undefined when only OAuth is configured). */
  readonly accessToken: string | undefined;
  readonly plugin: FastifyPluginAsync;
  /** The admin whose token the integration uses: actor of every API write. */
  readonly currentUserId: number;
  /** The user that programmatic changes are attributed to (a sales rep working in Kommo's UI). */
  uiUserId: number;
  baseUrl: string | undefined;

  private readonly state: SimState;
  private readonly hooks: WebhookDispatcher;
  private readonly oauth: OAuthServer;
  private readonly gate: RequestGate;
  private server: FastifyInstance | undefined;

  constructor(opts: KommoSimulatorOptions = {}) {
    this.subdomain = opts.subdomain ?? 'acme';
    this.accountId = opts.accountId ?? 31_234_567;
    this.accessToken = opts.accessToken ?? (opts.oauth ? undefined : DEFAULT_ACCESS_TOKEN);
    this.hooks = new WebhookDispatcher({ id: this.accountId, subdomain: this.subdomain });
    this.state = new SimState(this.accountId, this.subdomain, this.hooks);
    this.gate = new RequestGate(opts.rateLimitPerSecond ?? 7, opts.blockAfterViolations ?? 50);

    const admin = this.state.addUser('Alice Admin', 'alice@acme.example', true);
    const rep = this.state.addUser('Bob Sales', 'bob@acme.example', false);
    this.currentUserId = admin.id;
    this.uiUserId = rep.id;
    this.oauth = new OAuthServer(opts.oauth, { accountId: this.accountId, subdomain: this.subdomain, userId: admin.id });
    this.seed();

    this.plugin = createPlugin({
      state: this.state,
      hooks: this.hooks,
      oauth: this.oauth,
      gate: this.gate,
      longLivedToken: this.accessToken,
      latencyMs: opts.latencyMs ?? 0,
      usersEndpointAdmin: opts.usersEndpointAdmin ?? true,
      tokenUserId: () => this.currentUserId,
    });
  }

  private seed(): void {
    this.state.addPipeline('Sales', ['New lead', 'Qualified', 'Demo scheduled', 'Proposal sent', 'Negotiation']);
    this.state.addCustomField('leads', { name: 'Industry', type: 'select', enums: ['SaaS', 'E-commerce', 'Healthcare', 'Finance', 'Education', 'Other'] });
    this.state.addCustomField('leads', { name: 'Source', type: 'text' });
    this.state.addCustomField('contacts', { name: 'Phone', code: 'PHONE', type: 'multitext', enums: ['WORK', 'WORKDD', 'MOB', 'FAX', 'HOME', 'OTHER'], predefined: true });
    this.state.addCustomField('contacts', { name: 'Email', code: 'EMAIL', type: 'multitext', enums: ['WORK', 'PRIV', 'OTHER'], predefined: true });
    this.state.addCustomField('contacts', { name: 'Email opt-in', type: 'checkbox' });
    this.state.addCustomField('companies', { name: 'Size', type: 'select', enums: ['1-10', '11-50', '51-200', '201-1000', '1000+'] });
    for (const reason of ['Too expensive', 'Chose a competitor', 'No budget', 'No response']) this.state.addLossReason(reason);
  }

  // ---- server ----

  /** Starts a dedicated server with the plugin at the root; returns e.g. `http://127.0.0.1:40123`. */
  async listen(port = 0, host = '127.0.0.1'): Promise<string> {
    if (this.server) throw new Error('KommoSimulator is already listening');
    const app = Fastify({ logger: false });
    await app.register(this.plugin);
    await app.listen({ port, host });
    const addr = app.server.address();
    const actualPort = typeof addr === 'object' && addr !== null ? addr.port : port;
    this.server = app;
    this.baseUrl = `http://${host}:${actualPort}`;
    return this.baseUrl;
  }

  async close(): Promise<void> {
    const app = this.server;
    this.server = undefined;
    this.baseUrl = undefined;
    this.hooks.close();
    if (app) await app.close();
  }

  // ---- inspection ----

  get leads(): ReadonlyMap<number, SimLead> {
    return this.state.leads;
  }
  get contacts(): ReadonlyMap<number, SimContact> {
    return this.state.contacts;
  }
  get companies(): ReadonlyMap<number, SimCompany> {
    return this.state.companies;
  }
  get notes(): ReadonlyMap<number, SimNote> {
    return this.state.notes;
  }
  get tasks(): ReadonlyMap<number, SimTask> {
    return this.state.tasks;
  }
  get users(): ReadonlyMap<number, SimUser> {
    return this.state.users;
  }
  get pipelines(): ReadonlyMap<number, SimPipeline> {
    return this.state.pipelines;
  }
  get mainPipeline(): SimPipeline {
    return this.state.mainPipeline;
  }
  customFields(entity: FieldEntityType): SimCustomField[] {
    return [...this.state.customFields[entity].values()];
  }
  /** Field definition by name or code, e.g. `field('contacts', 'EMAIL')`. */
  field(entity: FieldEntityType, nameOrCode: string): SimCustomField | undefined {
    return this.state.findField(entity, { name: nameOrCode }) ?? this.state.findField(entity, { code: nameOrCode });
  }
  /** Stage by name in a pipeline (main pipeline by default); throws when missing. */
  status(name: string, pipelineId?: number): SimStatus {
    const p = pipelineId === undefined ? this.state.mainPipeline : this.state.pipelines.get(pipelineId);
    const st = p?.statuses.find((s) => s.name === name);
    if (!st) throw new Error(`No stage "${name}" in pipeline ${p?.id ?? pipelineId}`);
    return st;
  }
  get webhooks(): SimWebhook[] {
    return [...this.hooks.subscriptions.values()];
  }
  /** Every webhook POST attempted, in completion order. */
  get webhooksSent(): readonly WebhookSendRecord[] {
    return this.hooks.sent;
  }
  /** Webhooks never sent because of `dropWebhooks`. */
  get webhooksDropped(): readonly WebhookDropRecord[] {
    return this.hooks.dropped;
  }
  /** The account's event log (what GET /api/v4/events reads), oldest first. */
  get events(): readonly SimEvent[] {
    return this.state.events;
  }
  /** Every request received (rejected ones too), in arrival order. */
  get requests(): readonly RequestLogEntry[] {
    return this.gate.requests;
  }
  /** Successful token grants, in order (single-flight tests count these). */
  get oauthRefreshes(): readonly OAuthRefreshRecord[] {
    return this.oauth.refreshes;
  }
  /** Refresh attempts with a token that had already been burned by rotation. */
  get burnedRefreshTokenReuses(): readonly BurnedRefreshTokenReuse[] {
    return this.oauth.burnedReuses;
  }
  get blocked(): boolean {
    return this.gate.blocked;
  }

  /** Most requests received within any `windowMs` span (all statuses, all tokens). */
  maxRequestsInWindow(windowMs = 1000): number {
    return this.gate.maxRequestsInWindow(windowMs);
  }
  resetLog(): void {
    this.gate.resetLog();
  }
  /** Lifts a 403 block and clears the rate-limit window. */
  /** Blocks the account as Kommo does (integration disabled, account blocked): every request gets 403. */
  block(): void {
    this.gate.blocked = true;
  }

  unblock(): void {
    this.gate.unblock();
  }
  flushWebhooks(): Promise<void> {
    return this.hooks.flush();
  }

  // ---- OAuth control ----

  /** A one-time code (20 min) for the authorization_code grant, as Kommo's consent redirect delivers. */
  issueAuthorizationCode(): string {
    return this.oauth.issueCode();
  }
  /** Expires every OAuth access token: the next API call with one gets 401. */
  expireAccessTokens(): void {
    this.oauth.expireAccessTokens();
  }

  // ---- programmatic changes (as a user in Kommo's UI) ----

  addUser(input: { name: string; email: string; isAdmin?: boolean }): SimUser {
    return this.state.addUser(input.name, input.email, input.isAdmin ?? false);
  }

  addPipeline(name: string, stageNames: string[]): SimPipeline {
    return this.state.addPipeline(name, stageNames);
  }

  addCustomField(entity: FieldEntityType, input: AddCustomFieldInput): SimCustomField {
    return this.state.addCustomField(entity, input);
  }

  createContact(input: CreateContactInput): SimContact {
    const fields = fieldChangesByName(this.state, 'contacts', input.fields ?? {}, [
      { code: 'EMAIL', value: input.email },
      { code: 'PHONE', value: input.phone },
    ]);
    const write = { name: input.name, fields, tags: { replace: (input.tags ?? []).map((name) => ({ name })) } };
    const [contact] = this.state.addContacts([input.responsibleUserId === undefined ? write : { ...write, responsibleUserId: this.checkUser(input.responsibleUserId) }], this.uiUserId);
    if (!contact) throw new Error('contact not created');
    return contact;
  }

  updateContact(contactId: number, input: UpdateContactInput): SimContact {
    const fields = fieldChangesByName(this.state, 'contacts', input.fields ?? {}, [
      { code: 'EMAIL', value: input.email },
      { code: 'PHONE', value: input.phone },
    ]);
    const [contact] = this.state.updateContacts(
      [
        {
          id: contactId,
          write: {
            ...(input.name !== undefined && { name: input.name }),
            ...(input.responsibleUserId !== undefined && { responsibleUserId: this.checkUser(input.responsibleUserId) }),
            ...(fields.length > 0 && { fields }),
            ...(input.tags !== undefined && { tags: { replace: input.tags.map((name) => ({ name })) } }),
          },
        },
      ],
      this.uiUserId,
    );
    if (!contact) throw new Error(`Contact ${contactId} not found`);
    return contact;
  }

  /** Fires add_company (under the `contacts` webhook key, with type=company). */
  createCompany(input: CreateCompanyInput): SimCompany {
    const responsible = input.responsibleUserId === undefined ? undefined : this.checkUser(input.responsibleUserId);
    return this.state.addCompany(
      {
        name: input.name,
        ...(input.leadIds !== undefined && { leadIds: input.leadIds }),
        ...(input.contactIds !== undefined && { contactIds: input.contactIds }),
        ...(responsible !== undefined && { responsibleUserId: responsible }),
        ...(input.fields !== undefined && { fields: fieldChangesByName(this.state, 'companies', input.fields) }),
      },
      this.uiUserId,
    );
  }

  createLead(input: CreateLeadInput): SimLead {
    const stage = this.state.resolveStage(undefined, input.pipelineId, input.statusId);
    if ('error' in stage) throw new Error(stage.error);
    for (const id of input.contactIds ?? []) if (!this.state.contacts.has(id)) throw new Error(`Contact ${id} not found`);
    const write: LeadWrite = {
      name: input.name,
      price: input.price ?? 0,
      pipelineId: stage.pipeline_id,
      statusId: stage.status_id,
      responsibleUserId: this.checkUser(input.responsibleUserId ?? this.uiUserId),
      fields: fieldChangesByName(this.state, 'leads', input.fields ?? {}),
      tags: { replace: (input.tags ?? []).map((name) => ({ name })) },
      contactIds: input.contactIds ?? [],
    };
    const [lead] = this.state.addLeads([write], this.uiUserId);
    if (!lead) throw new Error('lead not created');
    return lead;
  }

  updateLead(leadId: number, input: UpdateLeadInput): SimLead {
    this.requireLead(leadId);
    const write: LeadWrite = {
      ...(input.name !== undefined && { name: input.name }),
      ...(input.price !== undefined && { price: input.price }),
      ...(input.fields !== undefined && { fields: fieldChangesByName(this.state, 'leads', input.fields) }),
      ...(input.tags !== undefined && { tags: { replace: input.tags.map((name) => ({ name })) } }),
    };
    return this.updateOne(leadId, write);
  }

  /**
   * Fires status_lead and update_lead (two POSTs to a subscriber of both), like a drag in the UI.
   * Moving to lost (143) may name a loss reason, as Kommo's UI asks for one.
   */
  moveLead(leadId: number, statusId: number, pipelineId?: number, opts: { lossReason?: string } = {}): SimLead {
    const lead = this.requireLead(leadId);
    const stage = this.state.resolveStage(lead, pipelineId, statusId);
    if ('error' in stage) throw new Error(stage.error);
    const write: LeadWrite = { pipelineId: stage.pipeline_id, statusId: stage.status_id };
    if (opts.lossReason !== undefined) write.lossReasonId = this.lossReason(opts.lossReason).id;
    return this.updateOne(leadId, write);
  }

  get lossReasons(): ReadonlyMap<number, SimLossReason> {
    return this.state.lossReasons;
  }

  /** A loss reason by name (added when the account does not have it yet). */
  lossReason(name: string): SimLossReason {
    for (const r of this.state.lossReasons.values()) if (r.name === name) return r;
    return this.state.addLossReason(name);
  }

  /** Fires responsible_lead, then update_lead. */
  setResponsible(leadId: number, userId: number): SimLead {
    this.requireLead(leadId);
    return this.updateOne(leadId, { responsibleUserId: this.checkUser(userId) });
  }

  /** Removes the lead; fires delete_lead with only id, status_id and pipeline_id. */
  deleteLead(leadId: number): SimLead {
    return this.state.deleteLead(leadId);
  }

  subscribe(url: string, settings: string[]): SimWebhook {
    return this.hooks.subscribe(url, settings, this.currentUserId);
  }

  unsubscribe(url: string): boolean {
    return this.hooks.unsubscribe(url);
  }

  /**
   * The next `count` webhook POSTs (of these events; all when none named) are never made: Kommo
   * failed to deliver them and did not retry. The event log still has the changes.
   */
  dropWebhooks(count: number, events: readonly WebhookEventName[] = []): void {
    this.hooks.dropNext(count, events);
  }

  /** Marks a subscription disabled, as Kommo does after too many failed deliveries. */
  setWebhookDisabled(url: string, disabled: boolean): void {
    const hook = this.hooks.subscriptions.get(url);
    if (!hook) throw new Error(`No webhook for ${url}`);
    hook.disabled = disabled;
  }

  private updateOne(leadId: number, write: LeadWrite): SimLead {
    const [lead] = this.state.updateLeads([{ id: leadId, write }], this.uiUserId);
    if (!lead) throw new Error(`Lead ${leadId} not found`);
    return lead;
  }

  private requireLead(leadId: number): SimLead {
    const lead = this.state.leads.get(leadId);
    if (!lead) throw new Error(`Lead ${leadId} not found`);
    return lead;
  }

  private checkUser(userId: number): number {
    if (!this.state.users.has(userId)) throw new Error(`User ${userId} not found`);
    return userId;
  }
}
