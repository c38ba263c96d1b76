/**
 * GDPR erasure of one person (`kommo-sync erase EMAIL`): the jobs that delete them in every
 * destination that can, and a note on each of their Kommo leads saying where it was done.
 *
 * The jobs go through the normal queue, so they get the worker's retries, dead letters and replay,
 * and they run after everything already queued for the person: an erase job takes each of the
 * person's lead ordering keys (deleting twice is harmless), so an upsert queued earlier cannot
 * re-create the person after it.
 */
import { kommoJob, syncJob } from '../queue/jobs.js';
import type { PersonRef } from '../destinations/types.js';
import type { NewJob } from '../store/store.js';
import { personId } from './outbound.js';

export interface ErasureDestination {
  name: string;
  /** The destination type supports the erasePerson op. */
  canErase: boolean;
  identifyBy: 'email' | 'id';
}

export interface ErasureInput {
  account: string;
  /** Normalized (trimmed, lower case). */
  email: string;
  /** Kommo contacts with exactly this email. */
  contactIds: number[];
  /** Their leads, plus the leads the email index knows. */
  leadIds: number[];
  destinations: ErasureDestination[];
}

export interface ErasurePlan {
  jobs: NewJob[];
  /** Destinations that get an erase job. */
  erasedIn: string[];
  /** Destinations that cannot erase, with the reason (the operator erases there by hand). */
  skipped: Array<{ destination: string; reason: string }>;
}

export function planErasure(input: ErasureInput): ErasurePlan {
  const { account, email } = input;
  const keys = input.leadIds.length ? input.leadIds.map((id) => `lead:${id}`) : [`email:${email}`];
  const jobs: NewJob[] = [];
  const erasedIn: string[] = [];
  const skipped: ErasurePlan['skipped'] = [];
  for (const d of input.destinations) {
    if (!d.canErase) {
      skipped.push({ destination: d.name, reason: 'its API offers no erasure that kommo-sync supports' });
      continue;
    }
    let people: PersonRef[];
    if (d.identifyBy === 'email') people = [{ email }];
    else if (input.contactIds.length) people = input.contactIds.map((id) => ({ email, id: personId(id) }));
    else {
      skipped.push({ destination: d.name, reason: 'it identifies people by Kommo contact id, and no Kommo contact has this email' });
      continue;
    }
    erasedIn.push(d.name);
    for (const orderingKey of keys) {
      jobs.push(syncJob(account, d.name, orderingKey, email, people.map((person) => ({ kind: 'erasePerson' as const, person }))));
    }
  }
  const text = [
    `kommo-sync: personal data of ${email} erased on request`,
    erasedIn.length ? ` in ${erasedIn.join(', ')}` : ' (no destination could erase it)',
    skipped.length ? `; not erased in ${skipped.map((s) => s.destination).join(', ')}, erase it there by hand` : '',
    '. The Kommo contact itself is unchanged.',
  ].join('');
  for (const id of input.leadIds) jobs.push(kommoJob(account, `lead:${id}`, `lead ${id}`, { kind: 'addNote', leadId: id, text }));
  return { jobs, erasedIn, skipped };
}
