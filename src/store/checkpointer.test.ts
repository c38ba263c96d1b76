import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { Checkpointer, DEFAULT_AUTOCHECKPOINT_PAGES, SAFETY_NET_PAGES } from './checkpointer.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('Checkpointer', () => {
  it('moves committed WAL pages into the database file from its own thread', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ks-ckpt-'));
    const file = path.join(dir, 'ks.db');
    const db = new Database(file);
    const settings: number[] = [];
    let ckpt: Checkpointer | undefined;
    try {
      db.pragma('journal_mode = WAL');
      ckpt = new Checkpointer({
        file,
        busyTimeoutMs: 1_000,
        setAutocheckpoint: (pages) => {
          settings.push(pages);
          db.pragma(`wal_autocheckpoint = ${pages}`);
        },
      });
      assert.deepEqual(settings, [SAFETY_NET_PAGES], 'the main connection keeps only a far-off safety net');
      db.exec('CREATE TABLE t (v TEXT)');
      const insert = db.prepare('INSERT INTO t VALUES (?)');
      db.transaction(() => {
        for (let i = 0; i < 2_000; i++) insert.run('x'.repeat(2_000)); // ~4 MB: over SQLite's 1,000-page default
      })();
      const before = statSync(file).size;
      for (let i = 0; i < 50 && statSync(file).size < 4_000_000; i++) await sleep(50);
      assert.ok(statSync(file).size > 4_000_000, `database file grew from ${before} to ${statSync(file).size} bytes`);
      await ckpt.close();
      assert.equal((db.prepare('SELECT COUNT(*) AS n FROM t').get() as { n: number }).n, 2_000);
    } finally {
      await ckpt?.close();
      db.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('hands checkpoints back to the main connection when the thread fails', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ks-ckpt-'));
    const settings: number[] = [];
    const errors: string[] = [];
    try {
      // A directory is not a database: the thread fails to open it.
      const ckpt = new Checkpointer({ file: dir, busyTimeoutMs: 100, setAutocheckpoint: (p) => settings.push(p), onError: (m) => errors.push(m) });
      for (let i = 0; i < 100 && errors.length === 0; i++) await sleep(20);
      assert.deepEqual(settings, [SAFETY_NET_PAGES, DEFAULT_AUTOCHECKPOINT_PAGES]);
      assert.equal(errors.length, 1);
      await ckpt.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
