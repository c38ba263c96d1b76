/** `kommo-sync replay`: puts dead-lettered jobs back in the queue (a running worker picks them up). */
import type { StoreConfig } from '../config/load.js';
import { withStore } from './context.js';
import { UsageError } from './errors.js';

export async function replay(o: { config?: string; dead?: boolean; inbox?: boolean; destination?: string; since?: string }): Promise<void> {
  if (o.inbox) {
    await withStore(o.config, async (store) => {
      const n = await store.requeueInbox();
      process.stdout.write(`${n} failed inbox event${n === 1 ? '' : 's'} re-queued for routing.\n`);
    });
    return;
  }
  let since: number | undefined;
  if (o.since) {
    since = Date.parse(o.since);
    if (Number.isNaN(since)) throw new UsageError(`--since: expected a date like 2026-11-20 or 2026-11-20T10:00:00Z, got "${o.since}"`);
  }
  await withStore(o.config, async (store, cfg) => {
    const destination = o.destination === undefined ? undefined : destinationKey(o.destination, cfg);
    const n = await store.requeueJobs({ state: 'dead', destination, since });
    process.stdout.write(`${n} dead-lettered job${n === 1 ? '' : 's'} re-queued${destination ? ` for ${destination}` : ''}. A running serve or worker process delivers them now.\n`);
  });
}

/**
 * `cio` or `acme/cio` -> the queue's `acme/cio`. An unknown name is an error naming the known ones
 * (each account's destinations, and `kommo` for its Kommo writes): a typo would re-queue nothing.
 */
export function destinationKey(given: string, cfg: StoreConfig): string {
  const known = Object.entries(cfg.accounts).flatMap(([account, names]) => [...names, 'kommo'].map((n) => `${account}/${n}`));
  const accounts = Object.keys(cfg.accounts);
  let key = given;
  if (!given.includes('/')) {
    if (accounts.length > 1) throw new UsageError(`--destination: several accounts are configured (${accounts.join(', ')}); write it as account/name, one of: ${known.join(', ')}`);
    key = `${accounts[0] ?? ''}/${given}`;
  }
  if (!known.includes(key)) {
    throw new UsageError(`--destination: no destination "${given}" in ${cfg.file}; expected one of: ${known.join(', ') || '(no accounts configured)'}`);
  }
  return key;
}
