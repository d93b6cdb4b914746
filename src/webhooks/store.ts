/** Webhook tables (control-plane migration 0004_webhooks) and their queries. */
import { sql, type Kysely } from 'kysely';
import type { ControlSchema } from '../db/schema.js';
import type { EventEnvelope } from '../events/envelope.js';

export interface WebhookEndpoint {
  id: string;
  tenant_id: string;
  url: string;
  event_types: string[];
  secret: string;
  description: string | null;
  is_active: boolean;
  created_by: string | null;
  created_at: Date;
  updated_at: Date;
}

export interface WebhookDelivery {
  id: number;
  endpoint_id: string;
  tenant_id: string;
  event_id: string;
  event_type: string;
  payload: unknown;
  status: 'pending' | 'succeeded' | 'failed';
  attempts: number;
  next_attempt_at: Date;
  last_status_code: number | null;
  last_error: string | null;
  created_at: Date;
  delivered_at: Date | null;
}

type Db = Kysely<ControlSchema>;

function arr(v: unknown): string[] {
  if (Array.isArray(v)) return v.map(String);
  if (typeof v === 'string') return v.replace(/^\{|\}$/g, '').split(',').filter(Boolean).map((s) => s.replace(/^"|"$/g, ''));
  return [];
}

function endpointRow(r: any): WebhookEndpoint {
  return { ...r, event_types: arr(r.event_types) };
}

function deliveryRow(r: any): WebhookDelivery {
  return { ...r, id: Number(r.id), payload: typeof r.payload === 'string' ? JSON.parse(r.payload) : r.payload };
}

export async function insertEndpoint(
  db: Db,
  p: { tenantId: string; url: string; eventTypes: string[]; secret: string; description: string | null; createdBy: string | null },
): Promise<WebhookEndpoint> {
  const res = await sql`
    INSERT INTO webhook_endpoints (tenant_id, url, event_types, secret, description, created_by)
    VALUES (${p.tenantId}, ${p.url}, ${sql.val(p.eventTypes)}::text[], ${p.secret}, ${p.description}, ${p.createdBy})
    RETURNING *`.execute(db);
  return endpointRow(res.rows[0]);
}

export async function listEndpoints(db: Db, tenantId: string): Promise<WebhookEndpoint[]> {
  const res = await sql`SELECT * FROM webhook_endpoints WHERE tenant_id = ${tenantId} ORDER BY created_at, id`.execute(db);
  return res.rows.map(endpointRow);
}

export async function getEndpoint(db: Db, tenantId: string, id: string): Promise<WebhookEndpoint | undefined> {
  const res = await sql`SELECT * FROM webhook_endpoints WHERE tenant_id = ${tenantId} AND id = ${id}`.execute(db);
  return res.rows[0] ? endpointRow(res.rows[0]) : undefined;
}

export async function updateEndpoint(
  db: Db,
  tenantId: string,
  id: string,
  p: { url?: string; eventTypes?: string[]; isActive?: boolean; description?: string | null },
): Promise<WebhookEndpoint | undefined> {
  const res = await sql`
    UPDATE webhook_endpoints SET
      url = coalesce(${p.url ?? null}, url),
      event_types = coalesce(${p.eventTypes ? sql.val(p.eventTypes) : null}::text[], event_types),
      is_active = coalesce(${p.isActive ?? null}::boolean, is_active),
      description = ${p.description === undefined ? sql`description` : p.description},
      updated_at = now()
    WHERE tenant_id = ${tenantId} AND id = ${id}
    RETURNING *`.execute(db);
  return res.rows[0] ? endpointRow(res.rows[0]) : undefined;
}

export async function deleteEndpoint(db: Db, tenantId: string, id: string): Promise<boolean> {
  const res = await sql`DELETE FROM webhook_endpoints WHERE tenant_id = ${tenantId} AND id = ${id}`.execute(db);
  return Number(res.numAffectedRows ?? 0) > 0;
}

export async function listDeliveries(
  db: Db,
  p: { tenantId: string; endpointId: string; status?: string; limit: number; offset: number },
): Promise<{ rows: WebhookDelivery[]; total: number }> {
  const where = sql`tenant_id = ${p.tenantId} AND endpoint_id = ${p.endpointId} ${p.status ? sql`AND status = ${p.status}` : sql``}`;
  const [rows, count] = await Promise.all([
    sql`SELECT * FROM webhook_deliveries WHERE ${where} ORDER BY created_at DESC, id DESC LIMIT ${p.limit} OFFSET ${p.offset}`.execute(db),
    sql<{ n: unknown }>`SELECT count(*) AS n FROM webhook_deliveries WHERE ${where}`.execute(db),
  ]);
  return { rows: rows.rows.map(deliveryRow), total: Number(count.rows[0]?.n ?? 0) };
}

/** One delivery per matching active endpoint and event; an event seen twice adds nothing. */
export async function fanOut(db: Db, events: EventEnvelope[]): Promise<number> {
  const tenantIds = [...new Set(events.map((e) => e.tenant_id).filter((t): t is string => Boolean(t)))];
  if (tenantIds.length === 0) return 0;
  const endpoints = await sql<{ id: string; tenant_id: string; event_types: unknown }>`
    SELECT id, tenant_id, event_types FROM webhook_endpoints
    WHERE is_active AND tenant_id = ANY(${sql.val(tenantIds)}::uuid[])`.execute(db);
  if (endpoints.rows.length === 0) return 0;
  const rows: Array<{ endpoint: string; tenant: string; event: EventEnvelope }> = [];
  for (const e of events) {
    for (const ep of endpoints.rows) {
      const types = arr(ep.event_types);
      if (ep.tenant_id === e.tenant_id && (types.includes('*') || types.includes(e.event_type))) {
        rows.push({ endpoint: ep.id, tenant: ep.tenant_id, event: e });
      }
    }
  }
  if (rows.length === 0) return 0;
  const res = await sql`
    INSERT INTO webhook_deliveries (endpoint_id, tenant_id, event_id, event_type, payload)
    SELECT * FROM unnest(${sql.val(rows.map((r) => r.endpoint))}::uuid[], ${sql.val(rows.map((r) => r.tenant))}::uuid[],
                         ${sql.val(rows.map((r) => r.event.event_id))}::uuid[], ${sql.val(rows.map((r) => r.event.event_type))}::text[],
                         ${sql.val(rows.map((r) => JSON.stringify(r.event)))}::jsonb[])
    ON CONFLICT (endpoint_id, event_id) DO NOTHING`.execute(db);
  return Number(res.numAffectedRows ?? 0);
}

export interface ClaimedDelivery extends WebhookDelivery {
  url: string | null;
  secret: string | null;
  endpoint_active: boolean | null;
}

/** Due deliveries, leased (`next_attempt_at` pushed ahead, attempts + 1), with their endpoint. */
export async function claimDeliveries(db: Db, limit: number, leaseMs: number): Promise<ClaimedDelivery[]> {
  const res = await sql`
    WITH due AS (
      SELECT id FROM webhook_deliveries
      WHERE status = 'pending' AND next_attempt_at <= now()
      ORDER BY next_attempt_at, id
      LIMIT ${limit}
      FOR UPDATE SKIP LOCKED
    ), leased AS (
      UPDATE webhook_deliveries w
      SET next_attempt_at = now() + make_interval(secs => ${leaseMs / 1000}), attempts = w.attempts + 1
      FROM due WHERE w.id = due.id
      RETURNING w.*
    )
    SELECT l.*, e.url, e.secret, e.is_active AS endpoint_active
    FROM leased l LEFT JOIN webhook_endpoints e ON e.id = l.endpoint_id
    ORDER BY l.id`.execute(db);
  return res.rows.map((r: any) => ({ ...deliveryRow(r), url: r.url, secret: r.secret, endpoint_active: r.endpoint_active }));
}

export async function recordAttempt(
  db: Db,
  d: { id: number; attempts: number },
  r: { status: 'pending' | 'succeeded' | 'failed'; statusCode: number | null; error: string | null; retryInMs?: number },
): Promise<void> {
  await sql`
    UPDATE webhook_deliveries SET
      status = ${r.status},
      last_status_code = ${r.statusCode},
      last_error = ${r.error},
      delivered_at = ${r.status === 'succeeded' ? sql`now()` : sql`delivered_at`},
      next_attempt_at = ${r.status === 'pending' ? sql`now() + make_interval(secs => ${(r.retryInMs ?? 0) / 1000})` : sql`next_attempt_at`}
    WHERE id = ${d.id} AND attempts = ${d.attempts} AND status = 'pending'`.execute(db);
}
