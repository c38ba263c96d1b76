/** A command used in a way it cannot work (a wrong flag value, a refused setup): exit status 2, message only. */
export class UsageError extends Error {
  override name = 'UsageError';
}
