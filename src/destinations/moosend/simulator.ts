/**
 * A fake Moosend API v3, faithful to shared/vendor-apis/moosend.md: `apikey` query auth, the
 * `{Code, Error, Context}` envelope with errors inside HTTP 200, mailing lists whose members are
 * subscribed, unsubscribed (with the time), bounced or removed, custom fields as `Name=Value`,
 * subscribe as an upsert by email, subscribe_many up to 1000, the per-key 10-second windows per
 * endpoint answered with the rate-limit envelope, and the paged list and member reads. It also
 * posts what a Moosend automation's "post a webhook" step would post (our own fixture: Moosend
 * documents no payload). Self-contained on purpose: it shares no code with the connector, so a
 * bug on one side cannot hide the same bug on the other.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { SimulatorHarness } from '../simulator-kit.js';
import type { DestinationSimulator, DestinationSimulatorFactory, EngagementExtra, EngagementSample, SimulatedItem } from '../types.js';

/** Requests per key per 10 s, per endpoint (KB "API rate limiting"). */
const WINDOW_MS = 10_000;
const LIMITS = { subscribe: 10, subscribe_many: 2, unsubscribe: 20, remove: 40, remove_many: 8 } as const;
type Limited = keyof typeof LIMITS;
const MAX_BULK = 1000;
/** A person removed from every list within this long counts as erased (the neutral `erasePerson`). */
const ERASE_WINDOW_MS = 60_000;
const DEMO_STAGES = ['Qualified', 'Demo scheduled', 'Proposal sent', 'Negotiation'];
const DEMO_FIELDS = ['KommoStage', 'DealValue', 'Industry', 'industry', 'lead_source'];
const STATUS_TYPES = { Subscribed: 1, Unsubscribed: 2, Bounced: 3, Removed: 4 } as const;
const EMAIL_RE = /^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$/;

export interface MoosendSimOptions {
  /** A per-second cap on top of Moosend's own windows (the test kit's `perSecond`). */
  perSecond?: number;
  /**
   * Moosend's per-key, per-endpoint 10-second windows. Off by default: the shared conformance
   * suite sends the same call a dozen times in a second, which the real API would throttle.
   */
  rateLimits?: boolean;
  /** HTTP status of the rate-limit envelope: UNCONFIRMED, API-Evangelist says 200. */
  rateLimitStatus?: number;
  /** The KB spells it RATE-LIMITING, help.moosend.com RATE_LIMITING. */
  rateLimitError?: 'RATE-LIMITING' | 'RATE_LIMITING';
  /** subscribe re-subscribes an unsubscribed member (third-party reports, UNCONFIRMED). Default true. */
  resubscribe?: boolean;
  /** subscribe clears custom fields it does not name (third-party reports, UNCONFIRMED). Default true. */
  clearOmittedFields?: boolean;
  /**
   * Unknown list ids answer LIST_NOT_FOUND, as Moosend does. Default false: a list is created on
   * first use, because the conformance suite sends list ids of its own.
   */
  strictLists?: boolean;
}

export interface SimMember {
  id: string;
  email: string;
  name: string | null;
  createdOn: number;
  updatedOn: number;
  unsubscribedOn: number | null;
  removedOn: number | null;
  /** 1 subscribed, 2 unsubscribed, 3 bounced, 4 removed. */
  subscribeType: 1 | 2 | 3 | 4;
  fields: Map<string, string>;
  /** The last subscribe's HasExternalDoubleOptIn. */
  externalOptIn: boolean;
}

export interface SimList {
  id: string;
  name: string;
  createdOn: number;
  /** Defined custom fields; null: any name is accepted (a list created on first use). */
  fields: Set<string> | null;
  doubleOptIn: boolean;
  members: Map<string, SimMember>;
}

export interface MoosendSimulator extends DestinationSimulator {
  readonly lists: ReadonlyMap<string, SimList>;
  /** Emails unsubscribed from the whole account (`POST /subscribers/unsubscribe.json`). */
  readonly suppressed: ReadonlySet<string>;
  /** Custom fields a subscribe named that the list does not define (Moosend drops them; UNCONFIRMED). */
  readonly ignoredFields: ReadonlyArray<{ list: string; email: string; field: string }>;
  /** How many requests were answered with the rate-limit envelope. */
  readonly throttled: number;
  readonly credentials: { readonly apiKey: string };
  /** How the automation webhook body is sent: JSON (default) or a form. */
  webhookFormat: 'json' | 'form';
  createList(name: string, o?: { id?: string; fields?: string[]; doubleOptIn?: boolean }): SimList;
  member(listId: string, email: string): SimMember | undefined;
  /** The person unsubscribes from the list (a link in an email), with no webhook: the sweep finds it. */
  unsubscribeMember(listId: string, email: string, at?: number): void;
  /** The next `n` authenticated requests get the rate-limit envelope. */
  rateLimitNext(n: number): void;
  setRateLimits(on: boolean): void;
  sendEngagement(url: string, kind: EngagementSample, email: string, extra?: EngagementExtra): Promise<number>;
}

type Fields = Record<string, unknown>;

export const moosendSimulator = ((opts: MoosendSimOptions = {}): MoosendSimulator => {
  // Fresh random credentials per instance: a leak test can then search logs for exact values.
  const credentials = { apiKey: randomUUID() };
  const rateStatus = opts.rateLimitStatus ?? 200;
  const rateError = opts.rateLimitError ?? 'RATE-LIMITING';
  const resubscribe = opts.resubscribe ?? true;
  const clearOmitted = opts.clearOmittedFields ?? true;
  let limitsOn = opts.rateLimits ?? false;
  let forcedThrottles = 0;
  let throttled = 0;

  const lists = new Map<string, SimList>();
  const suppressed = new Set<string>();
  const ignoredFields: Array<{ list: string; email: string; field: string }> = [];
  const windows = new Map<Limited, number[]>();
  const removals = new Map<string, Map<string, number>>();

  const envelope = (code: number, error: string | null, context: unknown = null) => ({ Code: code, Error: error, Context: context });
  const rateLimitBody = () => envelope(429, rateError);
  const harness = new SimulatorHarness({
    // A gateway's page for 5xx; the envelope otherwise (429 is the rate-limit one).
    errorBody: (status) => (status === 429 ? rateLimitBody() : status >= 500 ? `<html><body><h1>${status}</h1>simulated</body></html>` : envelope(status, `simulated HTTP ${status}`)),
    ...(opts.perSecond !== undefined ? { perSecond: opts.perSecond } : {}),
    rateLimited: (reply) => {
      throttled++;
      return reply.code(rateStatus).send(rateLimitBody());
    },
  });
  const record = (i: Omit<SimulatedItem, 'at'>) => harness.item(i);

  const createList = (name: string, o: { id?: string; fields?: string[]; doubleOptIn?: boolean } = {}): SimList => {
    const list: SimList = {
      id: o.id ?? randomUUID(),
      name,
      createdOn: Date.now(),
      fields: o.fields ? new Set(o.fields) : null,
      doubleOptIn: o.doubleOptIn ?? false,
      members: new Map(),
    };
    lists.set(list.id, list);
    return list;
  };
  /** The list, created on first use unless lists are strict. */
  const listFor = (id: string): SimList | undefined => lists.get(id) ?? (opts.strictLists ? undefined : createList(`List ${id}`, { id }));

  /** Over the endpoint's window? Counts only the requests it lets through. */
  const overWindow = (endpoint: Limited): boolean => {
    if (!limitsOn) return false;
    const now = Date.now();
    const recent = (windows.get(endpoint) ?? []).filter((t) => t > now - WINDOW_MS);
    windows.set(endpoint, recent);
    if (recent.length >= LIMITS[endpoint]) return true;
    recent.push(now);
    return false;
  };
  const gate = (reply: FastifyReply, endpoint: Limited | null): FastifyReply | undefined => {
    if (forcedThrottles > 0 || (endpoint && overWindow(endpoint))) {
      if (forcedThrottles > 0) forcedThrottles--;
      throttled++;
      return reply.code(rateStatus).send(rateLimitBody());
    }
    return undefined;
  };

  const subscriberJson = (m: SimMember) => ({
    ID: m.id,
    Name: m.name,
    Email: m.email,
    CreatedOn: netDate(m.createdOn),
    UpdatedOn: netDate(m.updatedOn),
    UnsubscribedOn: m.unsubscribedOn === null ? null : netDate(m.unsubscribedOn),
    UnsubscribedFromID: null,
    SubscribeType: m.subscribeType,
    SubscribeMethod: 2,
    CustomFields: [...m.fields].map(([Name, Value]) => ({ CustomFieldID: fieldId(Name), Name, Value })),
    RemovedOn: m.removedOn === null ? null : netDate(m.removedOn),
  });
  const listJson = (l: SimList) => {
    const count = (t: number) => [...l.members.values()].filter((m) => m.subscribeType === t).length;
    return {
      ID: l.id,
      Name: l.name,
      ActiveMemberCount: count(1),
      BouncedMemberCount: count(3),
      RemovedMemberCount: count(4),
      UnsubscribedMemberCount: count(2),
      Status: 0,
      CustomFieldsDefinition: [...(l.fields ?? new Set(fieldNamesOf(l)))].map((Name) => ({ ID: fieldId(Name), Name, Context: null, IsRequired: false, Type: 0 })),
      CreatedBy: '127.0.0.1',
      CreatedOn: netDate(l.createdOn),
      UpdatedBy: '127.0.0.1',
      UpdatedOn: netDate(l.createdOn),
    };
  };

  /** An upsert by email; what the item log says about it. */
  const subscribe = (list: SimList, input: Fields, externalOptIn: boolean): { member?: SimMember; error?: string } => {
    const email = typeof input.Email === 'string' ? input.Email.trim().toLowerCase() : '';
    if (!EMAIL_RE.test(email)) {
      record({ kind: 'addToList', person: email, target: list.id, ok: false, reason: 'invalid email address' });
      return { error: email };
    }
    const fields = new Map<string, string>();
    for (const entry of Array.isArray(input.CustomFields) ? input.CustomFields : []) {
      const text = String(entry);
      const eq = text.indexOf('=');
      const name = eq > 0 ? text.slice(0, eq).trim() : '';
      if (!name || (list.fields && !list.fields.has(name))) {
        ignoredFields.push({ list: list.id, email, field: name || text });
        continue;
      }
      fields.set(name, text.slice(eq + 1));
    }
    const name = typeof input.Name === 'string' && input.Name.trim() ? input.Name.trim() : null;
    const now = Date.now();
    const existing = list.members.get(email);
    if (!existing) {
      const blocked = suppressed.has(email) && !resubscribe;
      const m: SimMember = {
        id: randomUUID(), email, name, createdOn: now, updatedOn: now, unsubscribedOn: blocked ? now : null, removedOn: null,
        subscribeType: blocked ? 2 : 1, fields, externalOptIn,
      };
      list.members.set(email, m);
      if (resubscribe) suppressed.delete(email);
      record({ kind: 'addToList', person: email, target: list.id, ok: true });
      return { member: m };
    }
    const before = JSON.stringify([existing.subscribeType, existing.name, [...existing.fields]]);
    if (name) existing.name = name;
    existing.fields = clearOmitted ? fields : new Map([...existing.fields, ...fields]);
    existing.externalOptIn = externalOptIn;
    if (existing.subscribeType === 4 || (existing.subscribeType === 2 && resubscribe)) {
      existing.subscribeType = 1;
      existing.unsubscribedOn = null;
      existing.removedOn = null;
      suppressed.delete(email);
    }
    const same = before === JSON.stringify([existing.subscribeType, existing.name, [...existing.fields]]);
    if (!same) existing.updatedOn = now;
    record({ kind: 'addToList', person: email, target: list.id, ok: true, ...(same ? { duplicate: true } : {}) });
    return { member: existing };
  };

  const remove = (list: SimList, email: string): boolean => {
    const m = list.members.get(email);
    const present = Boolean(m && m.subscribeType !== 4);
    if (m && present) {
      m.subscribeType = 4;
      m.removedOn = Date.now();
      m.updatedOn = Date.now();
    }
    record({ kind: 'removeFromList', person: email, target: list.id, ok: true, ...(present ? {} : { duplicate: true, reason: 'not a member' }) });
    // Moosend has no account-level delete: a person removed from every list is what erasure is.
    const seen = removals.get(email) ?? new Map<string, number>();
    seen.set(list.id, Date.now());
    removals.set(email, seen);
    const cutoff = Date.now() - ERASE_WINDOW_MS;
    if ([...lists.keys()].every((id) => (seen.get(id) ?? 0) > cutoff)) {
      removals.delete(email);
      record({ kind: 'erasePerson', person: email, ok: true });
    }
    return present;
  };

  const unsubscribeFrom = (list: SimList, email: string, at: number): boolean => {
    const m = list.members.get(email);
    if (!m || m.subscribeType === 4) return false;
    if (m.subscribeType !== 2) {
      m.subscribeType = 2;
      m.unsubscribedOn = at;
      m.updatedOn = at;
    }
    return true;
  };

  const plugin: FastifyPluginAsync = async (app) => {
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: 16 * 1024 * 1024 }, (_req, body, done) => done(null, body));

    app.addHook('onSend', harness.beforeAnswer);
    app.addHook('onRequest', async (request, reply) => {
      const faulted = await harness.fault(request, reply);
      if (faulted) return faulted;
      const key = new URL(request.url, 'http://sim').searchParams.get('apikey');
      // UNCONFIRMED which HTTP status goes with Code 104; errors come inside HTTP 200 elsewhere.
      if (key !== credentials.apiKey) return reply.code(200).send(envelope(104, 'API_KEY_NOT_VALID'));
      return harness.overLimit(reply) ?? gate(reply, null);
    });
    harness.install(app, (request) => bodyOf(request));

    const notFound = (reply: FastifyReply) => reply.send(envelope(200, 'LIST_NOT_FOUND'));

    // ---- lists
    app.get('/v3/lists.json', async () => {
      const all = [...lists.values()].map(listJson);
      return envelope(0, null, { Paging: paging(all.length, all.length, 1), MailingLists: all });
    });
    app.get<{ Params: { page: string; size: string } }>('/v3/lists/:page/:size', async (request, reply) => {
      const size = jsonName(request.params.size);
      if (size === undefined || !/^\d+$/.test(request.params.page) || !/^\d+$/.test(size)) return reply.code(404).send('Not Found');
      const page = Math.max(1, Number(request.params.page));
      const pageSize = Math.max(1, Number(size));
      const all = [...lists.values()];
      return envelope(0, null, { Paging: paging(pageSize, all.length, page), MailingLists: all.slice((page - 1) * pageSize, page * pageSize).map(listJson) });
    });
    app.get<{ Params: { list: string } }>('/v3/lists/:list/details.json', async (request, reply) => {
      const list = lists.get(request.params.list);
      return list ? envelope(0, null, listJson(list)) : notFound(reply);
    });
    app.get<{ Params: { list: string; status: string }; Querystring: { Page?: string; PageSize?: string } }>('/v3/lists/:list/subscribers/:status', async (request, reply) => {
      const status = jsonName(request.params.status);
      const type = status === undefined ? undefined : STATUS_TYPES[status as keyof typeof STATUS_TYPES];
      if (type === undefined) return reply.send(envelope(-2, 'VALIDATION_ERROR', { Messages: [{ Message: 'Status must be Subscribed, Unsubscribed, Bounced or Removed' }] }));
      const list = lists.get(request.params.list);
      if (!list) return notFound(reply);
      const page = Math.max(1, Number(request.query.Page ?? 1) || 1);
      const pageSize = Math.min(1000, Math.max(1, Number(request.query.PageSize ?? 100) || 100));
      // Newest subscription first, as Moosend's example answer says (SortExpression CreatedOn, descending).
      const members = [...list.members.values()].filter((m) => m.subscribeType === type).reverse().sort((a, b) => b.createdOn - a.createdOn);
      return envelope(0, null, {
        Paging: { ...paging(pageSize, members.length, page), SortExpression: 'CreatedOn', SortIsAscending: false },
        Subscribers: members.slice((page - 1) * pageSize, page * pageSize).map(subscriberJson),
      });
    });

    // ---- subscribers
    app.get<{ Params: { list: string }; Querystring: { Email?: string } }>('/v3/subscribers/:list/view.json', async (request, reply) => {
      const list = lists.get(request.params.list);
      if (!list) return notFound(reply);
      const m = list.members.get(String(request.query.Email ?? '').trim().toLowerCase());
      return m ? envelope(0, null, subscriberJson(m)) : envelope(300, 'MEMBER_NOT_FOUND');
    });

    app.post<{ Params: { list: string } }>('/v3/subscribers/:list/subscribe.json', async (request, reply) => {
      const throttledReply = gate(reply, 'subscribe');
      if (throttledReply) return throttledReply;
      const list = listFor(request.params.list);
      if (!list) return notFound(reply);
      const body = recordOf(bodyOf(request));
      const { member } = subscribe(list, body, body.HasExternalDoubleOptIn === true);
      if (!member) return envelope(-2, 'VALIDATION_ERROR', { Messages: [{ Message: 'The Email field is not a valid e-mail address.' }] });
      return envelope(0, null, subscriberJson(member));
    });

    app.post<{ Params: { list: string } }>('/v3/subscribers/:list/subscribe_many.json', async (request, reply) => {
      const throttledReply = gate(reply, 'subscribe_many');
      if (throttledReply) return throttledReply;
      const list = listFor(request.params.list);
      if (!list) return notFound(reply);
      const body = recordOf(bodyOf(request));
      const people = Array.isArray(body.Subscribers) ? body.Subscribers : [];
      if (people.length === 0 || people.length > MAX_BULK) {
        return envelope(-2, 'VALIDATION_ERROR', { Messages: [{ Message: `Subscribers must hold 1 to ${MAX_BULK} subscribers, got ${people.length}` }] });
      }
      const invalid: string[] = [];
      const done: SimMember[] = [];
      for (const p of people) {
        const r = subscribe(list, recordOf(p), body.HasExternalDoubleOptIn === true);
        if (r.member) done.push(r.member);
        else invalid.push(r.error || '(empty)');
      }
      const error = invalid.length ? `${invalid.length} items with invalid email address were ignored: ${invalid.join(', ')}` : null;
      return envelope(0, error, done.map(subscriberJson));
    });

    app.post<{ Params: { list: string; id: string } }>('/v3/subscribers/:list/update/:id', async (request, reply) => {
      const throttledReply = gate(reply, 'subscribe');
      if (throttledReply) return throttledReply;
      const list = lists.get(request.params.list);
      if (!list) return notFound(reply);
      const id = jsonName(request.params.id);
      const m = [...list.members.values()].find((x) => x.id === id);
      if (!m) return envelope(300, 'MEMBER_NOT_FOUND');
      const body = recordOf(bodyOf(request));
      const email = typeof body.Email === 'string' ? body.Email.trim().toLowerCase() : '';
      if (email && email !== m.email) {
        list.members.delete(m.email);
        m.email = email;
        list.members.set(email, m);
      }
      const { member } = subscribe(list, { ...body, Email: m.email }, body.HasExternalDoubleOptIn === true);
      return member ? envelope(0, null, subscriberJson(member)) : envelope(-2, 'VALIDATION_ERROR');
    });

    app.post('/v3/subscribers/unsubscribe.json', async (request, reply) => {
      const throttledReply = gate(reply, 'unsubscribe');
      if (throttledReply) return throttledReply;
      const email = emailOf(bodyOf(request));
      if (!email) return envelope(-2, 'VALIDATION_ERROR', { Messages: [{ Message: 'Email is required' }] });
      suppressed.add(email);
      const now = Date.now();
      for (const list of lists.values()) unsubscribeFrom(list, email, now);
      record({ kind: 'suppress', person: email, ok: true });
      return envelope(0, null);
    });

    const unsubscribeFromList = async (request: FastifyRequest<{ Params: { list: string } }>, reply: FastifyReply) => {
      const throttledReply = gate(reply, 'unsubscribe');
      if (throttledReply) return throttledReply;
      const list = lists.get(request.params.list);
      if (!list) return notFound(reply);
      const email = emailOf(bodyOf(request));
      // A list unsubscribe is a suppression scoped to one list (target = the list).
      if (!email || !unsubscribeFrom(list, email, Date.now())) return envelope(300, 'MEMBER_NOT_FOUND');
      record({ kind: 'suppress', person: email, target: list.id, ok: true });
      return envelope(0, null);
    };
    app.post<{ Params: { list: string } }>('/v3/subscribers/:list/unsubscribe.json', unsubscribeFromList);
    app.post<{ Params: { list: string; campaign: string } }>('/v3/subscribers/:list/:campaign/unsubscribe.json', unsubscribeFromList);

    app.post<{ Params: { list: string } }>('/v3/subscribers/:list/remove.json', async (request, reply) => {
      const throttledReply = gate(reply, 'remove');
      if (throttledReply) return throttledReply;
      const list = listFor(request.params.list);
      if (!list) return notFound(reply);
      const email = emailOf(bodyOf(request));
      if (!email) return envelope(-2, 'VALIDATION_ERROR', { Messages: [{ Message: 'Email is required' }] });
      // UNCONFIRMED what Moosend answers for someone not on the list; MEMBER_NOT_FOUND is our guess.
      return remove(list, email) ? envelope(0, null) : envelope(300, 'MEMBER_NOT_FOUND');
    });

    app.post<{ Params: { list: string } }>('/v3/subscribers/:list/remove_many.json', async (request, reply) => {
      const throttledReply = gate(reply, 'remove_many');
      if (throttledReply) return throttledReply;
      const list = listFor(request.params.list);
      if (!list) return notFound(reply);
      const raw = recordOf(bodyOf(request)).Emails;
      const emails = typeof raw === 'string' ? raw.split(',').map((e) => e.trim().toLowerCase()).filter(Boolean) : [];
      let processed = 0;
      for (const email of emails) if (EMAIL_RE.test(email) && remove(list, email)) processed++;
      return envelope(0, null, { EmailsIgnored: emails.length - processed, EmailsProcessed: processed });
    });
  };

  /** What a Moosend automation's "post a webhook" step would post: OUR fixture (UNCONFIRMED shape). */
  const sendEngagement = async (url: string, kind: EngagementSample, email: string, extra: EngagementExtra = {}): Promise<number> => {
    const at = extra.timestamp ?? Date.now();
    const key = email.trim().toLowerCase();
    const memberships = [...lists.values()].filter((l) => l.members.has(key));
    // The automation fires because it happened in Moosend: the unsubscribe is in the lists too.
    if (kind === 'unsubscribed') for (const l of memberships) unsubscribeFrom(l, key, at);
    const list = memberships[0];
    const m = list?.members.get(key);
    const target = new URL(url);
    target.searchParams.set('event', kind);
    const fields: Record<string, string> = {
      Email: email,
      Name: m?.name ?? '',
      MailingListID: list?.id ?? '',
      MailingListName: list?.name ?? '',
      CampaignName: 'Kommo nurture',
      Subject: extra.subject ?? 'Your proposal from Acme',
      Timestamp: netDate(at),
      ...(extra.eventId ? { EventID: extra.eventId } : {}),
      ...(kind === 'clicked' ? { Link: extra.link ?? 'https://example.com/pricing' } : {}),
      ...(kind === 'bounced' ? { Reason: '550 5.1.1 mailbox unavailable' } : {}),
    };
    const json = {
      Subscriber: { ID: m?.id ?? randomUUID(), Email: email, Name: m?.name ?? null, CustomFields: m ? [...m.fields].map(([Name, Value]) => ({ Name, Value })) : [] },
      MailingList: list ? { ID: list.id, Name: list.name } : null,
      Campaign: { Name: fields.CampaignName, Subject: fields.Subject },
      Timestamp: fields.Timestamp,
      ...(extra.eventId ? { EventID: extra.eventId } : {}),
      ...(fields.Link ? { Link: fields.Link } : {}),
      ...(fields.Reason ? { Reason: fields.Reason } : {}),
    };
    const form = sim.webhookFormat === 'form';
    const res = await fetch(target, {
      method: 'POST',
      headers: { 'content-type': form ? 'application/x-www-form-urlencoded' : 'application/json' },
      body: form ? new URLSearchParams(fields).toString() : JSON.stringify(json),
      signal: AbortSignal.timeout(5000),
    });
    await res.arrayBuffer();
    return res.status;
  };

  const sim: MoosendSimulator = {
    plugin,
    // Moosend keeps a subscriber per list: the fields of their most recently updated subscription.
    fieldsOf: (key) => {
      let latest: SimMember | undefined;
      for (const list of lists.values()) {
        const m = list.members.get(key);
        if (m && m.subscribeType !== 4 && (!latest || m.updatedOn >= latest.updatedOn)) latest = m;
      }
      return latest ? Object.fromEntries(latest.fields) : undefined;
    },
    requests: harness.requests,
    items: harness.items,
    faults: harness.faults,
    lists,
    suppressed,
    ignoredFields,
    get throttled() {
      return throttled;
    },
    credentials,
    webhookFormat: 'json',
    createList,
    member: (listId, email) => lists.get(listId)?.members.get(email.trim().toLowerCase()),
    unsubscribeMember: (listId, email, at = Date.now()) => {
      const list = lists.get(listId);
      if (!list || !unsubscribeFrom(list, email.trim().toLowerCase(), at)) throw new Error(`${email} is not a member of list ${listId}`);
    },
    rateLimitNext: (n) => {
      forcedThrottles = n;
    },
    setRateLimits: (on) => {
      limitsOn = on;
      windows.clear();
    },
    // The API root as Moosend documents it ends in /v3; the routes live under it.
    settingsFor: (baseUrl) => ({ apiKey: credentials.apiKey, baseUrl: `${baseUrl.replace(/\/+$/, '')}/v3` }),
    demoConfig: () => {
      const byName = new Map([...lists.values()].map((l) => [l.name, l.id]));
      const ids = DEMO_STAGES.map((stage) => [stage, byName.get(stage) ?? createList(stage, { fields: DEMO_FIELDS }).id] as const);
      return { lists: Object.fromEntries(ids) };
    },
    sendEngagement,
    reset: () => {
      // List definitions stay (a demo config names their ids); their members go.
      for (const l of lists.values()) l.members.clear();
      suppressed.clear();
      ignoredFields.length = 0;
      windows.clear();
      removals.clear();
      forcedThrottles = 0;
      throttled = 0;
      harness.reset();
    },
  };
  return sim;
}) satisfies DestinationSimulatorFactory;

/** `.json` path segment -> its name (`Unsubscribed.json` -> `Unsubscribed`); other formats: undefined. */
function jsonName(segment: string): string | undefined {
  return segment.endsWith('.json') ? segment.slice(0, -'.json'.length) : undefined;
}

function paging(pageSize: number, total: number, page: number) {
  return { PageSize: pageSize, CurrentPage: page, TotalResults: total, TotalPageCount: Math.max(1, Math.ceil(total / Math.max(1, pageSize))), SortExpression: null, SortIsAscending: false };
}

/** .NET JSON date, as Moosend writes them. */
function netDate(ms: number): string {
  return `/Date(${ms})/`;
}

/** A stable id per field name, so answers repeat. */
function fieldId(name: string): string {
  const hex = Buffer.from(name).toString('hex').padEnd(32, '0').slice(0, 32);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function fieldNamesOf(l: SimList): string[] {
  return [...new Set([...l.members.values()].flatMap((m) => [...m.fields.keys()]))];
}

/** JSON bodies (what the official client posts) and URL-encoded forms (what the blueprint intro describes). */
function bodyOf(request: FastifyRequest): unknown {
  const raw = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
  if (raw.length === 0) return undefined;
  const text = raw.toString('utf8');
  if (/x-www-form-urlencoded/i.test(String(request.headers['content-type'] ?? ''))) return Object.fromEntries(new URLSearchParams(text));
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

function recordOf(v: unknown): Fields {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Fields) : {};
}

function emailOf(body: unknown): string {
  const email = recordOf(body).Email;
  return typeof email === 'string' ? email.trim().toLowerCase() : '';
}
