/**
 * The dashboard's JSON API (`/api/*`) and its page (`/`). Guarded by the admin token
 * (KOMMO_SYNC_ADMIN_TOKEN or server.adminToken) unless the server listens on loopback only.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { JobState, Store } from '../store/store.js';
import { HttpError } from './errors.js';

export interface AdminOptions {
  store: Store;
  /** Undefined: no token needed (only allowed when listening on loopback). */
  token?: string;
  /** Destination keys (`account/name`) with their types, for the dashboard. */
  destinations: Array<{ key: string; type: string }>;
}

const DASHBOARD_HTML = new URL('../web/dashboard.html', import.meta.url);

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
const replayBody = z.object({
  destination: z.string().optional(),
  ids: z.array(z.number().int()).optional(),
}).strict();

export function adminRoutes(o: AdminOptions) {
  return async (app: FastifyInstance): Promise<void> => {
    const html = readFileSync(DASHBOARD_HTML, 'utf8');
    const guard = async (req: FastifyRequest) => {
      if (!o.token) return;
      const given = req.headers.authorization?.replace(/^Bearer\s+/i, '') ?? (req.query as { token?: string }).token ?? '';
      const a = createHash('sha256').update(given).digest();
      const b = createHash('sha256').update(o.token).digest();
      if (!timingSafeEqual(a, b)) throw new HttpError(401, 'unauthorized', 'the dashboard needs the admin token (Authorization: Bearer <KOMMO_SYNC_ADMIN_TOKEN>, or ?token=)');
    };
    const parse = <T>(schema: z.ZodType<T>, value: unknown): T => {
      const r = schema.safeParse(value);
      if (!r.success) throw new HttpError(400, 'invalid_request', r.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '));
      return r.data;
    };

    app.get('/', async (req, reply) => {
      await guard(req);
      return reply.type('text/html; charset=utf-8').send(html);
    });
    app.get('/api/status', async (req) => {
      await guard(req);
      const now = Date.now();
      return { now, stats: await o.store.stats(now), destinations: o.destinations };
    });
    app.get('/api/jobs', async (req) => {
      await guard(req);
      const q = parse(jobsQuery, req.query);
      return { jobs: await o.store.listJobs({ state: q.state as JobState | undefined, destination: q.destination, limit: q.limit }) };
    });
    app.get('/api/deliveries', async (req) => {
      await guard(req);
      const q = parse(deliveriesQuery, req.query);
      return { deliveries: await o.store.listDeliveries(q) };
    });
    app.post('/api/replay', async (req) => {
      await guard(req);
      const b = parse(replayBody, req.body ?? {});
      const requeued = await o.store.requeueJobs({ state: b.ids ? undefined : 'dead', destination: b.destination, ids: b.ids });
      return { requeued };
    });
  };
}
