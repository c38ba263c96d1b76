/**
 * pino, JSON by default and readable lines in a terminal. Secrets never reach a log line: auth
 * headers are redacted, webhook URLs have their secret path segment masked, and the caller adds the
 * paths of every secret the config schemas mark (runtime/secrets.ts derives them).
 */
import pino, { type Logger } from 'pino';

export type { Logger };

export interface LoggerOptions {
  level?: string;
  /** Human-readable output (default: when stdout is a terminal). */
  pretty?: boolean;
  /** Write here instead of stdout (tests capture logs to assert no secret leaks). */
  destination?: pino.DestinationStream;
  /** More pino redact paths: the config's secret keys and the inbound auth headers. */
  redact?: readonly string[];
}

/** Credentials any HTTP request or response may carry, whatever the config holds. */
export const BASE_REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'headers.Authorization',
];

export function createLogger(opts: LoggerOptions = {}): Logger {
  const base: pino.LoggerOptions = {
    level: opts.level ?? 'info',
    redact: { paths: [...new Set([...BASE_REDACT_PATHS, ...(opts.redact ?? [])])], censor: '[redacted]' },
    serializers: { req: serializeRequest },
  };
  if (opts.destination) return pino(base, opts.destination);
  const pretty = opts.pretty ?? Boolean(process.stdout.isTTY);
  if (pretty) {
    return pino({ ...base, transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' } } });
  }
  return pino(base);
}

/**
 * `/webhooks/acme/kommo/<secret>` -> `/webhooks/acme/kommo/***`, `?token=<admin token>` ->
 * `?token=***`: both are credentials.
 */
export function maskWebhookUrl(url: string): string {
  return url.replace(/^(\/webhooks\/[^/]+\/[^/]+\/)[^/?#]+/, '$1***').replace(/([?&]token=)[^&#]*/gi, '$1***');
}

function serializeRequest(req: { method?: string; url?: string; ip?: string; id?: unknown }): Record<string, unknown> {
  return { id: req.id, method: req.method, url: maskWebhookUrl(req.url ?? ''), ip: req.ip };
}
