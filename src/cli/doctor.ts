/**
 * `kommo-sync doctor`: validates the config, then checks every credential and every name it uses
 * (stages, fields, lists) against the live APIs, and prints the webhook URLs to paste.
 */
import pino from 'pino';
import { getDestination } from '../destinations/index.js';
import { AccountRuntime } from '../runtime/account.js';
import { openStore } from '../store/open.js';
import { loadConfig } from './context.js';

export async function doctor(o: { config?: string }): Promise<void> {
  const loaded = loadConfig(o.config);
  const ok = (s: string) => process.stdout.write(`  ok    ${s}\n`);
  const bad = (s: string) => process.stdout.write(`  FAIL  ${s}\n`);
  process.stdout.write(`${loaded.file}: configuration is valid\n`);
  let failures = 0;
  const store = await openStore(loaded.config.store);
  ok(`store ${store.kind} reachable`);
  const log = pino({ level: 'silent' });
  const base = loaded.config.server.publicUrl ?? `http://<your-host>:${loaded.config.server.port}`;
  try {
    for (const [name, acct] of Object.entries(loaded.config.accounts)) {
      process.stdout.write(`\naccount ${name} (${acct.kommo.subdomain}.kommo.com)\n`);
      const rt = new AccountRuntime(name, acct, loaded.destinations[name] ?? [], loaded, store, log);
      try {
        const info = await rt.client.getAccount();
        ok(`Kommo credentials accepted (account "${info.name}", id ${info.id})`);
        await rt.init();
        ok(`stages, fields and lists named in the config exist (${rt.catalog.pipelines.length} pipelines)`);
        const hooks = await rt.client.getWebhooks();
        const ours = hooks?.filter((h) => h.destination.includes(`/webhooks/${name}/kommo/`)) ?? [];
        if (hooks === null) ok('webhook subscriptions not checked (needs an admin token)');
        else if (ours.length === 0) {
          failures++;
          bad('Kommo has no webhook pointing at kommo-sync yet: add the URL below in Settings > Integrations > Web hooks');
        } else if (ours.some((h) => h.disabled)) {
          failures++;
          bad('Kommo has DISABLED the webhook (too many failed deliveries): open it in Settings > Integrations > Web hooks and save to re-enable');
        } else ok(`Kommo sends webhooks to kommo-sync (${ours.map((h) => h.settings.join(', ')).join('; ')})`);
      } catch (err) {
        failures++;
        bad(err instanceof Error ? err.message : String(err));
      }
      for (const a of rt.active) {
        try {
          await a.dest.check(a.ctx);
          ok(`${a.cfg.name} (${a.cfg.type}) credentials accepted`);
        } catch (err) {
          failures++;
          bad(`${a.cfg.name} (${a.cfg.type}): ${err instanceof Error ? err.message : String(err)}`);
        }
      }
      process.stdout.write('  webhook URLs to paste:\n');
      process.stdout.write(`    Kommo (Settings > Integrations > Web hooks): ${base}/webhooks/${name}/kommo/${acct.kommo.webhookSecret}\n`);
      for (const d of loaded.destinations[name] ?? []) {
        if (getDestination(d.type)?.inbound && d.common.webhookSecret) process.stdout.write(`    ${d.name}: ${base}/webhooks/${name}/${d.name}/${d.common.webhookSecret}\n`);
        else if (getDestination(d.type)?.inbound) process.stdout.write(`    ${d.name}: set webhookSecret to receive its webhooks\n`);
      }
    }
  } finally {
    await store.close();
  }
  process.stdout.write(failures ? `\n${failures} problem${failures > 1 ? 's' : ''} found.\n` : '\nAll checks passed.\n');
  if (failures) process.exitCode = 1;
}
