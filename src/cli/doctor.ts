/**
 * `kommo-sync doctor`: validates the config, then checks every credential and every name it uses
 * (stages, fields, lists) against the live APIs, and prints the webhook URLs to paste.
 */
import pino from 'pino';
import { getDestination } from '../destinations/index.js';
import { AccountRuntime } from '../runtime/account.js';
import { openStore } from '../store/open.js';
import { listenPort, loadConfig } from './context.js';
import { checkKommoWebhook } from './kommo-webhook-check.js';

export async function doctor(o: { config?: string }): Promise<void> {
  const loaded = loadConfig(o.config);
  const ok = (s: string) => process.stdout.write(`  ok    ${s}\n`);
  const bad = (s: string) => process.stdout.write(`  FAIL  ${s}\n`);
  let failures = 0;
  const store = await openStore(loaded.config.store);
  const log = pino({ level: 'silent' });
  const base = loaded.config.server.publicUrl?.replace(/\/+$/, '') ?? `http://<your-host>:${listenPort(loaded, undefined)}`;
  try {
    // Building the runtimes compiles every mapping and template: a mistake there is a config
    // error like any other, reported before "configuration is valid".
    const runtimes = Object.entries(loaded.config.accounts).map(([name, acct]) => ({ name, acct, rt: new AccountRuntime(name, acct, loaded.destinations[name] ?? [], loaded, store, log) }));
    process.stdout.write(`${loaded.file}: configuration is valid\n`);
    ok(`store ${store.kind} reachable`);
    for (const { name, acct, rt } of runtimes) {
      process.stdout.write(`\naccount ${name} (${acct.kommo.subdomain}.kommo.com)\n`);
      try {
        const info = await rt.client.getAccount();
        ok(`Kommo credentials accepted (account "${info.name}", id ${info.id})`);
        await rt.init();
        ok(`stages, fields and lists named in the config exist (${rt.catalog.pipelines.length} pipelines)`);
        const hooks = await rt.client.getWebhooks();
        if (hooks === null) ok('webhook subscriptions not checked (needs an admin token)');
        else {
          const v = checkKommoWebhook(hooks, { account: name, secret: acct.kommo.webhookSecret, ...(loaded.config.server.publicUrl ? { publicUrl: loaded.config.server.publicUrl } : {}) });
          if (v.state === 'ok') ok(`Kommo sends webhooks to kommo-sync (${v.hook.settings.join(', ')})${v.hostChecked ? '' : '; its host is not checked: set server.publicUrl'}`);
          else {
            failures++;
            if (v.state === 'missing') bad('Kommo has no webhook pointing at kommo-sync yet: add the URL below in Settings > Integrations > Web hooks');
            else if (v.state === 'disabled') bad('Kommo has DISABLED the webhook (too many failed deliveries): open it in Settings > Integrations > Web hooks and save to re-enable');
            else bad(`Kommo sends webhooks to ${v.shown}, which is not kommo-sync's URL: its ${v.differences.join('; its ')}. Replace it with the URL below in Settings > Integrations > Web hooks`);
          }
        }
      } catch (err) {
        failures++;
        bad(err instanceof Error ? err.message : String(err));
      }
      for (const a of rt.active) {
        try {
          await a.dest.check(a.ctx);
          if (a.dest.credentialsUnverifiable) ok(`${a.cfg.name} (${a.cfg.type}) answers; its credentials cannot be verified: ${a.dest.credentialsUnverifiable}`);
          else ok(`${a.cfg.name} (${a.cfg.type}) credentials accepted`);
          for (const w of a.dest.configWarnings?.(a.cfg.settings) ?? []) process.stdout.write(`  WARN  ${a.cfg.name} (${a.cfg.type}): ${w}\n`);
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
