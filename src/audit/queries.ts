/** Reading the audit trail (control-plane table `audit_log`, migration control/0003_audit). */
import { sql, type Kysely } from 'kysely';
import type { Selectable } from 'kysely';
import type { AuditLogTable, ControlSchema } from '../db/schema.js';

/** An audit entry as read back (`details` parsed from jsonb). */
export type AuditRow = Selectable<AuditLogTable>;

export interface AuditFilter {
  tenantId: string;
  action?: string;
  userId?: string;
  since?: string;
  until?: string;
  limit: number;
  offset: number;
}

export async function listAudit(db: Kysely<ControlSchema>, f: AuditFilter): Promise<{ rows: AuditRow[]; total: number }> {
  const where = sql.join(
    [
      sql`tenant_id = ${f.tenantId}`,
      ...(f.action ? [sql`action = ${f.action}`] : []),
      ...(f.userId ? [sql`user_id = ${f.userId}`] : []),
      ...(f.since ? [sql`occurred_at >= ${f.since}::timestamptz`] : []),
      ...(f.until ? [sql`occurred_at < ${f.until}::timestamptz`] : []),
    ],
    sql` AND `,
  );
  const [rows, count] = await Promise.all([
    sql<AuditRow>`
      SELECT id, event_id, tenant_id, user_id, actor_email, action, resource_type, resource_id, ip, user_agent,
             details, occurred_at, recorded_at
      FROM audit_log WHERE ${where}
      ORDER BY occurred_at DESC, id DESC
      LIMIT ${f.limit} OFFSET ${f.offset}`.execute(db),
    sql<{ n: unknown }>`SELECT count(*) AS n FROM audit_log WHERE ${where}`.execute(db),
  ]);
  return {
    rows: rows.rows.map((r) => ({ ...r, id: Number(r.id), details: typeof r.details === 'string' ? JSON.parse(r.details) : r.details })),
    total: Number(count.rows[0]?.n ?? 0),
  };
}
