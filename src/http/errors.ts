/** Every error answer has one JSON shape: `{"error": "<code>", "message": "<what was wrong>"}`. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export function errorBody(code: string, message: string): { error: string; message: string } {
  return { error: code, message };
}
