/**
 * Echo suppression. Kommo fires the account's webhooks for changes made through the API too, and
 * offers no "origin" flag (vendor-apis/kommo.md 3.3). So for every entity we PATCH we remember the
 * `updated_at` Kommo returned; when a webhook arrives carrying exactly that `updated_at`, it is our
 * own write coming back and the router drops it instead of syncing it out again (no sync loops).
 * `updated_at` strictly increases per entity, so a later human edit never matches a mark.
 */
import type { Store } from '../store/store.js';

export type EchoEntity = 'lead' | 'contact';

export interface EchoMarks {
  /** Our write produced this version of the entity (`updatedAt`: unix seconds from Kommo). */
  remember(entity: EchoEntity, id: number, updatedAt: number): Promise<void>;
  /** Per item: true when this exact version was produced by our own write (one store query for all). */
  echoes(items: Array<{ entity: EchoEntity; id: number; updatedAt: number }>): Promise<boolean[]>;
}

/**
 * Kommo's own retries of a webhook span roughly 1.5 h (+5 min, +15 min, +15 min, +1 h: kommo.md
 * 1.4), so a mark must outlive them; after that it is useless and expires.
 */
export const ECHO_TTL_MS = 2 * 60 * 60_000;

/** Marks kept in the store's key-value area, so every router process sees every worker's writes. */
export class StoreEchoMarks implements EchoMarks {
  constructor(
    private readonly store: Pick<Store, 'kvGetMany' | 'kvSet'>,
    private readonly account: string,
    private readonly ttlMs: number = ECHO_TTL_MS,
    private readonly now: () => number = Date.now,
  ) {}

  async remember(entity: EchoEntity, id: number, updatedAt: number): Promise<void> {
    await this.store.kvSet(this.key(entity, id, updatedAt), '1', this.ttlMs, this.now());
  }

  async echoes(items: Array<{ entity: EchoEntity; id: number; updatedAt: number }>): Promise<boolean[]> {
    const keys = items.map((i) => this.key(i.entity, i.id, i.updatedAt));
    const found = await this.store.kvGetMany(keys);
    return keys.map((k) => found.has(k));
  }

  private key(entity: EchoEntity, id: number, updatedAt: number): string {
    return `kommo-echo:${this.account}:${entity}:${id}:${updatedAt}`;
  }
}
