/**
 * The core is vendor-neutral: outside a connector's folder, only the registry (which lists every
 * connector) and the demo (which names the tools it shows) may name Customer.io, the first
 * connector and so the one most likely to leak into shared code. Adding a vendor must not mean
 * teaching the core about it.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { it } from 'node:test';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const ALLOWED = new Set(['src/destinations/index.ts']);
const ALLOWED_DIRS = ['src/destinations/customerio/', 'src/demo/'];

function* filesUnder(dir: string): Generator<string> {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) yield* filesUnder(full);
    else yield relative(ROOT, full).split('\\').join('/');
  }
}

it('nothing outside the Customer.io folder, the registry and the demo names Customer.io', () => {
  const offenders = [...filesUnder(join(ROOT, 'src'))]
    .filter((f) => !ALLOWED.has(f) && !ALLOWED_DIRS.some((d) => f.startsWith(d)))
    .filter((f) => /customer\.?io/i.test(readFileSync(join(ROOT, f), 'utf8')));
  assert.deepEqual(offenders, [], `these files name Customer.io; what they need belongs in the destination's context:\n${offenders.join('\n')}`);
});
