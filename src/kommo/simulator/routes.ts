/**
 * The HTTP face of the simulator: a Fastify plugin (mountable under a prefix) with Kommo's auth,
 * rate limit, HAL/problem+json bodies, paging and 204-on-empty behaviour.
 */
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { isRecord } from '../../model/json.js';
import { nowMs, type RequestGate } from './gate.js';
import {
  KommoQuery,
  type LinkBase,
  type ItemErrors,
  linkBase,
  pageLinks,
  pageParams,
  paginate,
  selfLink,
  sendHal,
  sendNoContent,
  sendProblem,
  sendValidationErrors,
} from './http.js';
import type { OAuthServer } from './oauth.js';
import {
  renderCompany,
  renderContact,
  renderCustomField,
  renderLead,
  renderLossReason,
  renderNote,
  renderPipeline,
  renderTask,
  renderUser,
  renderWebhook,
} from './render.js';
import type { SimState } from './state.js';
import type { EntityType, RequestLogEntry, SimContact, SimLead } from './types.js';
import { WEBHOOK_EVENTS } from './types.js';
import type { WebhookDispatcher } from './webhooks.js';
import { parseContactItem, parseLeadItem, parseNoteItem, parseTaskItem, requestIdOf } from './writes.js';

export interface RouteDeps {
  state: SimState;
  hooks: WebhookDispatcher;
  oauth: OAuthServer;
  gate: RequestGate;
  longLivedToken: string | undefined;
  latencyMs: number;
  usersEndpointAdmin: boolean;
  /** The user behind every accepted token (the admin who authorized the integration). */
  tokenUserId: () => number;
}

type IdParams = { Params: { id: string } };
type Req = FastifyRequest;
type Reply = FastifyReply;

const WRITE_LIMIT = 250;
const KNOWN_EVENTS = new Set<string>(WEBHOOK_EVENTS);

export function createPlugin(deps: RouteDeps): FastifyPluginAsync {
  return async (app: FastifyInstance) => {
    const prefix = app.prefix;
    const logEntries = new WeakMap<Req, RequestLogEntry>();

    // The token endpoint also takes form bodies (league/oauth2-server does). A host app may already
    // parse forms (e.g. to raw strings for webhooks); the token route copes with both.
    if (!app.hasContentTypeParser('application/x-www-form-urlencoded')) {
      app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => {
        done(null, String(body));
      });
    }

    app.addHook('onRequest', async (req, reply) => {
      const url = new URL(req.url, 'http://sim');
      const path = prefix && url.pathname.startsWith(prefix) ? url.pathname.slice(prefix.length) || '/' : url.pathname;
      const entry: RequestLogEntry = { at: nowMs(), method: req.method, path, query: url.search.slice(1), status: 0 };
      logEntries.set(req, entry);
      const verdict = deps.gate.admit(entry);
      if (verdict === 'blocked') {
        return sendProblem(reply, 403, 'Access denied: too many requests, the account is blocked');
      }
      if (verdict === 'rate_limited') {
        // Kommo's documented 429 body carries retry_after; the Retry-After header is our own addition.
        reply.header('retry-after', '1');
        return sendProblem(reply, 429, 'Too many requests: at most 7 per second', { retry_after: 1 });
      }
      if (deps.latencyMs > 0) await new Promise((r) => setTimeout(r, deps.latencyMs));
      if (path.startsWith('/api/v4/')) {
        const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
        const token = m?.[1];
        const ok = token !== undefined && (token === deps.longLivedToken || deps.oauth.isValidAccessToken(token));
        if (!ok) return sendProblem(reply, 401, token === undefined ? 'Authorization header is missing' : 'Unauthorized');
      }
      return undefined;
    });

    app.addHook('onResponse', async (req, reply) => {
      const entry = logEntries.get(req);
      if (entry) entry.status = reply.statusCode;
    });

    app.setErrorHandler((err: { statusCode?: number; message: string }, _req, reply) => {
      const status = err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500;
      return sendProblem(reply, status, err.message);
    });

    registerOAuth(app, deps);
    registerEntities(app, deps, prefix, 'leads');
    registerEntities(app, deps, prefix, 'contacts');
    registerCompanies(app, deps, prefix);
    registerCatalog(app, deps, prefix);
    registerNotesAndTasks(app, deps, prefix);
    registerWebhooks(app, deps, prefix);
    registerEvents(app, deps, prefix);

    app.all('/api/v4/*', async (_req, reply) => sendProblem(reply, 404, 'Not found'));
  };
}

function registerOAuth(app: FastifyInstance, deps: RouteDeps): void {
  app.post('/oauth2/access_token', async (req, reply) => {
    const body = typeof req.body === 'string' ? Object.fromEntries(new URLSearchParams(req.body)) : req.body;
    const res = deps.oauth.handle(body);
    return reply
      .code(res.status)
      .header('content-type', res.status === 200 ? 'application/json' : 'application/problem+json')
      .send(JSON.stringify(res.body));
  });
}

// ---- leads and contacts ----

interface Listable {
  id: number;
  name: string;
  created_at: number;
  updated_at: number;
  responsible_user_id: number;
  custom_fields_values: SimLead['custom_fields_values'];
}

/**
 * Kommo's `query` is a fuzzy full-text search: a case-insensitive substring of the name or of any
 * custom field value matches, so `ann@x.com` also finds `joann@x.com`. Callers must post-filter.
 */
function fuzzyMatch(item: Listable & { first_name?: string; last_name?: string }, needle: string): boolean {
  const hay = [item.name, item.first_name ?? '', item.last_name ?? ''];
  for (const f of item.custom_fields_values ?? []) for (const v of f.values) hay.push(String(v.value));
  return hay.some((h) => h.toLowerCase().includes(needle));
}

function filterCommon<T extends Listable>(all: Map<number, T>, q: KommoQuery): T[] {
  const ids = q.ints('filter[id]');
  let items = ids.length > 0 ? [...new Set(ids)].sort((a, b) => a - b).flatMap((id) => all.get(id) ?? []) : [...all.values()];
  const names = q.list('filter[name]');
  if (names.length > 0) items = items.filter((x) => names.includes(x.name));
  const resp = q.ints('filter[responsible_user_id]');
  if (resp.length > 0) items = items.filter((x) => resp.includes(x.responsible_user_id));
  for (const key of ['created_at', 'updated_at'] as const) {
    const from = q.int(`filter[${key}][from]`);
    const to = q.int(`filter[${key}][to]`);
    if (from !== undefined) items = items.filter((x) => x[key] >= from);
    if (to !== undefined) items = items.filter((x) => x[key] <= to);
  }
  const query = q.one('query')?.trim().toLowerCase();
  if (query) items = items.filter((x) => fuzzyMatch(x, query));
  for (const [key, dir] of q.params) {
    const m = /^order\[(id|created_at|updated_at)\]$/.exec(key);
    const field = m?.[1] as 'id' | 'created_at' | 'updated_at' | undefined;
    if (!field) continue;
    const sign = dir.toLowerCase() === 'desc' ? -1 : 1;
    items = [...items].sort((a, b) => sign * (a[field] - b[field] || a.id - b.id));
  }
  return items;
}

function filterLeads(state: SimState, q: KommoQuery): SimLead[] {
  let items = filterCommon(state.leads, q);
  const pipelines = q.ints('filter[pipeline_id]');
  if (pipelines.length > 0) items = items.filter((l) => pipelines.includes(l.pipeline_id));
  // filter[statuses][i][pipeline_id] + [status_id]: one (pipeline, status) pair per index.
  const pairs = new Map<string, { pipeline?: number; status?: number }>();
  for (const [key, value] of q.params) {
    const m = /^filter\[statuses\]\[(\d+)\]\[(pipeline_id|status_id)\]$/.exec(key);
    if (!m?.[1]) continue;
    const pair = pairs.get(m[1]) ?? {};
    if (m[2] === 'pipeline_id') pair.pipeline = Number(value);
    else pair.status = Number(value);
    pairs.set(m[1], pair);
  }
  if (pairs.size > 0) {
    const list = [...pairs.values()];
    items = items.filter((l) => list.some((p) => p.pipeline === l.pipeline_id && p.status === l.status_id));
  }
  return items;
}

function parseId(raw: string): number | undefined {
  return /^\d+$/.test(raw) ? Number(raw) : undefined;
}

/** Shared list rendering: 422 for limit > 250, 204 for an empty page, `next` only when more exist. */
function sendPage<T>(req: Req, reply: Reply, prefix: string, q: KommoQuery, key: string, items: T[], render: (x: T, api: string) => unknown, extra: Record<string, unknown> = {}): Reply {
  const pp = pageParams(q);
  if (!pp.ok) return sendProblem(reply, pp.status, pp.detail);
  const { slice, hasNext } = paginate(items, pp.page, pp.limit);
  if (slice.length === 0) return sendNoContent(reply);
  const base = linkBase(req, prefix);
  return sendHal(reply, { ...extra, _page: pp.page, _links: pageLinks(base, pp.page, pp.limit, hasNext), _embedded: { [key]: slice.map((x) => render(x, base.api)) } });
}

/** Validates a batch body: a non-empty array of at most 250 items. */
function batchItems(body: unknown, reply: Reply): unknown[] | undefined {
  if (!Array.isArray(body) || body.length === 0) {
    sendProblem(reply, 400, 'Request data can not be empty');
    return undefined;
  }
  if (body.length > WRITE_LIMIT) {
    sendProblem(reply, 422, `Limit ${WRITE_LIMIT} per request`);
    return undefined;
  }
  return body;
}

function rejectIfInvalid(reply: Reply, parsed: { errors: ItemErrors['errors']; requestId: string }[]): boolean {
  const failing = parsed.filter((p) => p.errors.length > 0).map((p) => ({ request_id: p.requestId, errors: p.errors }));
  if (failing.length === 0) return false;
  sendValidationErrors(reply, failing);
  return true;
}

function writeResult(base: LinkBase, key: EntityType, rows: { id: number; updated_at?: number; request_id: string }[]): unknown {
  return {
    _links: selfLink(base.path),
    _embedded: { [key]: rows.map((r) => ({ ...r, _links: selfLink(`${base.api}/api/v4/${key}/${r.id}`) })) },
  };
}

function registerEntities(app: FastifyInstance, deps: RouteDeps, prefix: string, entity: EntityType): void {
  const { state } = deps;
  const isLeads = entity === 'leads';
  const embedKey = isLeads ? 'contacts' : 'leads';
  const render = (x: SimLead | SimContact, api: string, withs: Set<string>): unknown =>
    isLeads ? renderLead(x as SimLead, api, withs, state.lossReasons) : renderContact(x as SimContact, api, withs.has(embedKey));
  const lookup = (id: number): SimLead | SimContact | undefined => (isLeads ? state.leads.get(id) : state.contacts.get(id));

  app.get(`/api/v4/${entity}`, async (req, reply) => {
    const q = new KommoQuery(rawQuery(req));
    const items: Array<SimLead | SimContact> = isLeads ? filterLeads(state, q) : filterCommon(state.contacts, q);
    const withs = q.withs();
    return sendPage(req, reply, prefix, q, entity, items, (x, api) => render(x, api, withs));
  });

  app.get<IdParams>(`/api/v4/${entity}/:id`, async (req, reply) => {
    const id = parseId(req.params.id);
    const item = id === undefined ? undefined : lookup(id);
    if (!item) return sendProblem(reply, 404, `${isLeads ? 'Lead' : 'Contact'} not found`);
    return sendHal(reply, render(item, linkBase(req, prefix).api, new KommoQuery(rawQuery(req)).withs()));
  });

  app.post(`/api/v4/${entity}`, async (req, reply) => {
    const items = batchItems(req.body, reply);
    if (!items) return reply;
    const actor = deps.tokenUserId();
    const base = linkBase(req, prefix);
    if (isLeads) {
      const parsed = items.map((raw, i) => parseLeadItem(state, raw, i, 'add'));
      if (rejectIfInvalid(reply, parsed)) return reply;
      const created = state.addLeads(parsed.map((p) => p.write), actor);
      return sendHal(reply, writeResult(base, entity, created.map((l, i) => ({ id: l.id, request_id: parsed[i]?.requestId ?? String(i) }))));
    }
    const parsed = items.map((raw, i) => parseContactItem(state, raw, i, 'add'));
    if (rejectIfInvalid(reply, parsed)) return reply;
    const created = state.addContacts(parsed.map((p) => p.write), actor);
    return sendHal(reply, writeResult(base, entity, created.map((c, i) => ({ id: c.id, request_id: parsed[i]?.requestId ?? String(i) }))));
  });

  const update = (items: unknown[], idFromPath?: number): { parsed: Array<{ id?: number; errors: ItemErrors['errors']; requestId: string }>; apply: () => Array<SimLead | SimContact> } => {
    const actor = deps.tokenUserId();
    if (isLeads) {
      const parsed = items.map((raw, i) => parseLeadItem(state, raw, i, 'update', idFromPath));
      return { parsed, apply: () => state.updateLeads(parsed.map((p) => ({ id: p.id ?? 0, write: p.write })), actor) };
    }
    const parsed = items.map((raw, i) => parseContactItem(state, raw, i, 'update', idFromPath));
    return { parsed, apply: () => state.updateContacts(parsed.map((p) => ({ id: p.id ?? 0, write: p.write })), actor) };
  };

  app.patch(`/api/v4/${entity}`, async (req, reply) => {
    const items = batchItems(req.body, reply);
    if (!items) return reply;
    const { parsed, apply } = update(items);
    if (rejectIfInvalid(reply, parsed)) return reply;
    const updated = apply();
    const rows = updated.map((x, i) => ({ id: x.id, updated_at: x.updated_at, request_id: parsed[i]?.requestId ?? String(i) }));
    return sendHal(reply, writeResult(linkBase(req, prefix), entity, rows));
  });

  app.patch<IdParams>(`/api/v4/${entity}/:id`, async (req, reply) => {
    const id = parseId(req.params.id);
    if (id === undefined || !lookup(id)) return sendProblem(reply, 404, `${isLeads ? 'Lead' : 'Contact'} not found`);
    if (!isRecord(req.body)) return sendProblem(reply, 400, 'Request data can not be empty');
    const { parsed, apply } = update([req.body], id);
    if (rejectIfInvalid(reply, parsed)) return reply;
    const [x] = apply();
    const api = linkBase(req, prefix).api;
    return sendHal(reply, { id, updated_at: x?.updated_at, _links: selfLink(`${api}/api/v4/${entity}/${id}`) });
  });

  app.get(`/api/v4/${entity}/custom_fields`, async (req, reply) => {
    const q = new KommoQuery(rawQuery(req));
    const fields = [...state.customFields[entity].values()];
    const pp = pageParams(q);
    const extra = pp.ok ? { _total_items: fields.length, _page_count: Math.max(1, Math.ceil(fields.length / pp.limit)) } : {};
    return sendPage(req, reply, prefix, q, 'custom_fields', fields, renderCustomField, extra);
  });

  app.get(`/api/v4/${entity}/tags`, async (req, reply) => {
    const q = new KommoQuery(rawQuery(req));
    let tags = state.listTags(entity);
    const name = q.one('filter[name]');
    if (name !== undefined) tags = tags.filter((t) => t.name === name);
    const ids = q.ints('filter[id]');
    if (ids.length > 0) tags = tags.filter((t) => ids.includes(t.id));
    const query = q.one('query')?.toLowerCase();
    if (query) tags = tags.filter((t) => t.name.toLowerCase().includes(query));
    return sendPage(req, reply, prefix, q, 'tags', tags, (t) => ({ ...t }));
  });
}

/** Read-only companies: the same filters, paging (limit <= 250) and 204 as contacts (kommo.md 2.4, 2.6). */
function registerCompanies(app: FastifyInstance, deps: RouteDeps, prefix: string): void {
  const { state } = deps;

  app.get('/api/v4/companies', async (req, reply) => {
    const q = new KommoQuery(rawQuery(req));
    const withs = q.withs();
    return sendPage(req, reply, prefix, q, 'companies', filterCommon(state.companies, q), (c, api) => renderCompany(c, api, withs));
  });

  app.get<IdParams>('/api/v4/companies/:id', async (req, reply) => {
    const id = parseId(req.params.id);
    const company = id === undefined ? undefined : state.companies.get(id);
    if (!company) return sendProblem(reply, 404, 'Company not found');
    return sendHal(reply, renderCompany(company, linkBase(req, prefix).api, new KommoQuery(rawQuery(req)).withs()));
  });
}

// ---- pipelines, users, account ----

function registerCatalog(app: FastifyInstance, deps: RouteDeps, prefix: string): void {
  const { state } = deps;

  app.get('/api/v4/leads/pipelines', async (req, reply) => {
    const base = linkBase(req, prefix);
    const pipelines = [...state.pipelines.values()];
    return sendHal(reply, {
      _total_items: pipelines.length,
      _links: selfLink(base.path),
      _embedded: { pipelines: pipelines.map((p) => renderPipeline(p, base.api)) },
    });
  });

  app.get('/api/v4/leads/loss_reasons', async (req, reply) => {
    const base = linkBase(req, prefix);
    const reasons = [...state.lossReasons.values()];
    if (reasons.length === 0) return reply.code(204).send();
    return sendHal(reply, {
      _total_items: reasons.length,
      _links: selfLink(base.path),
      _embedded: { loss_reasons: reasons.map((r) => renderLossReason(r, base.api)) },
    });
  });

  app.get('/api/v4/companies/custom_fields', async (req, reply) => {
    const q = new KommoQuery(rawQuery(req));
    const fields = [...state.customFields.companies.values()];
    const pp = pageParams(q);
    const extra = pp.ok ? { _total_items: fields.length, _page_count: Math.max(1, Math.ceil(fields.length / pp.limit)) } : {};
    return sendPage(req, reply, prefix, q, 'custom_fields', fields, renderCustomField, extra);
  });

  app.get<IdParams>('/api/v4/leads/pipelines/:id', async (req, reply) => {
    const id = parseId(req.params.id);
    const p = id === undefined ? undefined : state.pipelines.get(id);
    if (!p) return sendProblem(reply, 404, 'Pipeline not found');
    return sendHal(reply, renderPipeline(p, linkBase(req, prefix).api));
  });

  app.get<IdParams>('/api/v4/leads/pipelines/:id/statuses', async (req, reply) => {
    const id = parseId(req.params.id);
    const p = id === undefined ? undefined : state.pipelines.get(id);
    if (!p) return sendProblem(reply, 404, 'Pipeline not found');
    const rendered = renderPipeline(p, linkBase(req, prefix).api);
    const embedded = rendered._embedded;
    return sendHal(reply, { _total_items: p.statuses.length, _links: selfLink(linkBase(req, prefix).path), _embedded: embedded });
  });

  app.get('/api/v4/users', async (req, reply) => {
    if (!deps.usersEndpointAdmin) return sendProblem(reply, 403, 'Access denied: only administrators can list users');
    const q = new KommoQuery(rawQuery(req));
    const users = [...state.users.values()];
    const pp = pageParams(q);
    const extra = pp.ok ? { _total_items: users.length, _page_count: Math.max(1, Math.ceil(users.length / pp.limit)) } : {};
    return sendPage(req, reply, prefix, q, 'users', users, renderUser, extra);
  });

  app.get<IdParams>('/api/v4/users/:id', async (req, reply) => {
    if (!deps.usersEndpointAdmin) return sendProblem(reply, 403, 'Access denied: only administrators can read users');
    const id = parseId(req.params.id);
    const u = id === undefined ? undefined : state.users.get(id);
    if (!u) return sendProblem(reply, 404, 'User not found');
    return sendHal(reply, renderUser(u, linkBase(req, prefix).api));
  });

  app.get('/api/v4/account', async (req, reply) => {
    const base = linkBase(req, prefix);
    const created = Math.floor(Date.now() / 1000) - 86400 * 365;
    return sendHal(reply, {
      id: state.accountId,
      name: `${state.subdomain} (simulated)`,
      subdomain: state.subdomain,
      created_at: created,
      created_by: 0,
      updated_at: created,
      updated_by: 0,
      current_user_id: deps.tokenUserId(),
      country: 'US',
      currency: 'USD',
      currency_symbol: '$',
      customers_mode: 'disabled',
      is_unsorted_on: true,
      mobile_feature_version: 0,
      is_loss_reason_enabled: true,
      is_helpbot_enabled: false,
      is_technical_account: false,
      contact_name_display_order: 1,
      _links: selfLink(`${base.api}/api/v4/account`),
    });
  });
}

// ---- notes and tasks ----

function registerNotesAndTasks(app: FastifyInstance, deps: RouteDeps, prefix: string): void {
  const { state } = deps;

  for (const entity of ['leads', 'contacts'] as const) {
    const addNotes = async (req: Req, reply: Reply, entityIdFromPath?: number): Promise<Reply> => {
      const items = batchItems(req.body, reply);
      if (!items) return reply;
      const parsed = items.map((raw, i) => parseNoteItem(state, entity, raw, i, entityIdFromPath));
      if (rejectIfInvalid(reply, parsed)) return reply;
      const created = state.addNotes(entity, parsed.map((p) => p.write), deps.tokenUserId());
      const base = linkBase(req, prefix);
      return sendHal(reply, {
        _links: selfLink(base.path),
        _embedded: {
          notes: created.map((n, i) => ({
            id: n.id,
            entity_id: n.entity_id,
            request_id: parsed[i]?.requestId ?? String(i),
            _links: selfLink(`${base.api}/api/v4/${entity}/${n.entity_id}/notes/${n.id}`),
          })),
        },
      });
    };
    const listNotes = (req: Req, reply: Reply, entityId?: number): Reply => {
      const q = new KommoQuery(rawQuery(req));
      const entityIds = entityId !== undefined ? [entityId] : q.ints('filter[entity_id]');
      const types = q.list('filter[note_type]');
      const ids = q.ints('filter[id]');
      const from = q.int('filter[updated_at][from]');
      let notes = [...state.notes.values()].filter(
        (n) =>
          n.entity_type === entity &&
          (entityIds.length === 0 || entityIds.includes(n.entity_id)) &&
          (types.length === 0 || types.includes(n.note_type)) &&
          (ids.length === 0 || ids.includes(n.id)) &&
          (from === undefined || n.updated_at >= from),
      );
      if (q.one('order[id]') === 'desc' || q.one('order[updated_at]') === 'desc') notes = notes.reverse();
      return sendPage(req, reply, prefix, q, 'notes', notes, renderNote);
    };

    app.post(`/api/v4/${entity}/notes`, async (req, reply) => addNotes(req, reply));
    app.get(`/api/v4/${entity}/notes`, async (req, reply) => listNotes(req, reply));
    // POST /{entity}/{id}/notes is commonly cited but UNCONFIRMED (kommo.md); accepted here for tolerance.
    app.post<IdParams>(`/api/v4/${entity}/:id/notes`, async (req, reply) => {
      const id = parseId(req.params.id);
      if (id === undefined) return sendProblem(reply, 404, 'Not found');
      return addNotes(req, reply, id);
    });
    app.get<IdParams>(`/api/v4/${entity}/:id/notes`, async (req, reply) => {
      const id = parseId(req.params.id);
      const exists = id !== undefined && (entity === 'leads' ? state.leads.has(id) : state.contacts.has(id));
      if (!exists) return sendProblem(reply, 404, 'Not found');
      return listNotes(req, reply, id);
    });
  }

  app.post('/api/v4/tasks', async (req, reply) => {
    const items = batchItems(req.body, reply);
    if (!items) return reply;
    const parsed = items.map((raw, i) => parseTaskItem(state, raw, i, deps.tokenUserId()));
    if (rejectIfInvalid(reply, parsed)) return reply;
    const created = state.addTasks(parsed.map((p) => p.write), deps.tokenUserId());
    const base = linkBase(req, prefix);
    return sendHal(reply, {
      _links: selfLink(base.path),
      _embedded: {
        tasks: created.map((t, i) => ({ id: t.id, request_id: parsed[i]?.requestId ?? String(i), _links: selfLink(`${base.api}/api/v4/tasks/${t.id}`) })),
      },
    });
  });

  app.get('/api/v4/tasks', async (req, reply) => {
    const q = new KommoQuery(rawQuery(req));
    const entityIds = q.ints('filter[entity_id]');
    const entityTypes = q.list('filter[entity_type]');
    const completed = q.one('filter[is_completed]');
    const responsible = q.ints('filter[responsible_user_id]');
    const types = q.ints('filter[task_type]');
    const ids = q.ints('filter[id]');
    let tasks = [...state.tasks.values()].filter(
      (t) =>
        (entityIds.length === 0 || (t.entity_id !== null && entityIds.includes(t.entity_id))) &&
        (entityTypes.length === 0 || (t.entity_type !== null && entityTypes.includes(t.entity_type))) &&
        (completed === undefined || t.is_completed === (completed === '1' || completed === 'true')) &&
        (responsible.length === 0 || responsible.includes(t.responsible_user_id)) &&
        (types.length === 0 || types.includes(t.task_type_id)) &&
        (ids.length === 0 || ids.includes(t.id)),
    );
    const order = q.one('order[complete_till]');
    if (order) tasks = [...tasks].sort((a, b) => (order === 'desc' ? -1 : 1) * (a.complete_till - b.complete_till));
    return sendPage(req, reply, prefix, q, 'tasks', tasks, renderTask);
  });

  app.get<IdParams>('/api/v4/tasks/:id', async (req, reply) => {
    const id = parseId(req.params.id);
    const t = id === undefined ? undefined : state.tasks.get(id);
    if (!t) return sendProblem(reply, 404, 'Task not found');
    return sendHal(reply, renderTask(t, linkBase(req, prefix).api));
  });
}

// ---- webhooks ----

function registerWebhooks(app: FastifyInstance, deps: RouteDeps, prefix: string): void {
  const { hooks } = deps;

  app.get('/api/v4/webhooks', async (req, reply) => {
    const q = new KommoQuery(rawQuery(req));
    const dest = q.one('filter[destination]');
    const list = [...hooks.subscriptions.values()].filter((w) => dest === undefined || w.destination === dest);
    if (list.length === 0) return sendNoContent(reply);
    return sendHal(reply, { _total_items: list.length, _links: selfLink(linkBase(req, prefix).path), _embedded: { webhooks: list.map(renderWebhook) } });
  });

  app.post('/api/v4/webhooks', async (req, reply) => {
    const body = req.body;
    if (!isRecord(body)) return sendProblem(reply, 400, 'Request data can not be empty');
    const errors: ItemErrors['errors'] = [];
    const destination = typeof body.destination === 'string' ? body.destination : '';
    if (!/^https?:\/\/\S+$/.test(destination)) errors.push({ code: 'InvalidValue', path: 'destination', detail: 'This value is not a valid URL.' });
    const settings = Array.isArray(body.settings) ? body.settings : [];
    if (settings.length === 0) errors.push({ code: 'NotBlank', path: 'settings', detail: 'This value should not be blank' });
    settings.forEach((s, i) => {
      if (typeof s !== 'string' || !KNOWN_EVENTS.has(s)) errors.push({ code: 'NotSupportedChoice', path: `settings.${i}`, detail: 'The value you selected is not a valid choice.' });
    });
    const sort = body.sort;
    if (sort !== undefined && (typeof sort !== 'number' || !Number.isInteger(sort))) errors.push({ code: 'InvalidType', path: 'sort', detail: 'This value should be of type int' });
    if (errors.length > 0) return sendValidationErrors(reply, [{ request_id: requestIdOf(body, 0), errors }]);
    if (!hooks.subscriptions.has(destination) && hooks.subscriptions.size >= 100) {
      return sendProblem(reply, 400, 'An account can have at most 100 webhooks');
    }
    const hook = hooks.subscribe(destination, settings.filter((s): s is string => typeof s === 'string'), deps.tokenUserId(), typeof sort === 'number' ? sort : undefined);
    return sendHal(reply, renderWebhook(hook), 201);
  });

  app.delete('/api/v4/webhooks', async (req, reply) => {
    const body = req.body;
    if (!isRecord(body) || typeof body.destination !== 'string' || body.destination === '') {
      return sendValidationErrors(reply, [{ request_id: '0', errors: [{ code: 'NotBlank', path: 'destination', detail: 'This value should not be blank' }] }]);
    }
    hooks.unsubscribe(body.destination);
    return sendNoContent(reply);
  });
}

// ---- events ----

/** Kommo's events API answers at most 100 per page (the RU docs; the EN page says 250: kommo.md). */
const EVENTS_LIMIT = 100;

/**
 * GET /api/v4/events (kommo.md "Events: polling"): filters by type, entity, entity id, author and
 * `created_at` (one timestamp = since then, or [from]/[to]); newest first (Kommo's order is
 * unconfirmed: clients must not rely on it); 204 when nothing matches.
 */
function registerEvents(app: FastifyInstance, deps: RouteDeps, prefix: string): void {
  const { state } = deps;
  app.get('/api/v4/events', async (req, reply) => {
    const q = new KommoQuery(rawQuery(req));
    const limit = q.int('limit') ?? DEFAULT_EVENTS_LIMIT;
    if (limit > EVENTS_LIMIT) return sendProblem(reply, 400, `limit must be at most ${EVENTS_LIMIT}`);
    const types = q.list('filter[type]');
    const entities = q.list('filter[entity]');
    const entityIds = q.ints('filter[entity_id]');
    const authors = q.ints('filter[created_by]');
    const since = q.int('filter[created_at]') ?? q.int('filter[created_at][from]');
    const until = q.int('filter[created_at][to]');
    const events = state.events.filter((e) =>
      (types.length === 0 || types.includes(e.type)) &&
      (entities.length === 0 || entities.includes(e.entity_type)) &&
      (entityIds.length === 0 || entityIds.includes(e.entity_id)) &&
      (authors.length === 0 || authors.includes(e.created_by)) &&
      (since === undefined || e.created_at >= since) &&
      (until === undefined || e.created_at <= until)).reverse();
    return sendPage(req, reply, prefix, q, 'events', events, (e, api) => ({ ...e, _links: selfLink(`${api}/api/v4/events/${e.id}`) }));
  });
}

const DEFAULT_EVENTS_LIMIT = 50;

function rawQuery(req: Req): string {
  const i = req.url.indexOf('?');
  return i < 0 ? '' : req.url.slice(i + 1);
}

