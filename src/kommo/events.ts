/**
 * Kommo's event log (GET /api/v4/events) -> the CRM events a webhook would have brought, with the
 * SAME dedup keys (built by `leadDedupKey`, like the webhook parser's), so that a change the inbox
 * already holds is not stored twice and one it never saw is routed late instead of never.
 *
 * Only lead additions and stage moves are read: they are what starts campaigns and fills lists, and
 * Kommo logs them with the data the keys need (the lead, its stage, the moment of the change).
 */
import type { CrmEvent, NormalizedInbound } from '../model/index.js';
import { leadStatusIn, type KommoEvent } from './schemas.js';
import { kommoKeyScope, leadDedupKey, stageKind } from './webhook.js';

/** The event types reconciliation asks Kommo for. */
export const RECONCILED_EVENT_TYPES = ['lead_added', 'lead_status_changed'] as const;

export interface EventContext {
  /** The account's subdomain (what intake checks a webhook's `account[subdomain]` against). */
  subdomain: string;
  /**
   * The pipeline a stage id belongs to, when the event does not say (a third-party capture shows
   * `{"lead_status":{"id":2}}`): stage ids are unique across pipelines except won (142) and lost
   * (143), which exist in every pipeline.
   */
  pipelineOfStatus(statusId: number): number | null;
}

/**
 * The inbox event for one Kommo event, or null for a type or shape it does not cover. The stamp in
 * a stage move's key is the event's `created_at`: Kommo sets the lead's `updated_at` (the webhook's
 * stamp) in the same change (the simulator does exactly that; reconcile callers also look for a key
 * a few seconds off, see `nearbyStageKeys`).
 */
export function inboundFromEvent(e: KommoEvent, ctx: EventContext): NormalizedInbound | null {
  if (e.entity_type && e.entity_type !== 'lead') return null;
  const scope = kommoKeyScope(ctx.subdomain);
  const after = leadStatusIn(e.value_after);
  const before = leadStatusIn(e.value_before);
  const pipelineOf = (s: { statusId: number; pipelineId: number | null } | null): number | undefined =>
    s ? s.pipelineId ?? ctx.pipelineOfStatus(s.statusId) ?? undefined : undefined;
  const common = { type: 'crm' as const, entityId: e.entity_id, entityType: 'lead' as const, updatedAt: e.created_at, subdomain: ctx.subdomain };
  if (e.type === 'lead_added') {
    const pipelineId = pipelineOf(after);
    const event: CrmEvent = compact({
      ...common,
      kind: 'lead.created',
      pipelineId,
      statusId: after?.statusId,
      entity: entityOf({ id: e.entity_id, status_id: after?.statusId, pipeline_id: pipelineId, updated_at: e.created_at }),
    });
    return { dedupKey: leadDedupKey(scope, e.entity_id, 'lead.created', { stamp: String(e.created_at) }), event };
  }
  if (e.type === 'lead_status_changed') {
    if (!after) return null;
    const pipelineId = pipelineOf(after) ?? pipelineOf(before);
    const oldPipelineId = pipelineOf(before) ?? pipelineId;
    const kind = stageKind(after.statusId);
    const event: CrmEvent = compact({
      ...common,
      kind,
      pipelineId,
      statusId: after.statusId,
      oldPipelineId: before ? oldPipelineId : undefined,
      oldStatusId: before?.statusId,
      entity: entityOf({ id: e.entity_id, status_id: after.statusId, pipeline_id: pipelineId, old_status_id: before?.statusId, old_pipeline_id: before ? oldPipelineId : undefined, updated_at: e.created_at }),
    });
    return { dedupKey: leadDedupKey(scope, e.entity_id, kind, { pipelineId, statusId: after.statusId, stamp: String(e.created_at) }), event };
  }
  return null;
}

/**
 * The keys a webhook of the same stage move would carry if Kommo's `updated_at` differed from the
 * event's `created_at` by up to `slackSeconds` (unconfirmed that they are always equal): a webhook
 * that brought the move under one of them means the move was seen.
 */
export function nearbyStageKeys(inbound: NormalizedInbound, subdomain: string, slackSeconds: number): string[] {
  const e = inbound.event;
  if (e.type !== 'crm' || e.updatedAt === undefined) return [];
  if (e.kind !== 'lead.stage_changed' && e.kind !== 'lead.won' && e.kind !== 'lead.lost') return [];
  const out: string[] = [];
  for (let d = -slackSeconds; d <= slackSeconds; d++) {
    out.push(leadDedupKey(kommoKeyScope(subdomain), e.entityId, e.kind, { pipelineId: e.pipelineId, statusId: e.statusId, stamp: String(e.updatedAt + d) }));
  }
  return out;
}

/** The webhook's v2 shape: every value a string, nothing undefined. */
function entityOf(fields: Record<string, number | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) out[k] = String(v);
  return out;
}

function compact<T extends object>(o: T): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v;
  return out as T;
}
