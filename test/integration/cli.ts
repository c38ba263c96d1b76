/** For tests that run the real `kommo-sync` CLI as a child process. */
import { createServer } from 'node:net';

export const BIN = new URL('../../bin/kommo-sync.js', import.meta.url).pathname;

/** A port nothing listens on right now (for a child process that must keep one port across restarts). */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}
