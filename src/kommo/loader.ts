/**
 * Batched reads for enrichment. The router asks for one lead per event; a webhook burst means
 * hundreds of asks at once, and Kommo allows 7 requests/s. So `loadLead` calls made close together
 * (same tick, or within `maxWaitMs`) are coalesced: per 250 lead ids ONE
 * `GET /leads?filter[id][]=..&with=contacts`, then ONE contacts request for those leads' main
 * contacts, and optionally ONE companies request. 2,000 concurrent loads = 8 + 8 requests.
 *
 * Nothing is cached across batches: each event must see the lead's current state.
 */
import { MAX_PAGE, type KommoClient } from './client.js';
import type { KommoCompany, KommoContact, KommoLead } from './schemas.js';

export interface LoadedLead {
  lead: KommoLead;
  /** The lead's main contact (`is_main`, else its first), or null when it has none. */
  contact: KommoContact | null;
  /** The lead's company when the loader reads companies and the lead has one. */
  company: KommoCompany | null;
}

export interface KommoLoaderOptions {
  /** How long the first call of a batch waits for others to join it (default 5 ms). */
  maxWaitMs?: number;
  /** Also read each lead's company (one more request per batch). */
  withCompanies?: boolean;
}

interface Waiter {
  promise: Promise<LoadedLead | null>;
  resolve: (v: LoadedLead | null) => void;
  reject: (err: unknown) => void;
}

export class KommoLoader {
  private pending = new Map<number, Waiter>();
  private timer: NodeJS.Timeout | null = null;
  private readonly maxWaitMs: number;
  private readonly withCompanies: boolean;

  constructor(private readonly client: Pick<KommoClient, 'getLeadsByIds' | 'getContactsByIds' | 'getCompaniesByIds'>, opts: KommoLoaderOptions = {}) {
    this.maxWaitMs = opts.maxWaitMs ?? 5;
    this.withCompanies = opts.withCompanies ?? false;
  }

  /** The lead with its main contact (and company), or null when Kommo no longer has it. */
  loadLead(id: number): Promise<LoadedLead | null> {
    const existing = this.pending.get(id);
    if (existing) return existing.promise;
    let resolve!: Waiter['resolve'];
    let reject!: Waiter['reject'];
    const promise = new Promise<LoadedLead | null>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.pending.set(id, { promise, resolve, reject });
    if (this.pending.size >= MAX_PAGE) this.flush(); // a full request's worth: no reason to wait
    else this.timer ??= setTimeout(() => this.flush(), this.maxWaitMs);
    return promise;
  }

  /** Convenience for callers holding a list: same coalescing as individual calls. */
  async loadLeads(ids: readonly number[]): Promise<Map<number, LoadedLead | null>> {
    const loaded = await Promise.all(ids.map(async (id) => [id, await this.loadLead(id)] as const));
    return new Map(loaded);
  }

  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const batch = this.pending;
    this.pending = new Map();
    const ids = [...batch.keys()];
    // Chunks run concurrently (the account limiter paces them) and fail independently.
    for (let i = 0; i < ids.length; i += MAX_PAGE) {
      const chunk = ids.slice(i, i + MAX_PAGE);
      this.loadChunk(chunk).then(
        (found) => {
          for (const id of chunk) batch.get(id)?.resolve(found.get(id) ?? null);
        },
        (err: unknown) => {
          for (const id of chunk) batch.get(id)?.reject(err);
        },
      );
    }
  }

  private async loadChunk(ids: number[]): Promise<Map<number, LoadedLead>> {
    // The loss reason rides along in the same request (`with=contacts,loss_reason`).
    const leads = await this.client.getLeadsByIds(ids, { withContacts: true, withLossReason: true });
    const loaded = await loadParties(this.client, leads, { withCompanies: this.withCompanies });
    return new Map(loaded.map((l) => [l.lead.id, l]));
  }
}

/**
 * The main contacts (and companies) of leads already read with `with=contacts`: ONE contacts
 * request per 250 leads (and one companies request). The loader uses it after its read by ids, a
 * backfill after each page it lists.
 */
export async function loadParties(
  client: Pick<KommoClient, 'getContactsByIds' | 'getCompaniesByIds'>,
  leads: readonly KommoLead[],
  opts: { withCompanies: boolean; signal?: AbortSignal },
): Promise<LoadedLead[]> {
  const contactIds = leads.map(mainContactId).filter((id): id is number => id !== null);
  const companyIds = opts.withCompanies
    ? leads.map((l) => l._embedded.companies[0]?.id).filter((id): id is number => id !== undefined)
    : [];
  const signal = opts.signal ? { signal: opts.signal } : {};
  const [contacts, companies] = await Promise.all([
    contactIds.length ? client.getContactsByIds(contactIds, signal) : Promise.resolve([]),
    companyIds.length ? client.getCompaniesByIds(companyIds, signal) : Promise.resolve([]),
  ]);
  const contactById = new Map(contacts.map((c) => [c.id, c]));
  const companyById = new Map(companies.map((c) => [c.id, c]));
  return leads.map((lead) => {
    const cid = mainContactId(lead);
    const coid = lead._embedded.companies[0]?.id;
    return {
      lead,
      contact: cid !== null ? contactById.get(cid) ?? null : null,
      company: coid !== undefined ? companyById.get(coid) ?? null : null,
    };
  });
}

export function mainContactId(lead: KommoLead): number | null {
  const links = lead._embedded.contacts;
  return (links.find((c) => c.is_main) ?? links[0])?.id ?? null;
}
