/**
 * Errors shared by both store implementations.
 *
 * Callers (intake, readiness probe) look at `err.code === 'STORE_UNAVAILABLE'` rather than at the
 * class, so the check also works across module copies and after structured cloning.
 */

/** The database cannot be reached or cannot write right now (server down, SQLITE_BUSY timeout, disk I/O error). */
export class StoreUnavailableError extends Error {
  readonly code = 'STORE_UNAVAILABLE' as const;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreUnavailableError';
  }
}

export function isStoreUnavailable(err: unknown): err is StoreUnavailableError {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === 'STORE_UNAVAILABLE';
}

/** Best-effort `code` of an unknown thrown value (Node system errors, better-sqlite3 and pg errors all have one). */
export function errorCode(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
