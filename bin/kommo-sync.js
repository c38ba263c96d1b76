#!/usr/bin/env node
// Runs the compiled build (dist/, made by `npm run build`, which `npm install` runs) when it is at
// least as new as every file in src/; otherwise the TypeScript sources through tsx, so an edited
// checkout never runs stale code. The compiled build costs ~30% less CPU per webhook.
import { existsSync, readdirSync, statSync } from 'node:fs';

const distMain = new URL('../dist/main.js', import.meta.url);

function newestMtime(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const child = new URL(entry.name + (entry.isDirectory() ? '/' : ''), dir);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(child) : statSync(child).mtimeMs);
  }
  return newest;
}

if (existsSync(distMain) && statSync(distMain).mtimeMs >= newestMtime(new URL('../src/', import.meta.url))) {
  await import(distMain.href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/main.ts');
}
