/**
 * THE registry: one line per destination. The config loader, doctor, the dashboard, the demo and the
 * conformance suite all read it, so a destination registered here cannot skip any of them.
 */
import { customerio } from './customerio/index.js';
import type { Destination } from './types.js';

export const destinations = {
  customerio,
} as const satisfies Record<string, Destination>;

export type DestinationType = keyof typeof destinations;

/** The destination for a config `type`, or undefined for a type nobody registered. */
export function getDestination(type: string): Destination | undefined {
  return Object.hasOwn(destinations, type) ? destinations[type as DestinationType] : undefined;
}

export function destinationTypes(): DestinationType[] {
  return Object.keys(destinations) as DestinationType[];
}
