/**
 * The Fastify app: webhooks (intake), health probes, metrics, and the admin API + dashboard when
 * given. One error handler turns every failure into `{"error", "message"}` and hides internals.
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Metrics } from '../observability/metrics.js';
import { maskWebhookUrl } from '../observability/logger.js';
import type { Store } from '../store/store.js';
import { errorBody, HttpError } from './errors.js';
import { lazyRequestLogger } from './request-logger.js';
import { intakePlugin, type IntakeOptions } from './webhooks.js';

export interface AppOptions {
  log: Logger;
  store: Store;
  metrics: Metrics;
  bodyLimit: number;
  metricsToken?: string;
  intake?: IntakeOptions;
  /** Extra routes (admin API, dashboard), registered in their own plugin scope. */
  admin?: (app: FastifyInstance) => Promise<void>;
  /**
   * What `/readyz` reports besides the store: accounts whose Kommo work is paused (refused
   * credentials). Intake still stores their webhooks, so the service stays ready (200).
   */
  degraded?: () => Array<{ account: string; reason: string; since: number }>;
}

export async function buildApp(o: AppOptions): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: o.log as FastifyBaseLogger,
    bodyLimit: o.bodyLimit,
    // Per-request log lines at 5,000 webhooks/s would cost more than the work; errors are still logged.
    logController: new LogController({ disableRequestLogging: true }),
    childLoggerFactory: lazyRequestLogger,
  });

  app.setErrorHandler((err: FastifyError | HttpError, req, reply) => {
    const source = (req.params as { source?: string } | undefined)?.source ?? 'other';
    if (err instanceof HttpError) {
      o.metrics.webhookRequests.inc({ source, status: String(err.status) });
      if (err.status >= 500) req.log.warn({ url: maskWebhookUrl(req.url), code: err.code }, err.message);
      return reply.code(err.status).send(errorBody(err.code, err.message));
    }
    const status = typeof err.statusCode === 'number' ? err.statusCode : 500;
    if (status >= 400 && status < 500) {
      o.metrics.webhookRequests.inc({ source, status: String(status) });
      const code = err.code === 'FST_ERR_CTP_BODY_TOO_LARGE' ? 'body_too_large'
        : err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' ? 'unsupported_media_type'
        : err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' ? 'empty_body'
        : 'bad_request';
      const message = code === 'body_too_large' ? `body is larger than the limit of ${o.bodyLimit} bytes` : err.message;
      return reply.code(status).send(errorBody(code, message));
    }
    o.metrics.webhookRequests.inc({ source, status: '500' });
    req.log.error({ err, url: maskWebhookUrl(req.url) }, 'request failed');
    return reply.code(500).send(errorBody('internal_error', 'internal error; the request was not processed, please retry'));
  });
  app.setNotFoundHandler((req, reply) => reply.code(404).send(errorBody('not_found', `no route for ${req.method} ${maskWebhookUrl(req.url)}`)));

  app.get('/healthz', async () => ({ ok: true }));
  app.get('/readyz', async (_req, reply) => {
    try {
      await o.store.ping();
      const paused = o.degraded?.() ?? [];
      return paused.length ? { ok: true, store: o.store.kind, status: 'degraded', paused } : { ok: true, store: o.store.kind };
    } catch (err) {
      return reply.code(503).send(errorBody('store_unavailable', err instanceof Error ? err.message : String(err)));
    }
  });
  app.get('/metrics', async (req, reply) => {
    if (o.metricsToken && req.headers.authorization !== `Bearer ${o.metricsToken}`) {
      throw new HttpError(401, 'unauthorized', 'metrics need the Bearer token from server.metricsToken');
    }
    return reply.type(o.metrics.registry.contentType).send(await o.metrics.registry.metrics());
  });

  if (o.intake) await app.register(intakePlugin, o.intake);
  if (o.admin) await app.register(o.admin);
  return app;
}
