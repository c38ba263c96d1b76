/** What most commands start with: the config (validated) and the store it names. */
import { defaultConfigPath, loadConfigFile, loadStoreConfigFile, type LoadedConfig, type StoreConfig } from '../config/load.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';
import { UsageError } from './errors.js';

export function loadConfig(file?: string): LoadedConfig {
  return loadConfigFile(file ?? defaultConfigPath());
}

/**
 * For commands that only read and change the store (`status`, `replay`): loads `store` and the
 * account and destination names, without needing the vendors' secrets in the environment.
 */
export async function withStore<T>(file: string | undefined, fn: (store: Store, cfg: StoreConfig) => Promise<T>): Promise<T> {
  const cfg = loadStoreConfigFile(file ?? defaultConfigPath());
  const store = await openStore(cfg.store);
  try {
    return await fn(store, cfg);
  } finally {
    await store.close();
  }
}

/**
 * The port `serve` listens on: `--port`, else `server.port` when the file sets it, else `PORT`
 * (what every PaaS sets), else the schema's default (8080).
 */
export function listenPort(loaded: LoadedConfig, flag: number | undefined, env: NodeJS.ProcessEnv = process.env): number {
  if (flag !== undefined) return flag;
  if (loaded.has(['server', 'port'])) return loaded.config.server.port;
  const fromEnv = env.PORT;
  if (fromEnv !== undefined && fromEnv !== '') {
    const n = Number(fromEnv);
    if (!/^\d+$/.test(fromEnv.trim()) || n > 65535) throw new UsageError(`PORT: expected a port number 0-65535, got "${fromEnv}"`);
    return n;
  }
  return loaded.config.server.port;
}
