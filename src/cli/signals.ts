/**
 * How the long-running commands (serve, worker, demo) wait for their end and stop: on SIGINT or
 * SIGTERM (Ctrl-C, `docker stop`, systemd), or when the npm/npx process that started them is gone.
 */
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';

export interface StopRequest {
  /** What asked us to stop, for the log line. */
  reason: string;
  signal?: NodeJS.Signals;
}

/** How often the wait looks at its parent process (and what keeps the event loop alive). */
const TICK_MS = 250;

/**
 * Resolves once, on the first SIGINT or SIGTERM, or when kommo-sync was started through npm
 * (`npx kommo-sync serve`, `npm start`) and that npm process is gone. npm forwards SIGTERM only to
 * the `sh -c` it runs us under, which dies without passing it on: without this watch, a SIGTERM to
 * npm (what a process manager sends) left the service running, orphaned.
 *
 * The wait holds a timer: signal listeners alone do not keep Node's event loop alive, so a process
 * with nothing else scheduled (an idle `worker`) would otherwise end at once with exit code 13.
 */
export function untilStopped(env: NodeJS.ProcessEnv = process.env): Promise<StopRequest> {
  const startedByNpm = env.npm_lifecycle_event !== undefined || env.npm_command !== undefined;
  const start = parentsAtStart();
  return new Promise((resolve) => {
    const finish = (request: StopRequest) => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      clearInterval(timer);
      // A second signal while shutting down means "now": do not make the operator wait.
      const force = (sig: NodeJS.Signals) => {
        process.stderr.write(`kommo-sync: ${sig} again while stopping: exiting now; jobs in flight are retried after their lease\n`);
        process.exit(1);
      };
      process.once('SIGINT', force);
      process.once('SIGTERM', force);
      resolve(request);
    };
    const onSignal = (signal: NodeJS.Signals) => finish({ reason: signal, signal });
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    const timer = setInterval(() => {
      // The shell usually dies of the forwarded SIGTERM (our parent changes); when it survives,
      // npm's exit still shows as the shell's parent changing.
      const gone = process.ppid !== start.parent || (start.grandparent !== undefined && parentOf(start.parent) !== start.grandparent);
      if (startedByNpm && gone) finish({ reason: 'the npm/npx process that started kommo-sync is gone' });
    }, TICK_MS);
  });
}

interface Parents {
  parent: number;
  grandparent: number | undefined;
}

/** Our parent and its parent when the process began (saved by bin/kommo-sync.js), else now. */
function parentsAtStart(): Parents {
  const saved = (globalThis as Record<symbol, unknown>)[Symbol.for('kommo-sync.parents')];
  if (typeof saved === 'object' && saved !== null && typeof (saved as Parents).parent === 'number') return saved as Parents;
  return { parent: process.ppid, grandparent: parentOf(process.ppid) };
}

/** The parent of `pid` from Linux's /proc; undefined elsewhere or once `pid` is gone. */
function parentOf(pid: number): number | undefined {
  try {
    // "pid (name) state ppid ...": the name may hold spaces or parentheses.
    const ppid = Number(readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^[\s\S]*\) /, '').split(' ')[1]);
    return Number.isInteger(ppid) ? ppid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Stops a service within `timeoutMs`: intake stops, deliveries in flight get most of that time to
 * finish, then the claims of those still running are given back (delivered again by the next
 * process: at-least-once) and the store closes, exit 0. If even that hangs, the process exits 1 at
 * the deadline.
 */
export async function stopWithin(service: { close(opts?: { graceMs?: number }): Promise<void> }, log: Logger, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'late'>((resolve) => {
    timer = setTimeout(() => resolve('late'), timeoutMs);
  });
  // Deliveries get most of the time; then their claims are given back and the store closes.
  const graceMs = Math.max(0, timeoutMs - 2000);
  const outcome = await Promise.race([service.close({ graceMs }).then(() => 'closed' as const), deadline]);
  clearTimeout(timer);
  if (outcome === 'late') {
    log.error({ timeoutMs }, 'deliveries in flight did not finish within worker.shutdownTimeout; exiting anyway (their jobs are retried once their lease expires)');
    log.flush?.();
    process.exit(1);
  }
  log.info('kommo-sync stopped');
  // Everything is closed: nothing should keep the process alive now. If something still does (a
  // socket a library forgot), do not leave the process manager waiting for it.
  setTimeout(() => process.exit(process.exitCode ?? 0), 2000).unref();
}
