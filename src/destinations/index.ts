/**
 * THE registry: one line per destination. The config loader, doctor, the dashboard, the demo,
 * `bench/burst`, `erase` and the conformance suite all read it, so a destination registered here
 * cannot skip any of them.
 */
import { customerio } from './customerio/index.js';
import { encharge } from './encharge/index.js';
import { iterable } from './iterable/index.js';
import { moosend } from './moosend/index.js';
import { rudderstack, segment } from './segment/index.js';
import type { Destination } from './types.js';

const registry = new Map<string, Destination>([
  [customerio.type, customerio],
  [iterable.type, iterable],
  [encharge.type, encharge],
  [moosend.type, moosend],
  [segment.type, segment],
  [rudderstack.type, rudderstack],
]);

/**
 * Adds a destination that does not ship with kommo-sync: the test kit's fake destination, or a
 * plugin loaded with `node --import`. The same checks apply to it as to a built-in one.
 */
export function registerDestination(d: Destination): void {
  if (!/^[a-z][a-z0-9-]*$/.test(d.type)) throw new Error(`destination type "${d.type}": expected lower-case letters, digits and -`);
  const existing = registry.get(d.type);
  if (existing && existing !== d) throw new Error(`destination type "${d.type}" is already registered`);
  registry.set(d.type, d);
}

/** The destination for a config `type`, or undefined for a type nobody registered. */
export function getDestination(type: string): Destination | undefined {
  return registry.get(type);
}

export function destinationTypes(): string[] {
  return [...registry.keys()];
}
