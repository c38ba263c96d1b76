/**
 * Opens the store named by a URL and brings its schema up to date.
 *
 *   sqlite:./data/kommo-sync.db   relative to the working directory
 *   sqlite:/var/lib/ks/ks.db      absolute (sqlite:///var/lib/ks/ks.db works too)
 *   sqlite::memory:               in-memory, for tests and demos
 *   postgres://user:pass@host:5432/db[?schema=name]   (postgresql:// too)
 *
 * The drivers are imported on demand, so a PostgreSQL deployment never loads the native SQLite addon.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Store } from './store.js';

const ACCEPTED = 'sqlite:./file.db, sqlite:/abs/file.db, sqlite::memory:, postgres://user@host:5432/db or postgresql://...';

export interface OpenStoreOptions {
  /** Told about background trouble the store handles itself (e.g. SQLite's checkpoint thread failing). */
  onWarning?(message: string): void;
}

export async function openStore(url: string, opts: OpenStoreOptions = {}): Promise<Store> {
  const store = await openUnmigrated(url, opts);
  try {
    await store.migrate();
  } catch (err) {
    await store.close().catch(() => undefined);
    throw err;
  }
  return store;
}

async function openUnmigrated(url: string, opts: OpenStoreOptions): Promise<Store> {
  if (url.startsWith('sqlite:')) {
    const file = sqlitePath(url.slice('sqlite:'.length));
    if (file !== ':memory:') mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    const { openSqliteStore } = await import('./sqlite.js');
    return openSqliteStore(file, opts.onWarning ? { onWarning: opts.onWarning } : {});
  }
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) {
    const { openPostgresStore } = await import('./postgres.js');
    return openPostgresStore(url);
  }
  throw new Error(`unsupported store URL "${redact(url)}": use one of ${ACCEPTED}`);
}

function sqlitePath(rest: string): string {
  // `sqlite://x` is the URL-style spelling: `sqlite:///abs` is /abs, `sqlite://rel.db` is rel.db.
  const file = rest.startsWith('//') ? rest.slice(2) : rest;
  if (file === '') throw new Error(`the sqlite store URL names no file: use one of ${ACCEPTED}`);
  return file;
}

/** Never echo a password from a mistyped URL into logs. */
function redact(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@/]*@/, '//$1:***@');
}
