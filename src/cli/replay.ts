/**
 * `kommo-sync replay`: puts dead-lettered jobs back in the queue (a running serve or worker delivers
 * them), chosen by destination, creation date and lead; prints how many and which. `--dry-run` only
 * lists them. `--inbox` routes failed inbox events again instead. A replay also ends an account's
 * pause (Kommo refused its credentials): the operator says the cause is fixed.
 */
import type { StoreConfig } from '../config/load.js';
import type { Job, JobFilter, Store } from '../store/store.js';
import { withStore } from './context.js';
import { UsageError } from './errors.js';

export interface ReplayOptions {
  config?: string;
  dead?: boolean;
  inbox?: boolean;
  destination?: string;
  since?: string;
  lead?: string;
  dryRun?: boolean;
}

/** Jobs listed one per line; the rest are counted. */
const SHOWN = 20;
/** Jobs read to list them (the re-queue itself has no limit). */
const LISTED = 10_000;

export async function replay(o: ReplayOptions): Promise<void> {
  if (o.inbox) {
    if (o.destination !== undefined || o.lead !== undefined || o.since !== undefined) throw new UsageError('--inbox re-queues every failed inbox event; --destination, --lead and --since choose jobs');
    await withStore(o.config, async (store) => {
      if (o.dryRun) {
        const n = (await store.stats(Date.now())).inboxFailed;
        process.stdout.write(`${n} failed inbox event${n === 1 ? '' : 's'} would be re-queued for routing (dry run: nothing changed).\n`);
        return;
      }
      const n = await store.requeueInbox();
      process.stdout.write(`${n} failed inbox event${n === 1 ? '' : 's'} re-queued for routing.\n`);
    });
    return;
  }
  let since: number | undefined;
  if (o.since) {
    since = Date.parse(o.since);
    if (Number.isNaN(since)) throw new UsageError(`--since: expected a date like 2026-11-20 or 2026-11-20T10:00:00Z, got "${o.since}"`);
  }
  let lead: number | undefined;
  if (o.lead !== undefined) {
    lead = Number(o.lead);
    if (!/^\d+$/.test(o.lead.trim()) || !Number.isSafeInteger(lead)) throw new UsageError(`--lead: expected a Kommo lead id (a number), got "${o.lead}"`);
  }
  await withStore(o.config, async (store, cfg) => {
    const destination = o.destination === undefined ? undefined : destinationKey(o.destination, cfg);
    const filter: JobFilter = {
      state: 'dead',
      ...(destination !== undefined ? { destination } : {}),
      ...(since !== undefined ? { since } : {}),
      ...(lead !== undefined ? { orderingKey: `lead:${lead}` } : {}),
    };
    const jobs = await store.listJobs({ ...filter, limit: LISTED });
    const scope = [destination ? `for ${destination}` : '', lead !== undefined ? `of lead ${lead}` : '', since !== undefined ? `created since ${new Date(since).toISOString()}` : ''].filter(Boolean).join(' ');
    if (o.dryRun) {
      process.stdout.write(`${count(jobs.length)} dead-lettered job${jobs.length === 1 ? '' : 's'}${scope ? ` ${scope}` : ''} would be re-queued (dry run: nothing changed)${jobs.length ? ':' : '.'}\n`);
      printJobs(jobs);
      return;
    }
    const n = await store.requeueJobs(filter);
    process.stdout.write(`${n} dead-lettered job${n === 1 ? '' : 's'} re-queued${scope ? ` ${scope}` : ''}. A running serve or worker process delivers them now.\n`);
    printJobs(jobs);
    await resumeAccounts(store, cfg, destination);
  });
}

function count(n: number): string {
  return n >= LISTED ? `at least ${n}` : String(n);
}

function printJobs(jobs: Job[]): void {
  for (const j of jobs.slice(0, SHOWN)) {
    const subject = subjectOf(j);
    process.stdout.write(`  #${j.id} ${j.destination} ${j.orderingKey}${subject ? ` ${subject}` : ''}: ${oneLine(j.lastError ?? 'no reason recorded')}\n`);
  }
  if (jobs.length > SHOWN) process.stdout.write(`  ... and ${jobs.length - SHOWN}${jobs.length >= LISTED ? '+' : ''} more\n`);
}

/** The job's `subject` (who it is about), when its payload has one. */
function subjectOf(j: Job): string {
  const p = j.payload;
  return typeof p === 'object' && p !== null && typeof (p as { subject?: unknown }).subject === 'string' ? (p as { subject: string }).subject : '';
}

function oneLine(s: string): string {
  const line = s.replace(/\s+/g, ' ').trim();
  return line.length > 160 ? `${line.slice(0, 157)}...` : line;
}

/**
 * A paused account (Kommo refused its credentials) is resumed: replaying is how an operator says
 * the cause is fixed. A running service notices within seconds and retries its Kommo work.
 */
async function resumeAccounts(store: Store, cfg: StoreConfig, destination: string | undefined): Promise<void> {
  const accounts = destination ? [destination.slice(0, destination.indexOf('/'))] : Object.keys(cfg.accounts);
  for (const a of accounts) {
    if ((await store.kvGet(`paused:${a}`)) === null) continue;
    await store.kvDelete(`paused:${a}`);
    process.stdout.write(`Account ${a} was paused (Kommo refused its credentials): resumed; a running service tries its Kommo work again now.\n`);
  }
}

/**
 * `cio` or `acme/cio` -> the queue's `acme/cio`. An unknown name is an error naming the known ones
 * (each account's destinations, and `kommo` for its Kommo writes): a typo would re-queue nothing.
 */
export function destinationKey(given: string, cfg: StoreConfig): string {
  const known = Object.entries(cfg.accounts).flatMap(([account, names]) => [...names, 'kommo'].map((n) => `${account}/${n}`));
  const accounts = Object.keys(cfg.accounts);
  let key = given;
  if (!given.includes('/')) {
    if (accounts.length > 1) throw new UsageError(`--destination: several accounts are configured (${accounts.join(', ')}); write it as account/name, one of: ${known.join(', ')}`);
    key = `${accounts[0] ?? ''}/${given}`;
  }
  if (!known.includes(key)) {
    throw new UsageError(`--destination: no destination "${given}" in ${cfg.file}; expected one of: ${known.join(', ') || '(no accounts configured)'}`);
  }
  return key;
}
