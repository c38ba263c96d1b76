/**
 * `kommo-sync erase EMAIL`: GDPR erasure of one person. Looks the person up in Kommo (contacts with
 * exactly this email, and their leads), queues their deletion in every destination that supports
 * it and a note on each of their leads, then forgets the email in kommo-sync's own store (the
 * email -> lead index and the hot-lead counters). A running serve or worker delivers the jobs;
 * `status` shows them.
 */
import pino from 'pino';
import type { KommoContact } from '../kommo/schemas.js';
import { normalizeEmail } from '../model/index.js';
import { AccountRuntime } from '../runtime/account.js';
import { errorMessage } from '../store/errors.js';
import { openStore } from '../store/open.js';
import type { Job, ScrubCounts, Store } from '../store/store.js';
import { kommoJob, syncJob } from '../queue/jobs.js';
import { planErasure } from '../sync/erase.js';
import { loadConfig } from './context.js';
import { UsageError } from './errors.js';

interface AccountResult {
  account: string;
  contacts: number[];
  leads: number[];
  erasedIn: string[];
  skipped: Array<{ destination: string; reason: string }>;
  jobs: number;
  /** What was removed from kommo-sync's own log (stored events, finished jobs, delivery lines). */
  scrubbed: ScrubCounts;
  /** Set when Kommo could not be searched: only the leads kommo-sync already knew are covered. */
  kommoError?: string;
  /** With --wait: per destination (and `kommo` for the notes), what became of its jobs. */
  outcome?: Record<string, Outcome>;
}

/** done: delivered; failed: dead-lettered (with the reason); queued: not delivered when the wait ended. */
type Outcome = { state: 'done' } | { state: 'failed'; reason: string } | { state: 'queued' };

/** How long --wait waits for the jobs (a service that is down leaves them queued). */
const WAIT_MS = 10 * 60_000;

export async function erase(o: { email: string; config?: string; account?: string; json?: boolean; wait?: boolean }): Promise<void> {
  const email = normalizeEmail(o.email);
  if (!/^[^@\s]+@[^@\s]+$/.test(email)) throw new UsageError(`expected an email address, got "${o.email}"`);
  const loaded = loadConfig(o.config);
  const names = Object.keys(loaded.config.accounts);
  if (o.account !== undefined && !names.includes(o.account)) {
    throw new UsageError(`--account: no account "${o.account}" in ${loaded.file} (configured: ${names.join(', ')})`);
  }
  const store = await openStore(loaded.config.store);
  const log = pino({ level: 'silent' });
  const results: AccountResult[] = [];
  const queued = new Map<string, number[]>();
  try {
    for (const name of o.account !== undefined ? [o.account] : names) {
      const rt = new AccountRuntime(name, loaded.config.accounts[name]!, loaded.destinations[name] ?? [], loaded, store, log);
      let contacts: KommoContact[] = [];
      let kommoError: string | undefined;
      try {
        contacts = await rt.client.searchContactsByEmail(email);
      } catch (err) {
        kommoError = errorMessage(err);
      }
      const known = await store.leadsByEmail(name, email);
      const leads = [...new Set([...contacts.flatMap((c) => c._embedded.leads.map((l) => l.id)), ...known])];
      const plan = planErasure({
        email,
        contactIds: contacts.map((c) => c.id),
        leadIds: leads,
        destinations: rt.active.map((a) => ({
          name: a.cfg.name,
          canErase: a.dest.supports.erasePerson === true,
          ...(a.dest.unsupportedReasons?.erasePerson ? { whyNot: a.dest.unsupportedReasons.erasePerson } : {}),
          identifyBy: a.cfg.common.identifyBy,
        })),
      });
      const jobs = [
        ...plan.erase.map((e) => syncJob(name, e.destination, e.orderingKey, plan.subject, e.ops)),
        ...plan.notes.map((n) => kommoJob(name, n.orderingKey, plan.subject, n.op)),
      ];
      const jobIds = jobs.length ? await store.enqueueJobs(jobs) : [];
      const scrubbed = await rt.forgetPerson(email);
      results.push({ account: name, contacts: contacts.map((c) => c.id), leads, erasedIn: plan.erasedIn, skipped: plan.skipped, jobs: jobIds.length, scrubbed, ...(kommoError ? { kommoError } : {}) });
      queued.set(name, jobIds);
    }
    if (o.wait) {
      if (!o.json) process.stdout.write(`waiting for a running serve or worker to deliver ${[...queued.values()].flat().length} job(s)...\n`);
      await waitFor(store, queued, results);
    }
  } finally {
    await store.close();
  }

  if (o.json) {
    process.stdout.write(`${JSON.stringify({ email, accounts: results })}\n`);
  } else {
    for (const r of results) {
      process.stdout.write(`account ${r.account}: ${r.contacts.length} Kommo contact${r.contacts.length === 1 ? '' : 's'} and ${r.leads.length} lead${r.leads.length === 1 ? '' : 's'} with ${email}\n`);
      if (r.kommoError) process.stdout.write(`  WARNING Kommo could not be searched (${r.kommoError}); only the leads kommo-sync already knew are covered. Run erase again once Kommo answers.\n`);
      process.stdout.write(r.erasedIn.length ? `  erasure queued in: ${r.erasedIn.join(', ')}\n` : '  no destination can erase this person\n');
      for (const s of r.skipped) process.stdout.write(`  NOT erased in ${s.destination}: ${s.reason}; erase it there by hand\n`);
      if (r.leads.length) process.stdout.write(`  a note on ${r.leads.length === 1 ? 'the lead' : `each of the ${r.leads.length} leads`} records it\n`);
      process.stdout.write('  forgotten by kommo-sync: the email index, hot-lead counters and opt-out marks\n');
      const sc = r.scrubbed;
      const n = (count: number, what: string) => `${count} ${what}${count === 1 ? '' : 's'}`;
      process.stdout.write(`  removed from kommo-sync's log: ${n(sc.events, 'stored event')} emptied, ${n(sc.jobs, 'finished job')} and ${n(sc.deliveries, 'delivery line')} deleted (this erasure's own jobs keep the address until retention prunes them)\n`);
      for (const [destination, out] of Object.entries(r.outcome ?? {})) {
        const what = destination === 'kommo' ? 'note in Kommo' : `erasure in ${destination}`;
        if (out.state === 'done') process.stdout.write(`  done: ${what}\n`);
        else if (out.state === 'failed') process.stdout.write(`  FAILED: ${what}: ${out.reason} (kommo-sync replay --dead --destination ${destination} once fixed)\n`);
        else process.stdout.write(`  still queued: ${what} (is a serve or worker running? \`kommo-sync status\` shows the queue)\n`);
      }
    }
    const jobs = results.reduce((n, r) => n + r.jobs, 0);
    if (!o.wait) process.stdout.write(`${jobs} job${jobs === 1 ? '' : 's'} queued. A running serve or worker process delivers them; \`kommo-sync status\` shows them.\n`);
  }
  const incomplete = (r: AccountResult) => Object.values(r.outcome ?? {}).some((x) => x.state !== 'done');
  if (results.some((r) => r.kommoError || r.skipped.length || incomplete(r))) process.exitCode = 1;
}

/** --wait: polls the queued jobs until each is delivered or dead-lettered (or WAIT_MS passes). */
async function waitFor(store: Store, queued: Map<string, number[]>, results: AccountResult[]): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  const final = new Map<number, Job>();
  const all = [...queued.values()].flat();
  while (final.size < all.length && Date.now() < deadline) {
    for (const id of all) {
      if (final.has(id)) continue;
      const job = await store.getJob(id);
      if (job && (job.state === 'done' || job.state === 'dead')) final.set(id, job);
    }
    if (final.size < all.length) await new Promise((r) => setTimeout(r, 250));
  }
  // Per destination the worst of its jobs: failed, then still queued, then done.
  const rank = { failed: 2, queued: 1, done: 0 } as const;
  for (const r of results) {
    const outcome: Record<string, Outcome> = {};
    for (const id of queued.get(r.account) ?? []) {
      const job = final.get(id) ?? (await store.getJob(id));
      if (!job) continue;
      const destination = job.destination.slice(job.destination.indexOf('/') + 1);
      const now: Outcome = job.state === 'dead' ? { state: 'failed', reason: job.lastError ?? 'dead-lettered' } : job.state === 'done' ? { state: 'done' } : { state: 'queued' };
      const prev = outcome[destination];
      if (!prev || rank[now.state] > rank[prev.state]) outcome[destination] = now;
    }
    r.outcome = outcome;
  }
}
