/**
 * `kommo-sync doctor [--fix]`: validates the config, then checks every credential and every name it
 * uses (stages, pipelines, fields, lists: the nearest existing name is suggested) against the live
 * APIs, and that the webhooks are registered where an API allows it (Kommo, and destinations with
 * `webhookRegistration`). `--fix` registers the missing ones. One line per check (green ok, red
 * FAIL, yellow WARN on a terminal); exit status 1 when a check failed and was not fixed.
 */
import pino from 'pino';
import { ConfigError, type LoadedConfig } from '../config/load.js';
import { getDestination } from '../destinations/index.js';
import type { KommoWebhook } from '../kommo/schemas.js';
import { AccountRuntime } from '../runtime/account.js';
import { openStore } from '../store/open.js';
import { listenPort, loadConfig } from './context.js';
import { checkKommoWebhook } from './kommo-webhook-check.js';

/** What kommo-sync syncs from Kommo: the events its webhook must carry (README "Quick start"). */
export const KOMMO_WEBHOOK_EVENTS = ['add_lead', 'update_lead', 'status_lead', 'responsible_lead', 'delete_lead', 'restore_lead', 'update_contact'] as const;

type Mark = 'ok' | 'FAIL' | 'WARN' | 'FIXED';

class Report {
  failures = 0;
  fixed = 0;
  private readonly color = process.stdout.isTTY === true && !process.env.NO_COLOR;

  line(mark: Mark, text: string): void {
    if (mark === 'FAIL') this.failures += 1;
    if (mark === 'FIXED') this.fixed += 1;
    const codes: Record<Mark, string> = { ok: '32', FAIL: '31', WARN: '33', FIXED: '32' };
    const tag = mark.padEnd(5);
    process.stdout.write(`  ${this.color ? `\u001b[${codes[mark]}m${tag}\u001b[0m` : tag} ${text}\n`);
  }

  ok(text: string): void {
    this.line('ok', text);
  }

  fail(text: string): void {
    this.line('FAIL', text);
  }

  /** A config error may hold several issues: one line each, the `file:line path:` prefix kept. */
  failError(err: unknown): void {
    if (err instanceof ConfigError) for (const issue of err.issues) this.fail(issue);
    else this.fail(err instanceof Error ? err.message : String(err));
  }
}

export async function doctor(o: { config?: string; fix?: boolean }): Promise<void> {
  const loaded = loadConfig(o.config);
  const r = new Report();
  const store = await openStore(loaded.config.store);
  const log = pino({ level: 'silent' });
  const publicUrl = loaded.config.server.publicUrl?.replace(/\/+$/, '');
  const base = publicUrl ?? `http://<your-host>:${listenPort(loaded, undefined)}`;
  try {
    // Building the runtimes compiles every mapping and template: a mistake there is a config
    // error like any other, reported before "configuration is valid".
    const runtimes = Object.entries(loaded.config.accounts).map(([name, acct]) => ({ name, acct, rt: new AccountRuntime(name, acct, loaded.destinations[name] ?? [], loaded, store, log) }));
    process.stdout.write(`${loaded.file}: configuration is valid\n`);
    for (const w of loaded.warnings) r.line('WARN', w);
    r.ok(`store ${store.kind} reachable`);
    if (o.fix && !publicUrl) {
      r.line('WARN', '--fix cannot register webhooks without server.publicUrl: set it to the address Kommo and the tools reach kommo-sync at (e.g. https://sync.example.com)');
    }
    for (const { name, acct, rt } of runtimes) {
      process.stdout.write(`\naccount ${name} (${acct.kommo.subdomain}.kommo.com)\n`);
      try {
        const info = await rt.client.getAccount();
        r.ok(`Kommo credentials accepted (account "${info.name}", id ${info.id})`);
        try {
          await rt.init();
          r.ok(`stages, pipelines, fields and lists named in the config exist (${rt.catalog.pipelines.length} pipeline${rt.catalog.pipelines.length === 1 ? '' : 's'})`);
        } catch (err) {
          r.failError(err);
        }
        await checkKommo(r, rt, { account: name, secret: acct.kommo.webhookSecret, publicUrl, fix: o.fix === true });
      } catch (err) {
        r.failError(err);
      }
      for (const a of rt.active) {
        try {
          await a.dest.check(a.ctx);
          if (a.dest.credentialsUnverifiable) r.ok(`${a.cfg.name} (${a.cfg.type}) answers; its credentials cannot be verified: ${a.dest.credentialsUnverifiable}`);
          else r.ok(`${a.cfg.name} (${a.cfg.type}) credentials accepted`);
        } catch (err) {
          r.fail(`${a.cfg.name} (${a.cfg.type}): ${err instanceof Error ? err.message : String(err)}`);
        }
        for (const w of a.dest.configWarnings?.(a.cfg.settings) ?? []) r.line('WARN', `${a.cfg.name} (${a.cfg.type}): ${w}`);
        await checkRegistration(r, a, { account: name, base, publicUrl, fix: o.fix === true });
      }
      printUrls(loaded, name, acct.kommo.webhookSecret, base);
    }
  } finally {
    await store.close();
  }
  const fixed = r.fixed ? ` ${r.fixed} fixed.` : '';
  process.stdout.write(r.failures ? `\n${r.failures} problem${r.failures > 1 ? 's' : ''} found.${fixed}\n` : `\nAll checks passed.${fixed}\n`);
  if (r.failures) process.exitCode = 1;
}

/** Does Kommo send its webhooks to us (enabled, with every event we sync)? `fix`: subscribe. */
async function checkKommo(r: Report, rt: AccountRuntime, o: { account: string; secret: string; publicUrl: string | undefined; fix: boolean }): Promise<void> {
  const hooks = await rt.client.getWebhooks();
  const url = o.publicUrl ? `${o.publicUrl}/webhooks/${o.account}/kommo/${o.secret}` : null;
  const masked = o.publicUrl ? `${o.publicUrl}/webhooks/${o.account}/kommo/***` : '';
  if (hooks === null) {
    r.ok('webhook subscriptions not checked (needs an admin token)');
    if (o.fix) r.line('WARN', 'the Kommo webhook cannot be registered with this token (not an admin\'s): paste the URL below in Settings > Integrations > Web hooks');
    return;
  }
  const v = checkKommoWebhook(hooks, { account: o.account, secret: o.secret, ...(o.publicUrl ? { publicUrl: o.publicUrl } : {}) });
  if (v.state === 'ok') {
    const missing = KOMMO_WEBHOOK_EVENTS.filter((e) => !v.hook.settings.includes(e));
    r.ok(`Kommo sends webhooks to kommo-sync (${v.hook.settings.join(', ')})${v.hostChecked ? '' : '; its host is not checked: set server.publicUrl'}`);
    if (missing.length === 0) return;
    if (!o.fix || !url) {
      r.line('WARN', `Kommo's webhook leaves out ${missing.join(', ')}: those changes are not synced${o.fix ? '' : ' (doctor --fix adds them)'}`);
      return;
    }
    await subscribeKommo(r, rt, url, masked, [...new Set([...v.hook.settings, ...missing])], `added ${missing.join(', ')} to the Kommo webhook`);
    return;
  }
  const problem = v.state === 'missing'
    ? 'Kommo has no webhook pointing at kommo-sync yet'
    : v.state === 'disabled'
      ? 'Kommo has DISABLED the webhook (too many failed deliveries)'
      : `Kommo sends webhooks to ${v.shown}, which is not kommo-sync's URL: its ${v.differences.join('; its ')}`;
  if (!o.fix) {
    const how = v.state === 'disabled' ? 'open it in Settings > Integrations > Web hooks and save to re-enable' : 'add the URL below in Settings > Integrations > Web hooks';
    r.fail(`${problem}: ${how}, or run doctor --fix`);
    return;
  }
  if (!url) {
    r.fail(`${problem}; --fix cannot register it without server.publicUrl (the address Kommo reaches kommo-sync at)`);
    return;
  }
  r.line('WARN', problem);
  const settings = v.state === 'disabled' ? [...new Set([...v.hook.settings, ...KOMMO_WEBHOOK_EVENTS])] : [...KOMMO_WEBHOOK_EVENTS];
  await subscribeKommo(r, rt, url, masked, settings, v.state === 'disabled' ? 're-enabled the Kommo webhook' : 'registered the Kommo webhook');
  if (v.state === 'differs') r.line('WARN', `the webhook to ${v.shown} is still registered in Kommo: remove it there if nothing listens at that address any more`);
}

async function subscribeKommo(r: Report, rt: AccountRuntime, url: string, masked: string, settings: string[], what: string): Promise<void> {
  let hook: KommoWebhook;
  try {
    hook = await rt.client.addWebhook(url, settings);
  } catch (err) {
    r.fail(`could not register the Kommo webhook: ${err instanceof Error ? err.message : String(err)}; paste the URL below in Settings > Integrations > Web hooks`);
    return;
  }
  // Kommo's answer to re-posting a disabled webhook is unconfirmed (kommo.md 1.1): look again.
  const after = await rt.client.getWebhooks().catch(() => null);
  const v = after ? checkKommoWebhook(after, { account: rt.name, secret: rt.cfg.kommo.webhookSecret, publicUrl: url.slice(0, url.indexOf('/webhooks/')) }) : null;
  if (v && v.state !== 'ok') {
    r.fail(`Kommo accepted the webhook ${masked} but lists it as ${v.state}: open it in Settings > Integrations > Web hooks and save it`);
    return;
  }
  r.line('FIXED', `${what}: ${masked} (${hook.settings.join(', ')})`);
}

type Active = AccountRuntime['active'][number];

/** A destination whose API lists and creates webhook subscriptions: is ours there? `fix`: create it. */
async function checkRegistration(r: Report, a: Active, o: { account: string; base: string; publicUrl: string | undefined; fix: boolean }): Promise<void> {
  const reg = a.dest.webhookRegistration;
  if (!reg || !a.dest.inbound) return;
  const secret = a.cfg.common.webhookSecret;
  const who = `${a.cfg.name} (${a.cfg.type})`;
  if (!secret) {
    r.line('WARN', `${who}: no webhookSecret, so it has no webhook URL and its engagement does not reach Kommo`);
    return;
  }
  const path = `/webhooks/${o.account}/${a.cfg.name}/${secret}`;
  const url = `${o.base}${path}`;
  const masked = `${o.base}/webhooks/${o.account}/${a.cfg.name}/***`;
  let listed: string[] | null = null;
  let listError: string | null = null;
  try {
    listed = await reg.list(a.ctx);
  } catch (err) {
    listError = err instanceof Error ? err.message : String(err);
  }
  if (listed !== null) {
    const ours = listed.some((u) => (o.publicUrl ? u === url : stripQuery(u).endsWith(path)));
    if (ours) {
      r.ok(`${who} sends its webhooks to kommo-sync${o.publicUrl ? '' : '; its host is not checked: set server.publicUrl'}`);
      return;
    }
    if (!o.fix) {
      r.fail(`${who} does not send its webhooks to kommo-sync yet: run doctor --fix, or register the URL below in ${a.dest.title}`);
      return;
    }
  } else if (!o.fix) {
    // The API cannot say: nothing is known to be wrong.
    r.line('WARN', `${who}: ${listError}; doctor --fix registers it`);
    return;
  }
  if (!o.publicUrl) {
    r.fail(`${who}: --fix cannot register its webhook without server.publicUrl`);
    return;
  }
  try {
    await reg.register(a.ctx, url);
    r.line('FIXED', `${who}: registered its webhook ${masked}${listed === null ? ' (its API cannot list them: one registered before is now there twice, which is harmless)' : ''}`);
  } catch (err) {
    r.fail(`${who}: could not register its webhook: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function stripQuery(u: string): string {
  const i = u.indexOf('?');
  return i < 0 ? u : u.slice(0, i);
}

function printUrls(loaded: LoadedConfig, account: string, kommoSecret: string, base: string): void {
  process.stdout.write('  webhook URLs to paste:\n');
  process.stdout.write(`    Kommo (Settings > Integrations > Web hooks): ${base}/webhooks/${account}/kommo/${kommoSecret}\n`);
  for (const d of loaded.destinations[account] ?? []) {
    if (getDestination(d.type)?.inbound && d.common.webhookSecret) process.stdout.write(`    ${d.name}: ${base}/webhooks/${account}/${d.name}/${d.common.webhookSecret}\n`);
    else if (getDestination(d.type)?.inbound) process.stdout.write(`    ${d.name}: set webhookSecret to receive its webhooks\n`);
  }
}
