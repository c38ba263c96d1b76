// Whether the compiled build (dist/, made by `npm run build`, which `npm install` runs) is at least
// as new as every file in src/. The CLI and bench/ingest-child.ts run dist/ only then, so an edited
// checkout never runs stale code.
import { existsSync, readdirSync, statSync } from 'node:fs';

function newestMtime(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const child = new URL(entry.name + (entry.isDirectory() ? '/' : ''), dir);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(child) : statSync(child).mtimeMs);
  }
  return newest;
}

/** `root`: the package root as a file: URL ending in `/`. */
export function compiledBuildIsFresh(root) {
  const distMain = new URL('dist/main.js', root);
  return existsSync(distMain) && statSync(distMain).mtimeMs >= newestMtime(new URL('src/', root));
}
