/**
 * Writing audit entries: an `audit.log` event in the outbox (the consumer
 * appends it to `audit_log`, once per event_id). Call `recordAudit` with the
 * transaction of the change when there is one, so the entry exists exactly when
 * the change does.
 */
import type { Kysely } from 'kysely';
import type { TenantSchema } from '../db/schema.js';
import { eventRow, recordEvent, type OutboxRow } from '../events/outbox.js';

export interface AuditEntry {
  tenantId: string | null;
  userId: string | null;
  /** What was done, e.g. `document.delete` or `POST /api/tenants/:tid/documents`. */
  action: string;
  actorEmail?: string | null;
  resourceType?: string | null;
  resourceId?: string | null;
  ip?: string | null;
  userAgent?: string | null;
  details?: Record<string, unknown>;
}

export async function recordAudit(trx: Kysely<TenantSchema>, e: AuditEntry): Promise<void> {
  await recordEvent(trx, 'audit.log', auditEvent(e));
}

/** The outbox row of an entry, for a change that writes its outbox rows itself (src/documents/upload.ts). */
export function auditRow(e: AuditEntry): OutboxRow {
  return eventRow('audit.log', auditEvent(e)).row;
}

function auditEvent(e: AuditEntry) {
  return {
    tenantId: e.tenantId,
    userId: e.userId,
    data: {
      action: e.action,
      actor_email: e.actorEmail ?? null,
      resource_type: e.resourceType ?? null,
      resource_id: e.resourceId ?? null,
      ip: e.ip ?? null,
      user_agent: e.userAgent ?? null,
      details: e.details ?? {},
    },
  };
}
