/**
 * GDPR erasure of one person (`kommo-sync erase EMAIL`): the jobs that delete them in every
 * destination that can, and a note on each of their Kommo leads saying where it was done.
 *
 * The jobs go through the normal queue, so they get the worker's retries, dead letters and replay,
 * and they run after everything already queued for the person: an erase job takes each of the
 * person's lead ordering keys (deleting twice is harmless), so an upsert queued earlier cannot
 * re-create the person after it.
 */
import type { KommoOp, PersonRef, SyncOp } from '../model/index.js';
import { personId } from './outbound.js';

export interface ErasureDestination {
  name: string;
  /** The destination type supports the erasePerson op. */
  canErase: boolean;
  /** Why it cannot, in the destination's own words (its `unsupportedReasons.erasePerson`). */
  whyNot?: string;
  identifyBy: 'email' | 'id';
}

export interface ErasureInput {
  /** Normalized (trimmed, lower case). */
  email: string;
  /** Kommo contacts with exactly this email. */
  contactIds: number[];
  /** Their leads, plus the leads the email index knows. */
  leadIds: number[];
  destinations: ErasureDestination[];
}

export interface ErasurePlan {
  /** The person's email: what the queued work is about. */
  subject: string;
  /** erasePerson ops per destination and ordering key (one per lead key: after anything queued). */
  erase: Array<{ destination: string; orderingKey: string; ops: SyncOp[] }>;
  /** A note on each of the person's Kommo leads. */
  notes: Array<{ orderingKey: string; op: KommoOp }>;
  /** Destinations that get an erase job. */
  erasedIn: string[];
  /** Destinations that cannot erase, with the reason (the operator erases there by hand). */
  skipped: Array<{ destination: string; reason: string }>;
}

export function planErasure(input: ErasureInput): ErasurePlan {
  const { email } = input;
  const keys = input.leadIds.length ? input.leadIds.map((id) => `lead:${id}`) : [`email:${email}`];
  const erase: ErasurePlan['erase'] = [];
  const erasedIn: string[] = [];
  const skipped: ErasurePlan['skipped'] = [];
  for (const d of input.destinations) {
    if (!d.canErase) {
      skipped.push({ destination: d.name, reason: d.whyNot ?? 'its API offers no erasure that kommo-sync supports' });
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
    for (const orderingKey of keys) erase.push({ destination: d.name, orderingKey, ops: people.map((person) => ({ kind: 'erasePerson' as const, person })) });
  }
  const text = [
    `kommo-sync: personal data of ${email} erased on request`,
    erasedIn.length ? ` in ${erasedIn.join(', ')}` : ' (no destination could erase it)',
    skipped.length ? `; not erased in ${skipped.map((s) => s.destination).join(', ')}, erase it there by hand` : '',
    '. The Kommo contact itself is unchanged.',
  ].join('');
  const notes = input.leadIds.map((id) => ({ orderingKey: `lead:${id}`, op: { kind: 'addNote' as const, leadId: id, text } }));
  return { subject: email, erase, notes, erasedIn, skipped };
}
