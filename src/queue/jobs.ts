/**
 * Versioned job types. A job row names its type and version (`sync.ops@1`), so rows written by an
 * older release are still understood (or clearly rejected) after an upgrade, and replay stays safe.
 */
import { z } from 'zod';
import { kommoOpSchema, syncOpSchema, type KommoOp, type SyncOp } from '../model/index.js';
import type { NewJob } from '../store/store.js';

export const SYNC_OPS_V1 = 'sync.ops@1';
export const KOMMO_OPS_V1 = 'kommo.ops@1';

export const syncOpsPayload = z.object({ subject: z.string(), ops: z.array(syncOpSchema).min(1) });
export const kommoOpsPayload = z.object({ subject: z.string(), ops: z.array(kommoOpSchema).min(1) });
export type SyncOpsPayload = z.infer<typeof syncOpsPayload>;
export type KommoOpsPayload = z.infer<typeof kommoOpsPayload>;

export type DecodedJob =
  | { type: typeof SYNC_OPS_V1; payload: SyncOpsPayload }
  | { type: typeof KOMMO_OPS_V1; payload: KommoOpsPayload };

/** Reads a stored job; an unknown type or a payload that no longer fits is a permanent failure. */
export function decodeJob(type: string, payload: unknown): DecodedJob | { error: string } {
  const schema = type === SYNC_OPS_V1 ? syncOpsPayload : type === KOMMO_OPS_V1 ? kommoOpsPayload : null;
  if (!schema) return { error: `unknown job type "${type}" (written by a newer kommo-sync?)` };
  const r = schema.safeParse(payload);
  if (!r.success) return { error: `job payload does not match ${type}: ${r.error.issues[0]?.message ?? 'invalid'}` };
  return { type, payload: r.data } as DecodedJob;
}

/** A job with sync operations for one marketing destination (`destination` is its configured name). */
export function syncJob(account: string, destination: string, orderingKey: string, subject: string, ops: SyncOp[], inboxId?: number): NewJob {
  return { account, destination: destinationKey(account, destination), type: SYNC_OPS_V1, orderingKey, payload: { subject, ops }, ...(inboxId === undefined ? {} : { inboxId }) };
}

/** A job with one write into Kommo (a Kommo write is one job per operation: notes and tasks are not idempotent). */
export function kommoJob(account: string, orderingKey: string, subject: string, op: KommoOp, inboxId?: number): NewJob {
  return { account, destination: destinationKey(account, 'kommo'), type: KOMMO_OPS_V1, orderingKey, payload: { subject, ops: [op] }, ...(inboxId === undefined ? {} : { inboxId }) };
}

/** Destination key in job rows: destinations are named per account, so the account is part of it. */
export function destinationKey(account: string, destination: string): string {
  return `${account}/${destination}`;
}
export function splitDestinationKey(key: string): { account: string; destination: string } {
  const i = key.indexOf('/');
  return { account: key.slice(0, i), destination: key.slice(i + 1) };
}
