/**
 * The webhook the ingest benches send: a Kommo `leads[status]` webhook as Kommo's PHP backend
 * encodes it (form, bracket keys percent-encoded, every value a string), shaped like
 * test/fixtures/kommo/status-change.txt with tags, custom fields (enum, text and date values) and
 * the account block. About 1.5 KB, like the real thing.
 */
import { encodeBracketForm } from '../src/kommo/form.js';

const ID = 'XXLEADIDXX';
const STAMP = 'XXSTAMPXX';

export interface BodyStages {
  statusId: number;
  oldStatusId: number;
  pipelineId: number;
  subdomain: string;
}

/** The encoded body split around the lead id and the last_modified placeholders (see fillBody). */
export function bodyTemplate(s: BodyStages): string[] {
  const form = encodeBracketForm({
    leads: {
      status: [
        {
          id: ID,
          name: 'Seminar package - annual renewal',
          status_id: String(s.statusId),
          old_status_id: String(s.oldStatusId),
          price: '22500',
          responsible_user_id: '2079676',
          last_modified: STAMP,
          modified_user_id: '2079718',
          created_user_id: '2076025',
          date_create: '1539782209',
          pipeline_id: String(s.pipelineId),
          tags: [{ id: '80147', name: 'repeat' }],
          account_id: '17769199',
          custom_fields: [
            { id: '66339', name: 'Source', values: [{ value: 'Site', enum: '139517' }] },
            { id: '66341', name: 'Industry', values: [{ value: 'Health & Fitness', enum: '139602' }] },
            { id: '72333', name: 'Renewal date', values: ['1542067200'] },
          ],
        },
      ],
    },
    account: { subdomain: s.subdomain, id: '17769199', _links: { self: `https://${s.subdomain}.kommo.com` } },
  });
  const parts: string[] = [];
  let rest = form;
  for (const marker of [ID, STAMP]) {
    const i = rest.indexOf(marker);
    if (i < 0) throw new Error(`placeholder ${marker} missing from the encoded form`);
    parts.push(rest.slice(0, i));
    rest = rest.slice(i + marker.length);
  }
  parts.push(rest);
  return parts;
}

/** One body: a new lead id and last_modified give a new dedup key, so no webhook is a duplicate. */
export function fillBody(parts: string[], leadId: number, lastModified: string): string {
  return parts[0]! + String(leadId) + parts[1]! + lastModified + parts[2]!;
}
