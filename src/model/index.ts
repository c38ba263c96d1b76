/**
 * The shared vocabulary, on the ground floor: every layer imports it, it imports nothing of ours.
 * events.ts (what intake stores), lead.ts (what mappings see), ops.ts (what jobs carry and
 * destinations answer), settings.ts (secret marks, durations), email.ts, ulid.ts, json.ts (isRecord).
 */
export * from './events.js';
export * from './lead.js';
export * from './ops.js';
export * from './settings.js';
export * from './email.js';
export * from './ulid.js';
export * from './json.js';
