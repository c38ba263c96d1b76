import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { test } from 'node:test';
import { compiledBuildIsFresh } from '../bin/fresh-build.js';

test('the CLI runs dist/ only while it is at least as new as every source file', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ks-fresh-'));
  try {
    const root = pathToFileURL(`${dir}/`);
    assert.equal(compiledBuildIsFresh(root), false, 'no build at all');
    mkdirSync(path.join(dir, 'dist'));
    mkdirSync(path.join(dir, 'src', 'store'), { recursive: true });
    const main = path.join(dir, 'dist', 'main.js');
    const source = path.join(dir, 'src', 'store', 'sqlite.ts');
    writeFileSync(main, '');
    writeFileSync(source, '');
    utimesSync(source, 1_000, 1_000);
    utimesSync(main, 2_000, 2_000);
    assert.equal(compiledBuildIsFresh(root), true);
    utimesSync(source, 3_000, 3_000); // an edit after the build, deep in src/
    assert.equal(compiledBuildIsFresh(root), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
