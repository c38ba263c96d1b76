/**
 * Destination plugins: `KOMMO_SYNC_DESTINATIONS=/path/a.js,/path/b.js` loads destinations that do
 * not ship with kommo-sync before any command runs. Each module exports `destination` (or a
 * default export): one Destination or a list. They go through the same registry, so config
 * validation, doctor, the demo and the conformance suite treat them like built-in ones.
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { registerDestination } from '../destinations/index.js';
import type { Destination } from '../destinations/types.js';

export async function loadDestinationPlugins(list: string | undefined): Promise<string[]> {
  const loaded: string[] = [];
  for (const path of (list ?? '').split(',').map((p) => p.trim()).filter(Boolean)) {
    let mod: Record<string, unknown>;
    try {
      mod = (await import(pathToFileURL(resolve(path)).href)) as Record<string, unknown>;
    } catch (err) {
      throw new Error(`KOMMO_SYNC_DESTINATIONS: cannot load ${path}: ${err instanceof Error ? err.message : String(err)}`);
    }
    const exported = mod.destination ?? mod.default;
    const list = Array.isArray(exported) ? exported : [exported];
    if (!exported || !list.every(isDestination)) {
      throw new Error(`KOMMO_SYNC_DESTINATIONS: ${path} must export \`destination\` (a Destination or a list of them: type, settings, deliver, simulator, ...)`);
    }
    for (const d of list) {
      registerDestination(d);
      loaded.push(d.type);
    }
  }
  return loaded;
}

function isDestination(v: unknown): v is Destination {
  if (!v || typeof v !== 'object') return false;
  const d = v as Partial<Destination>;
  return typeof d.type === 'string' && typeof d.deliver === 'function' && typeof d.check === 'function' && typeof d.simulator === 'function' && d.settings !== undefined;
}
