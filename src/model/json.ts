/** A parsed JSON value that is an object (not null, not an array): what edges check before reading keys. */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
