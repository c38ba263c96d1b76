/**
 * Keeps a long-running process's memory near what it actually holds.
 *
 * Under a steady webhook flood V8 lets the old generation grow to about 4x its live size between
 * full collections: ~25 MB of live objects became ~230 MB of RSS in bench/ingest. A growth factor
 * of 1.6 keeps peak RSS around 160 MB for a few percent more time in (incremental, mostly
 * concurrent) mark-compact; 1.3 gave the same RSS with more major-GC pauses (a worse p99).
 * `node --heap-growing-percent=N bin/kommo-sync.js ...` still wins.
 */
import v8 from 'node:v8';

export const HEAP_GROWING_PERCENT = 60;

export function boundHeapGrowth(percent = HEAP_GROWING_PERCENT): void {
  if (process.execArgv.some((a) => a.startsWith('--heap-growing-percent') || a.startsWith('--heap_growing_percent'))) return;
  // A GC tuning flag read at each collection, so setting it after start-up is safe.
  v8.setFlagsFromString(`--heap-growing-percent=${percent}`);
}
