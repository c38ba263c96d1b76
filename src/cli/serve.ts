/** `kommo-sync serve`: intake + router + workers + dashboard in one process. */
import { createLogger } from '../observability/logger.js';
import { secretRedactPaths } from '../runtime/secrets.js';
import { startService } from '../runtime/service.js';
import { listenPort, loadConfig } from './context.js';
import { stopWithin, untilStopped } from './signals.js';

export async function serve(o: { config?: string; port?: number }): Promise<void> {
  const loaded = loadConfig(o.config);
  const port = listenPort(loaded, o.port);
  const log = createLogger({ ...loaded.config.log, redact: secretRedactPaths() });
  for (const warning of loaded.warnings) log.warn(warning);
  const service = await startService({ loaded, log, intake: true, work: true, port });
  log.info({ url: service.url, store: service.store.kind, accounts: [...service.accounts.keys()] }, 'kommo-sync is running');
  const stop = await untilStopped();
  log.info({ reason: stop.reason }, 'shutting down: no new webhooks; finishing deliveries in flight');
  await stopWithin(service, log, loaded.config.worker.shutdownTimeout);
}
