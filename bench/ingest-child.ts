/**
 * Intake-only service process for `bench/ingest.ts --role intake`: the same startService() that
 * `kommo-sync serve` runs, with the same config, but `work: false` (no router, no workers), so the
 * measurement is webhook intake alone: HTTP + parse + durable insert.
 *
 *   node --import tsx bench/ingest-child.ts --config FILE --port N
 *
 * Like bin/kommo-sync.js it runs the compiled build (dist/) while that is up to date.
 */
import { compiledBuildIsFresh } from '../bin/fresh-build.js';
import { HOST, parseFlags } from './lib.js';

// Same rule as bin/kommo-sync.js, so `--role intake` measures the code `serve` runs.
const base = compiledBuildIsFresh(new URL('../', import.meta.url)) ? '../dist' : '../src';
const { loadConfigFile } = (await import(`${base}/config/load.js`)) as typeof import('../src/config/load.js');
const { createLogger } = (await import(`${base}/observability/logger.js`)) as typeof import('../src/observability/logger.js');
const { startService } = (await import(`${base}/runtime/service.js`)) as typeof import('../src/runtime/service.js');
const { secretRedactPaths } = (await import(`${base}/runtime/secrets.js`)) as typeof import('../src/runtime/secrets.js');

const flags = parseFlags(process.argv.slice(2), ['config', 'port'] as const);
if (!flags.config || !flags.port) throw new Error('usage: ingest-child.ts --config FILE --port N');
const loaded = loadConfigFile(flags.config);
const log = createLogger({ ...loaded.config.log, redact: secretRedactPaths() });
const service = await startService({ loaded, log, intake: true, work: false, port: Number(flags.port), host: HOST });

let stopping = false;
const stop = (): void => {
  if (stopping) return;
  stopping = true;
  // What the process holds at the end, for the bench's memory figures (MiB).
  const m = process.memoryUsage();
  const mib = (n: number): number => Math.round(n / 2 ** 20);
  process.stderr.write(`memory at stop: rss ${mib(m.rss)} MiB, V8 heap used ${mib(m.heapUsed)} of ${mib(m.heapTotal)}, external ${mib(m.external)}, array buffers ${mib(m.arrayBuffers)}\n`);
  service.close().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`close failed: ${String(err)}\n`);
      process.exit(1);
    },
  );
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
