/**
 * Writes into Kommo, queued as jobs for the `kommo` destination like any vendor operation, so they
 * share the worker's retries, dead letters, replay and the account's rate limit.
 */
export type KommoOp =
  | { kind: 'addNote'; leadId: number; text: string }
  | {
      kind: 'addTask';
      leadId: number;
      text: string;
      /** Unix seconds. */
      completeTill: number;
      responsibleUserId?: number;
      taskTypeId: number;
    }
  | {
      kind: 'updateContact';
      contactId: number;
      /** Custom field writes by id (resolved from names when the rule was compiled) or code. */
      fields?: Array<{ fieldId?: number; fieldCode?: string; value: string | number | boolean }>;
      tagsToAdd?: string[];
    }
  | { kind: 'moveLead'; leadId: number; pipelineId: number; statusId: number };

export type KommoOpKind = KommoOp['kind'];
