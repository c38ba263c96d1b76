/**
 * Where secrets are, derived from the `secret()` marks of the config schema and of every registered
 * destination's settings, plus the headers each inbound source is verified by. Log redaction uses
 * it; nothing lists vendor key names by hand.
 */
import { configSchema, destinationCommon } from '../config/schema.js';
import { destinationTypes, getDestination } from '../destinations/index.js';
import { secretKeys, secretPaths } from '../model/index.js';

/** Every key name that holds a secret somewhere in a config. */
export function secretKeyNames(): string[] {
  const names = new Set<string>();
  for (const p of secretPaths(configSchema)) names.add(p[p.length - 1]!);
  for (const k of secretKeys(destinationCommon)) names.add(k);
  for (const t of destinationTypes()) for (const k of secretKeys(getDestination(t)!.settings)) names.add(k);
  return [...names].sort();
}

/** Request headers that carry a vendor's webhook signature or token. */
export function inboundAuthHeaders(): string[] {
  const headers = new Set<string>();
  for (const t of destinationTypes()) {
    const auth = getDestination(t)!.inbound?.auth;
    if (auth && auth.kind !== 'path-secret') headers.add(auth.header.toLowerCase());
  }
  return [...headers].sort();
}

/** pino redact paths: any logged object's secret keys (one level deep), and the auth headers. */
export function secretRedactPaths(): string[] {
  return [
    ...secretKeyNames().flatMap((k) => [k, `*.${k}`]),
    ...inboundAuthHeaders().map((h) => `req.headers[${JSON.stringify(h)}]`),
  ];
}
