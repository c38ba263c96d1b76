/** `kommo-sync replay`: puts dead-lettered jobs back in the queue (a running worker picks them up). */
import { withStore } from './context.js';

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
    if (Number.isNaN(since)) throw new Error(`--since: expected a date like 2026-11-20 or 2026-11-20T10:00:00Z, got "${o.since}"`);
  }
  await withStore(o.config, async (store, loaded) => {
    let destination = o.destination;
    if (destination && !destination.includes('/')) {
      const accounts = Object.keys(loaded.config.accounts);
      if (accounts.length > 1) throw new Error(`--destination: several accounts are configured (${accounts.join(', ')}); write it as account/name`);
      destination = `${accounts[0]}/${destination}`;
    }
    const n = await store.requeueJobs({ state: 'dead', destination, since });
    process.stdout.write(`${n} dead-lettered job${n === 1 ? '' : 's'} re-queued${destination ? ` for ${destination}` : ''}. A running serve or worker process delivers them now.\n`);
  });
}
