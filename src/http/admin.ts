/**
 * The dashboard: its page (`/`, `/login`), its assets (`/assets/*`) and its JSON API (`/api/*`).
 *
 * Guarded by the admin token (KOMMO_SYNC_ADMIN_TOKEN or server.adminToken; see admin-auth.ts for
 * sessions, CSRF and the headers), or open on loopback only (the demo). What only the running
 * service knows (breakers, pauses, the rate budget, backfill and reconciliation, the catalog, "test
 * connection") comes in as callbacks from runtime/, so this layer imports nothing above it.
 */
import { readFileSync } from 'node:fs';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { JobState, Store } from '../store/store.js';
import { AdminAuth, SECURITY_HEADERS, type Principal } from './admin-auth.js';
import type { CheckResponse, ConfigResponse, DashboardDestination, EventsResponse, LeadMatch, OperationsView, OverviewResponse, SessionResponse } from './admin-types.js';
import { eventDetail, eventRows, failures, groupIds, leadTimeline, overview, SeriesCache, type LiveState, type StageName } from './admin-views.js';
import { HttpError } from './errors.js';
import { dashboardAssets } from './web-assets.js';

export type { DashboardDestination } from './admin-types.js';
export type { LiveState } from './admin-views.js';

export interface AdminOptions {
  store: Store;
  /** Undefined: no token needed (only allowed when listening on loopback). */
  token?: string;
  /** Every destination of every account, plus each account's Kommo. */
  destinations: DashboardDestination[];
  /** Breakers, pauses, rate budgets of this process. */
  live?: () => LiveState;
  /** Each account's latest backfill and the reconciliation's last run (read from the store). */
  operations?: () => Promise<OperationsView>;
  /** `kommo.reconcile` per account (ms; 0: off), so the overview can tell "off" from "not run yet". */
  reconcileEveryMs?: Record<string, number>;
  /** The effective config (secrets masked), names resolved, webhook URLs. */
  config?: (origin: string) => Promise<ConfigResponse>;
  /**
   * "Test connection": resolves when the destination (`account/name`) answers, throws why not. It
   * resolves with what to say instead of "credentials accepted" when the vendor cannot verify them.
   */
  checkConnection?: (key: string) => Promise<string | void>;
  /** Leads by name in Kommo (its search); by id and email the local log answers. */
  searchLeads?: (account: string, text: string) => Promise<LeadMatch[]>;
  /** Leads known for an email (the email -> lead index). */
  leadsByEmail?: (account: string, email: string) => Promise<number[]>;
  stageName?: StageName;
  /** Every secret value of the config: scrubbed from any answer, should one ever slip into data. */
  secrets?: string[];
  /** Cookies get `Secure` (server.publicUrl is https). */
  secureCookies?: boolean;
  /** Receives the auth helper, e.g. so the demo can print a one-time login link. */
  onAuth?: (auth: AdminAuth) => void;
}

const WEB = new URL('../web/', import.meta.url);
const OVERVIEW_TTL_MS = 1_000;
const STREAM_EVERY_MS = 2_000;

const id = z.coerce.number().int().positive();
const optText = z.string().trim().min(1).max(300).optional();

const jobsQuery = z.object({
  state: z.enum(['pending', 'leased', 'done', 'dead']).optional(),
  destination: z.string().optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
});
const deliveriesQuery = z.object({
  destination: z.string().optional(),
  subject: z.string().optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
});
const eventsQuery = z.object({
  account: optText,
  source: optText,
  destination: optText,
  kind: optText,
  status: z.enum(['pending', 'routed', 'failed', 'unrouted', 'dead']).optional(),
  email: optText,
  lead: id.optional(),
  before: id.optional(),
  limit: z.coerce.number().int().min(1).max(200).default(50),
}).strict();
const leadSearch = z.object({ q: z.string().trim().min(1).max(200), account: optText }).strict();
const group = z.object({ destination: z.string().min(1), reason: z.string().min(1) }).strict();
const replayBody = z.object({
  destination: z.string().optional(),
  ids: z.array(z.number().int()).max(10_000).optional(),
  group: group.optional(),
}).strict();
const discardBody = z.object({
  ids: z.array(z.number().int()).max(10_000).optional(),
  group: group.optional(),
  reason: z.string().trim().min(1, 'say why it is discarded').max(500),
}).strict().refine((b) => Boolean(b.ids) !== Boolean(b.group), 'give ids or group');
const inboxReplayBody = z.object({ ids: z.array(z.number().int()).min(1).max(1_000) }).strict();
const checkBody = z.object({ destination: z.string().min(1) }).strict();
const loginBody = z.object({ token: z.string().max(1_000) });

function parse<T>(schema: z.ZodType<T>, value: unknown): T {
  const r = schema.safeParse(value);
  if (!r.success) throw new HttpError(400, 'invalid_request', r.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '));
  return r.data;
}

/** Replaces every occurrence of a secret value in `text`. */
export function scrubber(secrets: readonly string[]): (text: string) => string {
  // Short values would garble ordinary text and are no real secrets anyway.
  const list = [...new Set(secrets.filter((s) => s.length >= 6))].sort((a, b) => b.length - a.length);
  if (list.length === 0) return (t) => t;
  return (text) => {
    let out = text;
    for (const s of list) if (out.includes(s)) out = out.split(s).join('********');
    return out;
  };
}

export function adminRoutes(o: AdminOptions) {
  return async (app: FastifyInstance): Promise<void> => {
    const auth = new AdminAuth(o.token, { secureCookies: o.secureCookies ?? false });
    o.onAuth?.(auth);
    const scrub = scrubber([...(o.secrets ?? []), ...(o.token ? [o.token] : [])]);
    const page = (name: string) => readFileSync(new URL(name, WEB), 'utf8');
    const indexHtml = page('index.html');
    const loginHtml = page('login.html');
    const series = new SeriesCache();
    let cached: { at: number; value: Promise<OverviewResponse> } | null = null;
    const currentOverview = (): Promise<OverviewResponse> => {
      const now = Date.now();
      if (!cached || now - cached.at > OVERVIEW_TTL_MS) {
        const ops = o.operations ? { read: o.operations, reconcileEveryMs: o.reconcileEveryMs ?? {} } : undefined;
        const value = overview(o.store, series, o.destinations, o.live?.() ?? { paused: [], breakers: [], kommo: [] }, now, ops);
        cached = { at: now, value };
        value.catch(() => {
          if (cached?.value === value) cached = null;
        });
      }
      return cached.value;
    };
    const streams = new Set<{ end(): void }>();

    app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => {
      done(null, Object.fromEntries(new URLSearchParams(String(body))));
    });

    app.addHook('onRequest', async (req) => {
      // The token never travels in a URL: a link carrying one is refused, whether right or wrong.
      if (new URL(req.url, 'http://x').searchParams.has('token')) {
        throw new HttpError(401, 'unauthorized', 'the admin token is not accepted in the URL: log in on /login, or send Authorization: Bearer <token>');
      }
      const problem = auth.hostProblem(req);
      if (problem) throw new HttpError(403, 'forbidden_host', problem);
    });
    app.addHook('onSend', async (req, reply, payload) => {
      for (const [name, value] of Object.entries(SECURITY_HEADERS)) reply.header(name, value);
      if (!req.url.startsWith('/assets/')) reply.header('cache-control', 'no-store');
      return typeof payload === 'string' ? scrub(payload) : payload;
    });
    app.addHook('preClose', async () => {
      for (const s of streams) s.end();
    });

    const need = (req: FastifyRequest): Principal => {
      const p = auth.identify(req);
      if (!p) throw new HttpError(401, 'unauthorized', 'log in on /login, or send Authorization: Bearer <KOMMO_SYNC_ADMIN_TOKEN>');
      return p;
    };
    const act = (req: FastifyRequest): Principal => {
      const p = need(req);
      const problem = auth.csrfProblem(req, p);
      if (problem) throw new HttpError(403, 'csrf', problem);
      return p;
    };
    const knownDestination = (key: string) => {
      if (!o.destinations.some((d) => d.key === key)) throw new HttpError(404, 'unknown_destination', `no destination "${key}"; expected one of ${o.destinations.map((d) => d.key).join(', ')}`);
    };

    // ----- pages -----

    app.get('/', async (req, reply) => {
      if (!auth.identify(req)) return reply.code(303).header('location', '/login').send();
      return reply.type('text/html; charset=utf-8').send(indexHtml);
    });
    app.get('/login', async (req, reply) => {
      if (auth.open || auth.identify(req)) return reply.code(303).header('location', '/').send();
      const q = req.query as { failed?: string; wait?: string };
      const message = q.wait !== undefined ? 'Too many failed logins from this address: wait a minute.' : q.failed !== undefined ? 'That token is not the admin token.' : null;
      return reply.type('text/html; charset=utf-8').send(loginHtml.replace('<!--message-->', message ? `<p class="login-error" role="alert">${message}</p>` : ''));
    });
    app.post('/login', async (req, reply) => {
      if (auth.open) return reply.code(303).header('location', '/').send();
      const origin = req.headers.origin;
      if (origin !== undefined && auth.csrfProblem(req, { via: 'bearer', nonce: '', expiresAt: null })) throw new HttpError(403, 'csrf', `a login from ${origin} is not accepted`);
      if (auth.throttled(req.ip)) return reply.code(303).header('location', '/login?wait').send();
      const { token } = parse(loginBody, req.body ?? {});
      if (!auth.tokenMatches(token)) {
        auth.recordFailure(req.ip);
        return reply.code(303).header('location', '/login?failed').send();
      }
      auth.setSessionCookie(reply, req);
      return reply.code(303).header('location', '/').send();
    });
    // The demo's one-time link: the code is spent here and the address bar is left clean.
    app.get('/login/link/:code', async (req, reply) => {
      const { code } = req.params as { code: string };
      if (auth.open) return reply.code(303).header('location', '/').send();
      if (!auth.redeemCode(code)) return reply.code(303).header('location', '/login?failed').send();
      auth.setSessionCookie(reply, req);
      return reply.code(303).header('location', '/').send();
    });
    app.post('/logout', async (req, reply) => {
      const p = auth.identify(req);
      if (p && p.via === 'cookie') {
        const problem = auth.csrfProblem(req, p);
        if (problem) throw new HttpError(403, 'csrf', problem);
      }
      auth.clearSessionCookie(reply, req);
      return reply.code(303).header('location', auth.open ? '/' : '/login').send();
    });
    app.get('/assets/:name', async (req, reply) => {
      const { name } = req.params as { name: string };
      const asset = (await dashboardAssets()).get(name);
      if (!asset) throw new HttpError(404, 'not_found', `no asset ${name}`);
      return reply.type(asset.type).header('cache-control', 'no-cache').send(asset.body);
    });

    // ----- read API -----

    app.get('/api/session', async (req): Promise<SessionResponse> => {
      const p = need(req);
      return { csrf: auth.csrfFor(p), mode: p.via === 'open' ? 'open' : 'token', expiresAt: p.expiresAt };
    });
    app.get('/api/status', async (req) => {
      need(req);
      const now = Date.now();
      return { now, stats: await o.store.stats(now), destinations: o.destinations.map((d) => ({ key: d.key, type: d.type })) };
    });
    app.get('/api/overview', async (req) => {
      need(req);
      return currentOverview();
    });
    app.get('/api/stream', async (req, reply) => {
      need(req);
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
      let closed = false;
      const send = () => {
        currentOverview().then(
          (v) => {
            if (!closed) res.write(`event: overview\ndata: ${scrub(JSON.stringify(v))}\n\n`);
          },
          () => {
            if (!closed) res.write(': the store did not answer\n\n');
          },
        );
      };
      const timer = setInterval(send, STREAM_EVERY_MS);
      const stream = {
        end: () => {
          if (closed) return;
          closed = true;
          clearInterval(timer);
          streams.delete(stream);
          res.end();
        },
      };
      streams.add(stream);
      req.raw.on('close', stream.end);
      res.write('retry: 3000\n\n');
      send();
    });
    app.get('/api/events', async (req): Promise<EventsResponse> => {
      need(req);
      const q = parse(eventsQuery, req.query);
      const status = q.status;
      const rows = await o.store.listInbox({
        ...(q.account ? { account: q.account } : {}),
        ...(q.source ? { source: q.source } : {}),
        ...(q.destination ? { destination: q.destination } : {}),
        ...(q.kind ? { kind: q.kind } : {}),
        ...(status === 'pending' || status === 'routed' || status === 'failed' ? { state: status } : {}),
        ...(status === 'unrouted' ? { unrouted: true } : {}),
        ...(status === 'dead' ? { jobState: 'dead' as JobState } : {}),
        ...(q.email ? { email: q.email.toLowerCase() } : {}),
        ...(q.lead !== undefined ? { leadId: q.lead } : {}),
        ...(q.before !== undefined ? { before: q.before } : {}),
        limit: q.limit,
      });
      return { events: await eventRows(o.store, rows), next: rows.length === q.limit ? rows[rows.length - 1]!.id : null };
    });
    app.get('/api/events/:id', async (req) => {
      need(req);
      const detail = await eventDetail(o.store, parse(id, (req.params as { id: string }).id));
      if (!detail) throw new HttpError(404, 'not_found', 'no such event (pruned after the retention period?)');
      return detail;
    });
    app.get('/api/jobs', async (req) => {
      need(req);
      const q = parse(jobsQuery, req.query);
      return { jobs: await o.store.listJobs({ state: q.state as JobState | undefined, destination: q.destination, limit: q.limit }) };
    });
    app.get('/api/deliveries', async (req) => {
      need(req);
      const q = parse(deliveriesQuery, req.query);
      return { deliveries: await o.store.listDeliveries(q) };
    });
    app.get('/api/leads', async (req): Promise<{ leads: LeadMatch[] }> => {
      need(req);
      const q = parse(leadSearch, req.query);
      const accounts = q.account ? [q.account] : [...new Set(o.destinations.map((d) => d.account))];
      const found = new Map<string, LeadMatch>();
      const add = (m: LeadMatch) => found.has(`${m.account}/${m.leadId}`) || found.set(`${m.account}/${m.leadId}`, m);
      for (const account of accounts) {
        if (/^\d+$/.test(q.q)) {
          const rows = await o.store.listInbox({ account, leadId: Number(q.q), limit: 1 });
          add({ account, leadId: Number(q.q), name: null, email: rows[0]?.email ?? null, from: 'log' });
        } else if (q.q.includes('@')) {
          const email = q.q.toLowerCase();
          for (const leadId of (await o.leadsByEmail?.(account, email)) ?? []) add({ account, leadId, name: null, email, from: 'log' });
          for (const r of await o.store.listInbox({ account, email, limit: 50 })) if (r.leadId !== null) add({ account, leadId: r.leadId, name: null, email, from: 'log' });
        } else if (o.searchLeads) {
          try {
            for (const m of await o.searchLeads(account, q.q)) add(m);
          } catch (err) {
            throw new HttpError(502, 'kommo_unavailable', `Kommo's search did not answer: ${err instanceof Error ? err.message : String(err)}; search by lead id or email instead`);
          }
        }
      }
      return { leads: [...found.values()] };
    });
    app.get('/api/leads/:account/:lead', async (req) => {
      need(req);
      const p = req.params as { account: string; lead: string };
      return leadTimeline(o.store, p.account, parse(id, p.lead), o.stageName ?? (() => null));
    });
    app.get('/api/failures', async (req) => {
      need(req);
      return failures(o.store, null);
    });
    app.get('/api/config', async (req, reply: FastifyReply) => {
      need(req);
      if (!o.config) throw new HttpError(404, 'not_available', 'this process has no configuration view');
      void reply;
      return o.config(`${req.protocol}://${req.headers.host ?? 'localhost'}`);
    });

    // ----- actions (CSRF-checked) -----

    app.post('/api/replay', async (req) => {
      act(req);
      const b = parse(replayBody, req.body ?? {});
      if (b.group) {
        knownDestination(b.group.destination);
        const ids = await groupIds(o.store, b.group.destination, b.group.reason);
        return { requeued: await o.store.requeueJobs({ ids, state: 'dead' }) };
      }
      // Replays go through the normal queue: the jobs become pending and the worker takes them.
      const requeued = await o.store.requeueJobs({ state: b.ids ? undefined : 'dead', destination: b.destination, ids: b.ids });
      return { requeued };
    });
    app.post('/api/discard', async (req) => {
      act(req);
      const b = parse(discardBody, req.body ?? {});
      let ids = b.ids ?? [];
      if (b.group) {
        knownDestination(b.group.destination);
        ids = await groupIds(o.store, b.group.destination, b.group.reason);
      }
      return { discarded: await o.store.discardJobs(ids, b.reason) };
    });
    app.post('/api/events/replay', async (req) => {
      act(req);
      const b = parse(inboxReplayBody, req.body ?? {});
      return { requeued: await o.store.requeueInboxIds(b.ids) };
    });
    app.post('/api/check', async (req): Promise<CheckResponse> => {
      act(req);
      const b = parse(checkBody, req.body ?? {});
      knownDestination(b.destination);
      if (!o.checkConnection) throw new HttpError(404, 'not_available', 'this process cannot test connections');
      const started = performance.now();
      try {
        const said = await o.checkConnection(b.destination);
        return { destination: b.destination, ok: true, message: said || 'credentials accepted', ms: Math.round(performance.now() - started) };
      } catch (err) {
        return { destination: b.destination, ok: false, message: err instanceof Error ? err.message : String(err), ms: Math.round(performance.now() - started) };
      }
    });
  };
}
