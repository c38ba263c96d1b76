/** What most commands start with: the config (validated) and the store it names. */
import { defaultConfigPath, loadConfigFile, type LoadedConfig } from '../config/load.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';

export function loadConfig(file?: string): LoadedConfig {
  return loadConfigFile(file ?? defaultConfigPath());
}

export async function withStore<T>(file: string | undefined, fn: (store: Store, loaded: LoadedConfig) => Promise<T>): Promise<T> {
  const loaded = loadConfig(file);
  const store = await openStore(loaded.config.store);
  try {
    return await fn(store, loaded);
  } finally {
    await store.close();
  }
}
