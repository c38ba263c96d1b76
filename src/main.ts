/** CLI entry only: each command lives in src/cli/<command>.ts. */
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError } from 'commander';
import { ConfigError } from './config/load.js';
import { UsageError } from './cli/errors.js';
import { loadDestinationPlugins } from './cli/plugins.js';

// A command whose promise is still pending when Node has nothing left to run would end with exit
// code 13 and no word (an "unsettled top-level await"): say so instead, and fail.
let finished = false;
process.on('beforeExit', () => {
  if (finished) return;
  process.stderr.write('kommo-sync: internal error: the command stopped before it finished, with nothing left to wait for. Please report this bug.\n');
  process.exit(1);
});

// src/main.ts and dist/main.js both sit one level below package.json.
const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

const program = new Command()
  .name('kommo-sync')
  .description('Two-way, real-time sync between Kommo CRM and your marketing tools.')
  .version(version, '-v, --version', 'print the version')
  .showHelpAfterError();

const port = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('expected a port number 0-65535');
  return n;
};
const positive = (v: string): number => {
  const n = Number(v);
  if (!(n > 0)) throw new InvalidArgumentError('expected a positive number');
  return n;
};
const configOpt = '-c, --config <file>';
const configHelp = 'config file (default ./kommo-sync.yaml, or $KOMMO_SYNC_CONFIG)';

program.command('serve').description('webhook intake + router + workers + dashboard in one process')
  .option(configOpt, configHelp).option('-p, --port <n>', 'HTTP port (overrides server.port)', port)
  .action(async (o: { config?: string; port?: number }) => (await import('./cli/serve.js')).serve(o));
program.command('worker').description('router + workers only (scale-out with PostgreSQL)')
  .option(configOpt, configHelp)
  .action(async (o: { config?: string }) => (await import('./cli/worker.js')).worker(o));
program.command('demo').description('run everything against built-in simulators of Kommo and every vendor; no accounts needed')
  .option('-p, --port <n>', 'port for the service (default: a free one)', port)
  .option('-d, --duration <seconds>', 'stop after this many seconds (default: run until Ctrl-C)', positive)
  .option('--json', 'print only a JSON summary at the end (for scripts)')
  .action(async (o: { port?: number; duration?: number; json?: boolean }) => (await import('./cli/demo.js')).demo(o));
program.command('doctor').description('validate the config and check every credential, stage, pipeline, field and list, and the webhook registrations')
  .option(configOpt, configHelp)
  .option('--fix', 'register the webhooks that are missing (Kommo, and tools whose API allows it); needs server.publicUrl')
  .action(async (o: { config?: string; fix?: boolean }) => (await import('./cli/doctor.js')).doctor(o));
program.command('backfill').description('sync the leads that exist in Kommo (streamed, resumable, live events go first); runs in the running serve or worker')
  .option(configOpt, configHelp)
  .option('--account <name>', 'only this account (default: every configured account)')
  .option('--since <date>', 'only leads updated since this date (ISO 8601)')
  .option('--pipeline <name>', 'only leads in this pipeline')
  .option('--stage <name>', 'only leads in this stage ("Stage" or "Pipeline / Stage")')
  .option('--dry-run', 'read the first leads here and print what would be sent; queue nothing')
  .option('--limit <n>', 'with --dry-run: how many leads to show (default 250)', positive)
  .option('--restart', 'start over: every lead is sent again, even if a backfill with these options finished')
  .option('--detach', 'queue the backfill and exit (the service does it; `status` shows its progress)')
  .option('--pause', 'pause the running backfill with these options (the same command without --pause resumes it)')
  .option('--json', 'JSON lines instead of a progress bar')
  .action(async (o: { config?: string; account?: string; since?: string; pipeline?: string; stage?: string; dryRun?: boolean; limit?: number; restart?: boolean; detach?: boolean; pause?: boolean; json?: boolean }) => (await import('./cli/backfill.js')).backfill(o));
program.command('status').description('queue depth, oldest pending job, deliveries per minute, failures, paused accounts, backfill and missed-webhook checks')
  .option(configOpt, configHelp).option('--json', 'machine-readable output')
  .option('--watch', 'refresh every 2 s until Ctrl-C')
  .action(async (o: { config?: string; json?: boolean; watch?: boolean }) => (await import('./cli/status.js')).status(o));
program.command('replay').description('re-queue dead-lettered jobs (chosen by destination, date or lead); prints how many and which')
  .option(configOpt, configHelp)
  .option('--dead', 'dead-lettered jobs (the default)')
  .option('--inbox', 'inbox events the router gave up on (see `status`), instead of jobs')
  .option('--destination <name>', 'only this destination (name, or account/name)')
  .option('--since <date>', 'only jobs created since this date (ISO 8601)')
  .option('--lead <id>', 'only jobs of this Kommo lead')
  .option('--dry-run', 'list what would be re-queued; change nothing')
  .action(async (o: { config?: string; dead?: boolean; inbox?: boolean; destination?: string; since?: string; lead?: string; dryRun?: boolean }) => (await import('./cli/replay.js')).replay(o));
program.command('erase').description('GDPR erasure of one person in every destination that supports it, with a note on their Kommo leads')
  .argument('<email>', 'the person\'s email address')
  .option(configOpt, configHelp)
  .option('--account <name>', 'only this account (default: every configured account)')
  .option('--wait', 'wait until a running serve or worker has delivered the erasure, and report each destination\'s outcome')
  .option('--json', 'machine-readable output')
  .action(async (email: string, o: { config?: string; account?: string; json?: boolean; wait?: boolean }) => (await import('./cli/erase.js')).erase({ ...o, email }));

try {
  await loadDestinationPlugins(process.env.KOMMO_SYNC_DESTINATIONS);
  await program.parseAsync(process.argv);
  finished = true;
} catch (err) {
  finished = true;
  if (err instanceof ConfigError) {
    process.stderr.write(`${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`kommo-sync: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(err instanceof UsageError ? 2 : 1);
}
