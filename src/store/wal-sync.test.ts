import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { WalSync, type WalFiles } from './wal-sync.js';

/** Files whose fsyncs complete only when the test says so. */
function manualFiles() {
  const pending: Array<(err: Error | null) => void> = [];
  const log: string[] = [];
  const files: WalFiles = {
    open: () => {
      log.push('open');
      return 7;
    },
    fsync: (_fd, done) => {
      log.push('fsync');
      pending.push(done);
    },
    close: () => log.push('close'),
  };
  return { files, pending, log };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('WalSync', () => {
  it('answers a caller only after an fsync that started after its call', async () => {
    const { files, pending, log } = manualFiles();
    const wal = new WalSync('/x-wal', files);
    const settled: string[] = [];
    void wal.flushed().then(() => settled.push('a'));
    assert.deepEqual(log, ['open', 'fsync']);
    // b arrives while the first fsync runs: that fsync may predate b's commit, so b waits for the next.
    void wal.flushed().then(() => settled.push('b'));
    void wal.flushed().then(() => settled.push('c'));
    assert.equal(pending.length, 1);
    pending.shift()!(null);
    await tick();
    assert.deepEqual(settled, ['a']);
    assert.equal(pending.length, 1, 'b and c share one second fsync');
    pending.shift()!(null);
    await tick();
    assert.deepEqual(settled, ['a', 'b', 'c']);
    assert.deepEqual(log, ['open', 'fsync', 'fsync']);
  });

  it('afterSync runs at once when idle, else when the running fsync ends and before the next starts', async () => {
    const { files, pending, log } = manualFiles();
    const wal = new WalSync('/x-wal', files);
    const order: string[] = [];
    wal.afterSync(() => order.push('idle'));
    assert.deepEqual(order, ['idle']);
    assert.equal(wal.syncing, false);

    void wal.flushed().then(() => order.push('a flushed'));
    assert.equal(wal.syncing, true);
    // What a held commit does: commit, then ask for the next fsync, from inside the callback.
    wal.afterSync(() => {
      order.push('held commit');
      void wal.flushed().then(() => order.push('held flushed'));
    });
    assert.deepEqual(order, ['idle'], 'held while the fsync runs');
    pending.shift()!(null);
    assert.deepEqual(order, ['idle', 'held commit'], 'right when it ends');
    assert.deepEqual(log, ['open', 'fsync', 'fsync'], 'the held commit got its own, next fsync at once');
    await tick();
    assert.deepEqual(order, ['idle', 'held commit', 'a flushed']);
    pending.shift()!(null);
    await tick();
    assert.deepEqual(order, ['idle', 'held commit', 'a flushed', 'held flushed']);
  });

  it('rejects the callers of a failed fsync and recovers for the next ones', async () => {
    const { files, pending } = manualFiles();
    const wal = new WalSync('/x-wal', files);
    const first = wal.flushed();
    pending.shift()!(new Error('EIO'));
    await assert.rejects(first, /EIO/);
    const second = wal.flushed();
    pending.shift()!(null);
    await second;
  });

  it('rejects when the WAL file cannot be opened', async () => {
    const wal = new WalSync(path.join(os.tmpdir(), 'kommo-sync-no-such-dir', 'db-wal'));
    await assert.rejects(wal.flushed(), /ENOENT/);
  });

  it('fsyncs a real file and waits for running fsyncs on close', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'kommo-sync-wal-'));
    try {
      const file = path.join(dir, 'db-wal');
      writeFileSync(file, 'frames');
      const wal = new WalSync(file);
      const a = wal.flushed();
      const closing = wal.close();
      await a;
      await closing;
      await assert.rejects(wal.flushed(), /closed/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
