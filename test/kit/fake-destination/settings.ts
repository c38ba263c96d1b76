/** The fake vendor's config block: one secret (the API credential), one optional (the webhook token). */
import { z } from 'zod';
import { secret } from '../../../src/model/index.js';

export const fakeSettings = z.object({
  /** The API credential, sent as `X-Fake-Token`; named unlike a secret on purpose (masking must follow the mark, not the name). */
  passphrase: secret(),
  /** The API root; the client appends `/v1/...`. */
  baseUrl: z.url({ protocol: /^https?$/ }),
  /** When set, webhooks must carry it in `X-Fake-Webhook-Token`. */
  webhookToken: secret().optional(),
}).strict();

export type FakeSettings = z.infer<typeof fakeSettings>;
