/** Helpers of the tenancy tests: requests, direct rows, and cleanup of dedicated tenant databases. */
import crypto from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import type { TestApp } from '../helpers/app.js';
import type { TenantRef } from '../../src/db/tenant-db.js';

let n = 0;
/** A tenant name unique to this run. */
export function orgName(tag = 'Org'): string {
  n += 1;
  return `${tag} ${process.pid}-${Date.now().toString(36)}-${n}`;
}

export async function createTenant(
  app: FastifyInstance,
  auth: Record<string, string>,
  body: { name?: string; isolation?: 'shared' | 'dedicated'; storage_quota_mb?: number } = {},
): Promise<any> {
  const res = await app.inject({ method: 'POST', url: '/api/tenants', headers: auth, payload: { name: orgName(), ...body } });
  if (res.statusCode !== 201) throw new Error(`create tenant failed: ${res.statusCode} ${res.body}`);
  return res.json();
}

export async function addMember(app: FastifyInstance, auth: Record<string, string>, tid: string, email: string, role: string) {
  const res = await app.inject({ method: 'POST', url: `/api/tenants/${tid}/users`, headers: auth, payload: { email, role } });
  if (res.statusCode !== 201) throw new Error(`add member failed: ${res.statusCode} ${res.body}`);
  return res.json();
}

export async function tenantRef(app: FastifyInstance, id: string): Promise<TenantRef> {
  return app.db.selectFrom('tenants').select(['id', 'isolation', 'db_server', 'db_name']).where('id', '=', id).executeTakeFirstOrThrow();
}

/** A file and a document of the tenant, written directly in its data database as the owner (no RLS). */
export async function insertDocument(app: FastifyInstance, tenant: TenantRef, userId: string, filename = 'a.txt') {
  const db = app.tenantDbs.dbFor(tenant);
  const sha = crypto.createHash('sha256').update(crypto.randomUUID()).digest('hex');
  const file = await db
    .insertInto('files')
    .values({ tenant_id: tenant.id, sha256: sha, md5: sha.slice(0, 32), size: 5, storage_key: `t/${tenant.id}/${sha}` })
    .returning('id')
    .executeTakeFirstOrThrow();
  const doc = await db
    .insertInto('documents')
    .values({
      tenant_id: tenant.id, file_id: file.id, filename, mime_type: 'text/plain', size: 5,
      user_id: userId, uploaded_by_email: 'owner@example.com', status: 'ready',
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  return { fileId: file.id, documentId: doc.id };
}

/** The tenant's change events in the main outbox (the audit trail's `audit.log` rows, written after responses, left out). */
export async function outboxTopics(app: FastifyInstance, tenantId: string): Promise<string[]> {
  const rows = await app.db.selectFrom('outbox').select('topic').where('tenant_id', '=', tenantId)
    .where('kind', '=', 'event').where('topic', '!=', 'audit.log').orderBy('id').execute();
  return rows.map((r) => r.topic);
}

export async function outboxEvents(app: FastifyInstance, tenantId: string): Promise<any[]> {
  const rows = await app.db.selectFrom('outbox').select('payload').where('tenant_id', '=', tenantId)
    .where('kind', '=', 'event').where('topic', '!=', 'audit.log').orderBy('id').execute();
  return rows.map((r) => (typeof r.payload === 'string' ? JSON.parse(r.payload) : r.payload));
}

/** Drop the databases of the app's dedicated tenants (they live outside the test database), then close the app. */
export async function closeWithTenantDatabases(t: TestApp | undefined): Promise<void> {
  if (!t) return;
  const dedicated = t.app.dedicatedTenants;
  if (dedicated) {
    const rows = await t.app.db.selectFrom('tenants').select(['db_server', 'db_name']).where('isolation', '=', 'dedicated').execute();
    for (const r of rows) {
      const server = dedicated.servers.find((s) => s.key === r.db_server);
      if (server && r.db_name) await dedicated.dropDatabase(server, r.db_name).catch(() => {});
    }
  }
  await t.close();
}

export async function pgQuery<T extends pg.QueryResultRow = any>(url: string, text: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<T>(text, params)).rows;
  } finally {
    await c.end();
  }
}
