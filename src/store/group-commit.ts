/**
 * Group commit for the inbox: insertInbox calls made in the same event-loop turn are written
 * together (one transaction, one fsync), and each caller's promise settles after that write.
 * This is what lets intake answer thousands of webhooks per second while answering only after
 * the events are durable.
 */
import type { InsertResult, NewInboxEvent } from './store.js';
import { toJson, type QueuedInsert } from './rows.js';

/** Flush at once past this many queued events, instead of waiting for the end of the turn. */
export const GROUP_COMMIT_MAX_EVENTS = 500;

export class GroupCommit {
  private queue: QueuedInsert[] = [];
  private queuedEvents = 0;
  private scheduled = false;

  /** `write` takes ownership of a batch and settles every item's promise. */
  constructor(private readonly write: (batch: QueuedInsert[]) => void) {}

  add(events: NewInboxEvent[]): Promise<InsertResult> {
    if (events.length === 0) return Promise.resolve({ inserted: 0, duplicates: 0 });
    let rows: QueuedInsert['rows'];
    try {
      // Serialize now, so a bad payload fails its own caller and not the whole batch.
      rows = events.map((e) => ({ account: e.account, source: e.source, kind: e.kind, dedupKey: e.dedupKey, payload: toJson(e.payload), receivedAt: e.receivedAt }));
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<InsertResult>((resolve, reject) => {
      this.queue.push({ rows, resolve, reject });
      this.queuedEvents += rows.length;
      if (this.queuedEvents >= GROUP_COMMIT_MAX_EVENTS) {
        this.flush();
      } else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          this.flush();
        });
      }
    });
  }

  /** Writes what is queued now (also used on close, so waiting callers get their commit). */
  flush(): void {
    const batch = this.queue;
    if (batch.length === 0) return;
    this.queue = [];
    this.queuedEvents = 0;
    this.write(batch);
  }
}
