/** `kommo-sync serve`: intake + router + workers + dashboard in one process. */
import { createLogger } from '../observability/logger.js';
import { secretRedactPaths } from '../runtime/secrets.js';
import { startService } from '../runtime/service.js';
import { loadConfig } from './context.js';
import { untilSignal } from './signals.js';

export async function serve(o: { config?: string; port?: number }): Promise<void> {
  const loaded = loadConfig(o.config);
  const log = createLogger({ ...loaded.config.log, redact: secretRedactPaths() });
  for (const warning of loaded.warnings) log.warn(warning);
  const service = await startService({ loaded, log, intake: true, work: true, ...(o.port !== undefined ? { port: o.port } : {}) });
  log.info({ url: service.url, store: service.store.kind, accounts: [...service.accounts.keys()] }, 'kommo-sync is running');
  await untilSignal();
  log.info('shutting down: finishing deliveries in flight');
  await service.close();
}
