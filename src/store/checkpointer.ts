/**
 * WAL checkpoints on a worker thread, for SQLite file stores.
 *
 * SQLite's automatic checkpoint runs inside the commit that crosses the threshold (1,000 pages),
 * on the committing connection: with better-sqlite3 that is the event loop, which then copies ~4 MB
 * into the database file and fsyncs it while every webhook in flight waits. Under a webhook flood
 * that happened several times a second and set the intake's tail latency. Here a second connection
 * on its own thread checkpoints in PASSIVE mode (it never blocks the writer), every CHECK_MS, and
 * the main connection keeps an automatic checkpoint only as a far-off safety net.
 *
 * If the thread fails, the main connection's automatic checkpoint goes back to SQLite's default.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

/** How often the thread checkpoints (ms). */
const CHECK_MS = 200;
/** The main connection's automatic checkpoint while the thread runs (pages, ~80 MB of WAL). */
export const SAFETY_NET_PAGES = 20_000;
/** SQLite's default, restored when the thread is gone. */
export const DEFAULT_AUTOCHECKPOINT_PAGES = 1_000;

// The thread's code. CommonJS source evaluated by the Worker (`eval: true`), so the same code runs
// from dist/ and from the TypeScript sources under tsx; better-sqlite3 is passed as a resolved path.
const THREAD_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.file, { timeout: workerData.busyTimeoutMs });
db.pragma('synchronous = FULL');
const checkpoint = () => db.pragma('wal_checkpoint(PASSIVE)');
const timer = setInterval(() => {
  try { checkpoint(); } catch (err) { parentPort.postMessage({ error: String(err && err.message || err) }); }
}, workerData.checkMs);
parentPort.on('message', (msg) => {
  if (msg !== 'stop') return;
  clearInterval(timer);
  try { checkpoint(); } catch {}
  db.close();
  parentPort.close();
});
`;

export interface CheckpointerOptions {
  file: string;
  busyTimeoutMs: number;
  /** Called with the pages value the main connection's `wal_autocheckpoint` should now have. */
  setAutocheckpoint(pages: number): void;
  /** Told once when the thread fails (checkpoints are then back on the main connection). */
  onError?(message: string): void;
}

export class Checkpointer {
  private readonly worker: Worker;
  private stopped = false;
  private failed = false;
  private readonly exited: Promise<void>;

  constructor(private readonly o: CheckpointerOptions) {
    const driver = createRequire(import.meta.url).resolve('better-sqlite3');
    this.worker = new Worker(THREAD_SOURCE, {
      eval: true,
      workerData: { driver, file: o.file, busyTimeoutMs: o.busyTimeoutMs, checkMs: CHECK_MS },
    });
    // The thread must not keep the process alive; close() is what ends it normally.
    this.worker.unref();
    this.exited = new Promise((resolve) => this.worker.once('exit', () => resolve()));
    this.worker.on('message', (msg: { error?: string }) => {
      if (msg.error) this.fail(msg.error);
    });
    this.worker.on('error', (err) => this.fail(err.message));
    this.worker.once('exit', () => {
      if (!this.stopped) this.fail('the checkpoint thread exited');
    });
    o.setAutocheckpoint(SAFETY_NET_PAGES);
  }

  private fail(message: string): void {
    if (this.failed || this.stopped) return;
    this.failed = true;
    this.o.setAutocheckpoint(DEFAULT_AUTOCHECKPOINT_PAGES);
    this.o.onError?.(message);
    void this.worker.terminate();
  }

  /** Final checkpoint, then the thread ends. */
  async close(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.worker.ref(); // keep the process up until the final checkpoint is done
    if (!this.failed) this.worker.postMessage('stop');
    const timeout = new Promise<void>((resolve) => setTimeout(resolve, 5_000).unref());
    await Promise.race([this.exited, timeout]);
    await this.worker.terminate();
  }
}
