/**
 * The idle wait of a polling loop (router, worker): sleep until the interval passes, or until
 * `wake()` (new work in this process) or `interrupt()` (stop) cuts it short.
 */
export class Pacer {
  private wakeUp: (() => void) | null = null;
  private stopWaiter: (() => void) | null = null;

  /** Sleeps `ms`; `wake()` ends it early only when `wakeable`; `interrupt()` always does. */
  pause(ms: number, wakeable = true): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wakeUp = null;
        this.stopWaiter = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      timer.unref();
      this.stopWaiter = done;
      if (wakeable) this.wakeUp = done;
    });
  }

  wake(): void {
    this.wakeUp?.();
  }

  interrupt(): void {
    this.stopWaiter?.();
  }
}
