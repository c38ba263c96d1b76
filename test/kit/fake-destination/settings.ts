/** The fake vendor's config block: one secret (the API token), one optional (the webhook token). */
import { z } from 'zod';
import { secret } from '../../../src/model/index.js';

export const fakeSettings = z.object({
  /** API token, sent as `X-Fake-Token`. */
  token: secret(),
  /** The API root; the client appends `/v1/...`. */
  baseUrl: z.url({ protocol: /^https?$/ }),
  /** When set, webhooks must carry it in `X-Fake-Webhook-Token`. */
  webhookToken: secret().optional(),
}).strict();

export type FakeSettings = z.infer<typeof fakeSettings>;
