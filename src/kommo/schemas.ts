/**
 * Kommo REST API v4 answers, as zod schemas (vendor-apis/kommo.md section 2.6). Loose objects, so
 * fields Kommo adds later pass through; missing optional fields get their neutral value here, at
 * the edge, so callers get types instead of `unknown`.
 */
import { z } from 'zod';

const int = z.number().int();
const nullableInt = int.nullish().transform((v) => v ?? null);

export const tagSchema = z.looseObject({ id: int, name: z.string() });

const customFieldValueItemSchema = z.looseObject({
  value: z.unknown(),
  enum_id: int.nullish(),
  enum_code: z.string().nullish(),
});

export const customFieldValueSchema = z.looseObject({
  field_id: int,
  field_name: z.string().nullish(),
  field_code: z.string().nullish(),
  field_type: z.string().nullish(),
  values: z.array(customFieldValueItemSchema).nullish().transform((v) => v ?? []),
});
export type KommoCustomFieldValue = z.infer<typeof customFieldValueSchema>;

const customFieldsValues = z.array(customFieldValueSchema).nullish().transform((v) => v ?? null);
const tagsList = z.array(tagSchema).nullish().transform((v) => v ?? []);

export const lossReasonSchema = z.looseObject({ id: int, name: z.string() });
export type KommoLossReason = z.infer<typeof lossReasonSchema>;

export const leadSchema = z.looseObject({
  id: int,
  name: z.string().nullish().transform((v) => v ?? ''),
  price: z.number().nullish().transform((v) => v ?? 0),
  status_id: int,
  pipeline_id: int,
  responsible_user_id: int.nullish().transform((v) => v ?? 0),
  created_at: int,
  updated_at: int,
  closed_at: nullableInt,
  loss_reason_id: nullableInt,
  custom_fields_values: customFieldsValues,
  is_deleted: z.boolean().nullish().transform((v) => v ?? false),
  _embedded: z
    .looseObject({
      tags: tagsList,
      contacts: z.array(z.looseObject({ id: int, is_main: z.boolean().nullish() })).nullish().transform((v) => v ?? []),
      companies: z.array(z.looseObject({ id: int })).nullish().transform((v) => v ?? []),
      // `with=loss_reason`: a list of one in Kommo's examples; an object is accepted too.
      loss_reason: z.union([z.array(lossReasonSchema), lossReasonSchema.transform((r) => [r])]).nullish().catch(null)
        .transform((v) => v ?? []),
    })
    .nullish()
    .transform((v) => v ?? { tags: [], contacts: [], companies: [], loss_reason: [] }),
});
export type KommoLead = z.infer<typeof leadSchema>;

export const contactSchema = z.looseObject({
  id: int,
  name: z.string().nullish().transform((v) => v ?? ''),
  first_name: z.string().nullish().transform((v) => v ?? ''),
  last_name: z.string().nullish().transform((v) => v ?? ''),
  responsible_user_id: int.nullish().transform((v) => v ?? 0),
  created_at: int.nullish(),
  updated_at: int.nullish(),
  custom_fields_values: customFieldsValues,
  _embedded: z
    .looseObject({
      tags: tagsList,
      companies: z.array(z.looseObject({ id: int })).nullish().transform((v) => v ?? []),
      leads: z.array(z.looseObject({ id: int })).nullish().transform((v) => v ?? []),
    })
    .nullish()
    .transform((v) => v ?? { tags: [], companies: [], leads: [] }),
});
export type KommoContact = z.infer<typeof contactSchema>;

export const companySchema = z.looseObject({
  id: int,
  name: z.string().nullish().transform((v) => v ?? ''),
  custom_fields_values: customFieldsValues,
});
export type KommoCompany = z.infer<typeof companySchema>;

export const statusSchema = z.looseObject({
  id: int,
  name: z.string(),
  sort: int.nullish(),
  pipeline_id: int.nullish(),
  /** 1 = "Incoming leads", 0 = regular (142/143 included). */
  type: int.nullish().transform((v) => v ?? 0),
});
export const pipelineSchema = z.looseObject({
  id: int,
  name: z.string(),
  sort: int.nullish(),
  is_main: z.boolean().nullish(),
  is_archive: z.boolean().nullish(),
  _embedded: z.looseObject({ statuses: z.array(statusSchema).nullish().transform((v) => v ?? []) }).nullish()
    .transform((v) => v ?? { statuses: [] }),
});
export type KommoPipeline = z.infer<typeof pipelineSchema>;

export const customFieldSchema = z.looseObject({
  id: int,
  name: z.string(),
  code: z.string().nullish().transform((v) => v ?? null),
  type: z.string(),
  sort: int.nullish(),
  enums: z.array(z.looseObject({ id: int, value: z.string(), sort: int.nullish() })).nullish().transform((v) => v ?? null),
});
export type KommoCustomField = z.infer<typeof customFieldSchema>;

export const userSchema = z.looseObject({
  id: int,
  name: z.string().nullish().transform((v) => v ?? ''),
  email: z.string().nullish().transform((v) => v ?? ''),
});
export type KommoUser = z.infer<typeof userSchema>;

export const webhookSchema = z.looseObject({
  destination: z.string(),
  disabled: z.boolean().nullish().transform((v) => v ?? false),
  settings: z.array(z.string()).nullish().transform((v) => v ?? []),
});
export type KommoWebhook = z.infer<typeof webhookSchema>;

/**
 * One entry of the account's event log (GET /api/v4/events). `value_after`/`value_before` differ
 * per type and are partly unconfirmed (kommo.md): read them with `leadStatusIn`.
 */
export const eventSchema = z.looseObject({
  id: z.union([z.string(), z.number()]).transform(String),
  type: z.string(),
  entity_id: int,
  entity_type: z.string().nullish(),
  created_by: int.nullish().transform((v) => v ?? 0),
  created_at: int,
  value_after: z.unknown(),
  value_before: z.unknown(),
});
export type KommoEvent = z.infer<typeof eventSchema>;

const leadStatusValue = z.looseObject({ lead_status: z.looseObject({ id: int, pipeline_id: int.nullish() }) });

/** The `{lead_status: {id, pipeline_id}}` in an event value (a list of one, or the object itself). */
export function leadStatusIn(value: unknown): { statusId: number; pipelineId: number | null } | null {
  for (const item of Array.isArray(value) ? value : [value]) {
    const r = leadStatusValue.safeParse(item);
    if (r.success) return { statusId: r.data.lead_status.id, pipelineId: r.data.lead_status.pipeline_id ?? null };
  }
  return null;
}

export const accountInfoSchema = z.looseObject({
  id: int,
  name: z.string(),
  subdomain: z.string(),
  current_user_id: int.nullish(),
  country: z.string().nullish(),
  currency: z.string().nullish(),
});
export type KommoAccountInfo = z.infer<typeof accountInfoSchema>;

const pageLinks = z
  .looseObject({ next: z.looseObject({ href: z.string() }).nullish() })
  .nullish();

export function pageSchema<T extends z.ZodType>(key: string, item: T) {
  return z.looseObject({
    _links: pageLinks,
    _embedded: z.looseObject({ [key]: z.array(item) }),
  });
}

/** What a write answers per created/updated item. */
export const writtenItemSchema = z.looseObject({
  id: int,
  request_id: z.union([z.string(), z.number()]).nullish(),
  updated_at: int.nullish(),
});

export const validationErrorsSchema = z.array(
  z.looseObject({
    request_id: z.union([z.string(), z.number()]).transform(String),
    errors: z.array(z.looseObject({ code: z.string().nullish(), path: z.string().nullish(), detail: z.string().nullish() }))
      .nullish().transform((v) => v ?? []),
  }),
);
export type KommoValidationErrors = z.infer<typeof validationErrorsSchema>;
