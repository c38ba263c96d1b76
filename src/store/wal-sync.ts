/**
 * Durable commits without blocking the event loop, for SQLite in WAL mode.
 *
 * With `synchronous = FULL` every commit ends in an fsync of the WAL file, and better-sqlite3 runs
 * it on the event loop: at thousands of webhooks per second that wait was the largest single
 * cost of intake, and every request behind it waited too. Instead, intake commits with
 * `synchronous = NORMAL` (the frames are written to the WAL but not fsynced) and then asks this
 * class for an fsync of the WAL file on libuv's thread pool; callers are answered only after it.
 * A transaction whose WAL frames are on disk is durable, which is all FULL guarantees too
 * (SQLite also fsyncs the WAL before every checkpoint in NORMAL mode).
 *
 * fsyncs are coalesced: every commit made while one runs shares the next one. The store can also
 * hold its next commit until the running fsync ends (`afterSync`), so that everything arriving
 * meanwhile goes into one transaction instead of one per event-loop turn (see sqlite.ts).
 */
import { closeSync, fsync, openSync } from 'node:fs';

/** The file operations used, replaceable in tests. */
export interface WalFiles {
  open(file: string): number;
  fsync(fd: number, done: (err: Error | null) => void): void;
  close(fd: number): void;
}

const nodeFiles: WalFiles = {
  open: (file) => openSync(file, 'r+'),
  fsync: (fd, done) => fsync(fd, done),
  close: (fd) => closeSync(fd),
};

export class WalSync {
  private fd: number | undefined;
  /** Callers waiting for an fsync that has not started yet (it must start after their commit). */
  private next: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];
  private running = false;
  private closed = false;
  /** Run once the current fsync has ended, before the next one starts. */
  private afterRunning: Array<() => void> = [];

  /** `walFile` is the database path + `-wal`; it exists once the first transaction committed. */
  constructor(
    private readonly walFile: string,
    private readonly files: WalFiles = nodeFiles,
  ) {}

  /** Resolves once everything committed before this call is on disk. */
  flushed(): Promise<void> {
    if (this.closed) return Promise.reject(new Error('store is closed'));
    return new Promise((resolve, reject) => {
      this.next.push({ resolve, reject });
      if (!this.running) this.start();
    });
  }

  /** True while an fsync runs. */
  get syncing(): boolean {
    return this.running;
  }

  /**
   * Runs `fn` when the fsync running now has ended (at once when none runs). A commit made in `fn`
   * and followed by flushed() gets the very next fsync.
   */
  afterSync(fn: () => void): void {
    if (!this.running) fn();
    else this.afterRunning.push(fn);
  }

  private start(): void {
    const waiting = this.next;
    this.next = [];
    this.running = true;
    let fd: number;
    try {
      // Opened on first use, after a commit created the file. Only the -wal file: SQLite keeps its
      // POSIX locks on the database and -shm files, which a close() of ours would otherwise drop.
      fd = this.fd ??= this.files.open(this.walFile);
    } catch (err) {
      this.finish(waiting, err as Error);
      return;
    }
    this.files.fsync(fd, (err) => this.finish(waiting, err ?? undefined));
  }

  private finish(waiting: Array<{ resolve: () => void; reject: (err: Error) => void }>, err: Error | undefined): void {
    this.running = false;
    for (const w of waiting) {
      if (err) w.reject(err);
      else w.resolve();
    }
    const after = this.afterRunning;
    this.afterRunning = [];
    for (const fn of after) fn();
    if (this.next.length > 0 && !this.running) this.start();
  }

  /** Call after the last commit; waiting callers still get their fsync first. */
  async close(): Promise<void> {
    if (this.running || this.next.length > 0) await this.flushed().catch(() => undefined);
    this.closed = true;
    if (this.fd !== undefined) this.files.close(this.fd);
    this.fd = undefined;
  }
}
