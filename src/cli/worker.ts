/** `kommo-sync worker`: router + workers without HTTP, for scale-out on PostgreSQL. */
import { createLogger } from '../observability/logger.js';
import { secretRedactPaths } from '../runtime/secrets.js';
import { startService } from '../runtime/service.js';
import { loadConfig } from './context.js';
import { UsageError } from './errors.js';
import { stopWithin, untilStopped } from './signals.js';

export async function worker(o: { config?: string }): Promise<void> {
  const loaded = loadConfig(o.config);
  // On SQLite, `serve` runs the router and workers itself and, at start, takes back every job left
  // claimed: that is only safe when no other process holds claims in the same file.
  if (loaded.config.store.startsWith('sqlite:')) {
    throw new UsageError(
      `worker: refusing to run on SQLite (${loaded.file}: store ${loaded.config.store}). With SQLite, \`kommo-sync serve\` must be the only process using the database: ` +
      'it routes and delivers by itself, and takes back every claimed job when it starts. To run workers in separate processes, use PostgreSQL (store: postgres://...; see docs/deployment.md).',
    );
  }
  const log = createLogger({ ...loaded.config.log, redact: secretRedactPaths() });
  for (const warning of loaded.warnings) log.warn(warning);
  const service = await startService({ loaded, log, intake: false, work: true });
  log.info({ worker: service.worker?.id, store: service.store.kind }, 'worker is running');
  const stop = await untilStopped();
  log.info({ reason: stop.reason }, 'shutting down: finishing deliveries in flight');
  await stopWithin(service, log, loaded.config.worker.shutdownTimeout);
}
