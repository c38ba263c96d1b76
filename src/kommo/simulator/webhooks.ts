/**
 * Outgoing webhooks as Kommo sends them (kommo.md 1.2-1.4): form-encoded PHP bracket keys, legacy v2
 * field names, every value a string, an `account[...]` block, and a 2 s receiver timeout.
 * Not simulated: Kommo's delayed retries and auto-disable (a failed send is only recorded).
 */
import http from 'node:http';
import https from 'node:https';
import { encodeBracketForm } from '../form.js';
import { nowMs } from './gate.js';
import type {
  SimCompany,
  SimContact,
  SimCustomFieldValue,
  SimLead,
  SimNote,
  SimParty,
  SimTag,
  SimTask,
  SimWebhook,
  WebhookDropRecord,
  WebhookEventName,
  WebhookSendRecord,
} from './types.js';

const RECEIVER_TIMEOUT_MS = 2000;
const DATE_FIELD_TYPES = new Set(['date', 'date_time', 'birthday']);

export interface WebhookAccount {
  id: number;
  subdomain: string;
}

export class WebhookDispatcher {
  /** Subscriptions by destination URL (Kommo treats the destination as the key). */
  readonly subscriptions = new Map<string, SimWebhook>();
  readonly sent: WebhookSendRecord[] = [];
  /** POSTs that were never made (see `dropNext`). */
  readonly dropped: WebhookDropRecord[] = [];
  /** How many more POSTs to drop, and of which events (all when empty). */
  private drop: { count: number; events: ReadonlySet<string> } | null = null;
  private nextId = 1;
  /** Tail of each destination's send chain, so one subscriber gets its POSTs in order. */
  private readonly chains = new Map<string, Promise<void>>();
  private readonly pending = new Set<Promise<void>>();
  private readonly httpAgent = new http.Agent({ keepAlive: true });
  private readonly httpsAgent = new https.Agent({ keepAlive: true });

  constructor(private readonly account: WebhookAccount) {}

  subscribe(destination: string, settings: string[], createdBy: number, sort = 10): SimWebhook {
    const now = Math.floor(Date.now() / 1000);
    const existing = this.subscriptions.get(destination);
    if (existing) {
      // Re-posting a destination updates it in place and re-enables it (the UI's "Save" does the same).
      existing.settings = [...settings];
      existing.sort = sort;
      existing.disabled = false;
      existing.updated_at = now;
      return existing;
    }
    const hook: SimWebhook = {
      id: this.nextId++,
      destination,
      created_at: now,
      updated_at: now,
      account_id: this.account.id,
      created_by: createdBy,
      sort,
      disabled: false,
      settings: [...settings],
    };
    this.subscriptions.set(destination, hook);
    return hook;
  }

  unsubscribe(destination: string): boolean {
    return this.subscriptions.delete(destination);
  }

  /**
   * The next `count` POSTs (of `events`, or of any event) are not made at all, as when Kommo fails to
   * deliver a webhook and never retries it; the account's event log still records the change.
   */
  dropNext(count: number, events: readonly WebhookEventName[] = []): void {
    this.drop = count > 0 ? { count, events: new Set(events) } : null;
  }

  /** Posts `body` (without the account block) to every enabled subscriber of `event`. */
  emit(event: WebhookEventName, build: () => Record<string, unknown>): void {
    const targets = [...this.subscriptions.values()].filter((w) => !w.disabled && w.settings.includes(event));
    if (targets.length === 0) return;
    const body = encodeBracketForm({
      ...build(),
      account: {
        subdomain: this.account.subdomain,
        id: String(this.account.id),
        _links: { self: `https://${this.account.subdomain}.kommo.com` },
      },
    });
    for (const t of targets) this.enqueue(t.destination, event, body);
  }

  /** Resolves once every queued send (including ones queued while waiting) has finished. */
  async flush(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending]);
  }

  private enqueue(url: string, event: WebhookEventName, body: string): void {
    if (this.drop && (this.drop.events.size === 0 || this.drop.events.has(event))) {
      this.dropped.push({ url, event, body, at: nowMs() });
      this.drop.count -= 1;
      if (this.drop.count <= 0) this.drop = null;
      return;
    }
    const prev = this.chains.get(url) ?? Promise.resolve();
    const next = prev.then(() => this.send(url, event, body));
    this.chains.set(url, next);
    this.pending.add(next);
    void next.finally(() => {
      this.pending.delete(next);
      if (this.chains.get(url) === next) this.chains.delete(url);
    });
  }

  /** Never rejects: a failing receiver is recorded with status 0, like Kommo's "invalid response". */
  private async send(url: string, event: WebhookEventName, body: string): Promise<void> {
    const record: WebhookSendRecord = { url, event, status: 0, body, at: nowMs() };
    try {
      record.status = await this.post(url, body);
    } catch (err) {
      record.error = err instanceof Error ? err.message : String(err);
    }
    this.sent.push(record);
  }

  /**
   * node:http with a keep-alive agent rather than fetch: a burst sends thousands of hooks, and
   * fetch's stream machinery cost more CPU per POST than the receiver under test.
   */
  private post(url: string, body: string): Promise<number> {
    const target = new URL(url);
    const client = target.protocol === 'https:' ? https : http;
    const agent = target.protocol === 'https:' ? this.httpsAgent : this.httpAgent;
    return new Promise((resolve, reject) => {
      const req = client.request(
        target,
        {
          method: 'POST',
          agent,
          headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) },
          timeout: RECEIVER_TIMEOUT_MS,
        },
        (res) => {
          res.resume(); // the answer's body is not used, but must be read to free the socket
          res.on('end', () => resolve(res.statusCode ?? 0));
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`no answer within ${RECEIVER_TIMEOUT_MS} ms`)));
      req.on('error', reject);
      req.end(body);
    });
  }

  /** Closes idle keep-alive connections (the simulator's close()). */
  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }
}

// ---- v2 payload builders (all values strings) ----

type Fields = Record<string, unknown>;

function s(n: number | string | null | undefined): string | undefined {
  return n === null || n === undefined ? undefined : String(n);
}

function tagsV2(tags: SimTag[]): Fields[] | undefined {
  return tags.length === 0 ? undefined : tags.map((t) => ({ id: String(t.id), name: t.name }));
}

/** `custom_fields[i]`: `{id, name, values[j]{value, enum?}, code?}`; date fields carry bare timestamps. */
function customFieldsV2(cfv: SimCustomFieldValue[] | null): Fields[] | undefined {
  if (!cfv || cfv.length === 0) return undefined;
  return cfv.map((f) => {
    const values = f.values.map((v): unknown => {
      const value = typeof v.value === 'boolean' ? (v.value ? '1' : '0') : String(v.value);
      if (DATE_FIELD_TYPES.has(f.field_type)) return value;
      return v.enum_id === undefined ? { value } : { value, enum: String(v.enum_id) };
    });
    const out: Fields = { id: String(f.field_id), name: f.field_name, values };
    if (f.field_code) out.code = f.field_code;
    return out;
  });
}

export interface LeadChange {
  oldStatusId?: number;
  oldPipelineId?: number;
  oldResponsibleUserId?: number;
  modifiedUserId: number;
}

/** One lead as `leads[add|update|status|responsible][i]`, in the key order of a captured Kommo body. */
export function leadV2(lead: SimLead, change: LeadChange): Fields {
  return {
    id: s(lead.id),
    name: lead.name,
    status_id: s(lead.status_id),
    old_status_id: s(change.oldStatusId),
    price: s(lead.price),
    responsible_user_id: s(lead.responsible_user_id),
    old_responsible_user_id: s(change.oldResponsibleUserId),
    last_modified: s(lead.updated_at),
    modified_user_id: s(change.modifiedUserId),
    created_user_id: s(lead.created_by),
    date_create: s(lead.created_at),
    pipeline_id: s(lead.pipeline_id),
    old_pipeline_id: s(change.oldPipelineId),
    tags: tagsV2(lead.tags),
    account_id: s(lead.account_id),
    custom_fields: customFieldsV2(lead.custom_fields_values),
    created_at: s(lead.created_at),
    updated_at: s(lead.updated_at),
  };
}

/** A delete carries only the identifiers. */
export function leadDeleteV2(lead: SimLead): Fields {
  return { id: s(lead.id), status_id: s(lead.status_id), pipeline_id: s(lead.pipeline_id) };
}

export function contactV2(contact: SimContact, modifiedUserId: number, oldResponsibleUserId?: number): Fields {
  return partyV2(contact, 'contact', modifiedUserId, oldResponsibleUserId);
}

/** Companies ride on the `contacts` key too, told apart by `type=company` (kommo.md 1.2/1.3, pitfall 7). */
export function companyV2(company: SimCompany, modifiedUserId: number): Fields {
  return partyV2(company, 'company', modifiedUserId);
}

function partyV2(party: SimParty, type: 'contact' | 'company', modifiedUserId: number, oldResponsibleUserId?: number): Fields {
  const linked: Record<string, { ID: string }> = {};
  for (const id of party.lead_ids) linked[String(id)] = { ID: String(id) };
  return {
    id: s(party.id),
    name: party.name,
    responsible_user_id: s(party.responsible_user_id),
    old_responsible_user_id: s(oldResponsibleUserId),
    date_create: s(party.created_at),
    last_modified: s(party.updated_at),
    created_user_id: s(party.created_by),
    modified_user_id: s(modifiedUserId),
    account_id: s(party.account_id),
    custom_fields: customFieldsV2(party.custom_fields_values),
    tags: tagsV2(party.tags),
    linked_leads_id: party.lead_ids.length > 0 ? linked : undefined,
    created_at: s(party.created_at),
    updated_at: s(party.updated_at),
    type,
  };
}

const NOTE_TYPE_CODES: Record<string, string> = { common: '4', attachment: '5', call_in: '10', call_out: '11', service_message: '25', sms_in: '102', sms_out: '103' };
const ELEMENT_TYPE: Record<string, string> = { contacts: '1', leads: '2', companies: '3' };

/** `leads[note][i][note][...]`: note webhooks still speak v2 (numeric note_type, datetime strings). */
export function noteV2(note: SimNote): Fields {
  const text = typeof note.params.text === 'string' ? note.params.text : '';
  return {
    note: {
      id: s(note.id),
      text,
      date_create: kommoDateTime(note.created_at),
      note_type: NOTE_TYPE_CODES[note.note_type] ?? '4',
      element_type: ELEMENT_TYPE[note.entity_type],
      element_id: s(note.entity_id),
      metadata: JSON.stringify({ event_source: { type: 'api' } }),
      created_by: s(note.created_by),
      modified_by: s(note.updated_by),
      main_user_id: s(note.responsible_user_id),
      account_id: s(note.account_id),
      created_at: s(note.created_at),
      updated_at: s(note.updated_at),
    },
  };
}

export function taskV2(task: SimTask): Fields {
  return {
    id: s(task.id),
    element_id: s(task.entity_id),
    element_type: task.entity_type === null ? undefined : ELEMENT_TYPE[task.entity_type],
    task_type: s(task.task_type_id),
    text: task.text,
    status: task.is_completed ? '1' : '0',
    account_id: s(task.account_id),
    created_user_id: s(task.created_by),
    responsible_user_id: s(task.responsible_user_id),
    date_create: kommoDateTime(task.created_at),
    last_modified: kommoDateTime(task.updated_at),
    complete_till: kommoDateTime(task.complete_till),
    complete_before: s(task.complete_till),
    created_at: s(task.created_at),
    updated_at: s(task.updated_at),
  };
}

/** Task and note webhooks carry `"YYYY-MM-DD HH:MM:SS"` (UTC here; Kommo uses the account timezone). */
function kommoDateTime(unixSec: number): string {
  return new Date(unixSec * 1000).toISOString().slice(0, 19).replace('T', ' ');
}
