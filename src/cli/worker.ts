/** `kommo-sync worker`: router + workers without HTTP, for scale-out on PostgreSQL. */
import { createLogger } from '../observability/logger.js';
import { secretRedactPaths } from '../runtime/secrets.js';
import { startService } from '../runtime/service.js';
import { loadConfig } from './context.js';
import { untilSignal } from './signals.js';

export async function worker(o: { config?: string }): Promise<void> {
  const loaded = loadConfig(o.config);
  const log = createLogger({ ...loaded.config.log, redact: secretRedactPaths() });
  for (const warning of loaded.warnings) log.warn(warning);
  if (loaded.config.store.startsWith('sqlite:')) {
    log.warn('worker on SQLite: the Kommo rate limit and the OAuth lock are per process, so do not run it next to `serve` on the same file; use PostgreSQL to run several processes');
  }
  const service = await startService({ loaded, log, intake: false, work: true });
  log.info({ worker: service.worker?.id, store: service.store.kind }, 'worker is running');
  await untilSignal();
  log.info('shutting down: finishing deliveries in flight');
  await service.close();
}
