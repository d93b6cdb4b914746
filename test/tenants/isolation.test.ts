/**
 * Tenant isolation. (1) Every tenant-scoped endpoint, called by a member of
 * tenant A with tenant B's ids, answers 404 and changes nothing of B — with
 * shared tenants on each database mode, and with dedicated tenants on
 * PostgreSQL. (2) Row-level security: inside withTenant a query WITHOUT any
 * tenant filter sees, changes and writes only the current tenant's rows.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import { buildTestApp, dbModes, signUp, type Session, type TestApp } from '../helpers/app.js';
import { HAS_PG } from '../helpers/env.js';
import { addMember, closeWithTenantDatabases, createTenant, insertDocument, orgName, tenantRef } from './helpers.js';
import type { TenantRef } from '../../src/db/tenant-db.js';

if (!HAS_PG) console.warn('[tests] dedicated-tenant isolation not run: it needs PostgreSQL (set TEST_DATABASE_URL)');

interface World {
  a: Session;
  b: Session;
  bViewer: Session;
  tenantA: TenantRef;
  tenantB: TenantRef;
  docA: string;
  fileA: string;
  docB: string;
  fileB: string;
}

type Row = [label: string, method: string, url: (w: World) => string, opts?: { body?: unknown; headers?: (w: World) => Record<string, string> }];

/** Endpoints called by A's admin with B's ids: every one must be 404. */
const CROSS_TENANT: Row[] = [
  ['GET tenant', 'GET', (w) => `/api/tenants/${w.tenantB.id}`],
  ['PUT tenant', 'PUT', (w) => `/api/tenants/${w.tenantB.id}`, { body: { name: 'Hijacked' } }],
  ['PUT tenant (reactivate path)', 'PUT', (w) => `/api/tenants/${w.tenantB.id}`, { body: { is_active: false } }],
  ['DELETE tenant', 'DELETE', (w) => `/api/tenants/${w.tenantB.id}`],
  ['POST member', 'POST', (w) => `/api/tenants/${w.tenantB.id}/users`, { body: { email: 'nobody@example.com', role: 'admin' } }],
  ['PUT member role', 'PUT', (w) => `/api/tenants/${w.tenantB.id}/users/${w.bViewer.userId}`, { body: { role: 'admin' } }],
  ['DELETE member', 'DELETE', (w) => `/api/tenants/${w.tenantB.id}/users/${w.b.userId}`],
  ['POST invitation', 'POST', (w) => `/api/tenants/${w.tenantB.id}/invitations`, { body: { email: 'spy@example.com', role: 'admin' } }],
  ['list documents', 'GET', (w) => `/api/tenants/${w.tenantB.id}/documents`],
  ['upload document', 'POST', (w) => `/api/tenants/${w.tenantB.id}/documents`],
  ['GET document', 'GET', (w) => `/api/tenants/${w.tenantB.id}/documents/${w.docB}`],
  ['PUT document', 'PUT', (w) => `/api/tenants/${w.tenantB.id}/documents/${w.docB}`, { body: { filename: 'hijacked.txt' } }],
  ['DELETE document', 'DELETE', (w) => `/api/tenants/${w.tenantB.id}/documents/${w.docB}`],
  ['download document', 'GET', (w) => `/api/tenants/${w.tenantB.id}/documents/${w.docB}/download`],
  ['download-url of document', 'GET', (w) => `/api/tenants/${w.tenantB.id}/documents/${w.docB}/download-url`],
  ['list files', 'GET', (w) => `/api/tenants/${w.tenantB.id}/files`],
  ['GET file', 'GET', (w) => `/api/tenants/${w.tenantB.id}/files/${w.fileB}`],
  ['DELETE file', 'DELETE', (w) => `/api/tenants/${w.tenantB.id}/files/${w.fileB}`],
  ['current-org list with X-Tenant-ID of B', 'GET', () => '/api/files', { headers: (w) => ({ 'x-tenant-id': w.tenantB.id }) }],
  ['current-org GET with X-Tenant-ID of B', 'GET', (w) => `/api/files/${w.docB}`, { headers: (w) => ({ 'x-tenant-id': w.tenantB.id }) }],
  // A's own tenant in the path, B's resource ids.
  ['PUT member of B through A', 'PUT', (w) => `/api/tenants/${w.tenantA.id}/users/${w.b.userId}`, { body: { role: 'viewer' } }],
  ['DELETE member of B through A', 'DELETE', (w) => `/api/tenants/${w.tenantA.id}/users/${w.b.userId}`],
  ['GET B document through A', 'GET', (w) => `/api/tenants/${w.tenantA.id}/documents/${w.docB}`],
  ['PUT B document through A', 'PUT', (w) => `/api/tenants/${w.tenantA.id}/documents/${w.docB}`, { body: { filename: 'hijacked.txt' } }],
  ['DELETE B document through A', 'DELETE', (w) => `/api/tenants/${w.tenantA.id}/documents/${w.docB}`],
  ['download B document through A', 'GET', (w) => `/api/tenants/${w.tenantA.id}/documents/${w.docB}/download`],
  ['download-url of B document through A', 'GET', (w) => `/api/tenants/${w.tenantA.id}/documents/${w.docB}/download-url`],
  ['GET B file through A', 'GET', (w) => `/api/tenants/${w.tenantA.id}/files/${w.fileB}`],
  ['DELETE B file through A', 'DELETE', (w) => `/api/tenants/${w.tenantA.id}/files/${w.fileB}`],
  ['current-org GET of B document', 'GET', (w) => `/api/files/${w.docB}`, { headers: (w) => ({ 'x-tenant-id': w.tenantA.id }) }],
  ['current-org download of B document', 'GET', (w) => `/api/files/${w.docB}/download`, { headers: (w) => ({ 'x-tenant-id': w.tenantA.id }) }],
];

function isolationSuite(mode: 'pglite' | 'postgres', isolation: 'shared' | 'dedicated') {
  let t: TestApp;
  let app: FastifyInstance;
  const w = {} as World;

  beforeAll(async () => {
    t = await buildTestApp({ mode, config: { tenantPoolMaxTotal: 6 } });
    app = t.app;
    [w.a, w.b, w.bViewer] = await Promise.all([signUp(app), signUp(app), signUp(app)]);
    const ta = await createTenant(app, w.a.auth, { name: orgName('Iso A'), isolation });
    const tb = await createTenant(app, w.b.auth, { name: orgName('Iso B'), isolation });
    await addMember(app, w.b.auth, tb.id, w.bViewer.email, 'viewer');
    w.tenantA = await tenantRef(app, ta.id);
    w.tenantB = await tenantRef(app, tb.id);
    ({ documentId: w.docA, fileId: w.fileA } = await insertDocument(app, w.tenantA, w.a.userId, 'a-secret.txt'));
    ({ documentId: w.docB, fileId: w.fileB } = await insertDocument(app, w.tenantB, w.b.userId, 'b-secret.txt'));
  });
  afterAll(async () => closeWithTenantDatabases(t));

  it.each(CROSS_TENANT)('%s → 404', async (_label, method, url, opts) => {
    const res = await app.inject({
      method: method as any,
      url: url(w),
      headers: { ...w.a.auth, ...opts?.headers?.(w) },
      ...(opts?.body ? { payload: opts.body as object } : {}),
    });
    expect(res.statusCode, res.body).toBe(404);
    // A real route answered (not the router's "no route"), with a specific code.
    expect(res.json().code).not.toBe('not_found');
  });

  it("leaves B's tenant, members and data untouched, and A's lists hold only A's data", async () => {
    const tb = await app.inject({ method: 'GET', url: `/api/tenants/${w.tenantB.id}`, headers: w.b.auth });
    expect(tb.statusCode).toBe(200);
    expect(tb.json()).toMatchObject({ is_active: true });
    expect(tb.json().name).toMatch(/^Iso B/);
    expect(tb.json().members.map((m: any) => [m.user_id, m.role]).sort()).toEqual([[w.b.userId, 'admin'], [w.bViewer.userId, 'viewer']].sort());
    const doc = await app.inject({ method: 'GET', url: `/api/tenants/${w.tenantB.id}/documents/${w.docB}`, headers: w.b.auth });
    expect(doc.statusCode).toBe(200);
    expect(doc.json().filename).toBe('b-secret.txt');
    const inv = await app.db.selectFrom('invitations').select('id').where('tenant_id', '=', w.tenantB.id).execute();
    expect(inv).toEqual([]);

    const docs = await app.inject({ method: 'GET', url: `/api/tenants/${w.tenantA.id}/documents`, headers: w.a.auth });
    expect(docs.json().documents.map((d: any) => d.id)).toEqual([w.docA]);
    const files = await app.inject({ method: 'GET', url: `/api/tenants/${w.tenantA.id}/files`, headers: w.a.auth });
    expect(files.json().files.map((f: any) => f.id)).toEqual([w.fileA]);
    const current = await app.inject({ method: 'GET', url: '/api/files', headers: { ...w.a.auth, 'x-tenant-id': w.tenantA.id } });
    expect(current.json().files.map((f: any) => f.id)).toEqual([w.docA]);
  });

  it('row-level security: a query without a tenant filter inside withTenant sees and changes only the current tenant', async () => {
    // A second tenant's rows in the SAME database as A's: for shared tenants that is the normal case;
    // for a dedicated one it simulates a stray row (the database boundary is the first wall, RLS the second).
    const stray = await insertDocument(app, { ...w.tenantA, id: w.tenantB.id }, w.b.userId, 'stray.txt');
    const owner = app.tenantDbs.dbFor(w.tenantA);
    const all = await owner.selectFrom('documents').select('tenant_id').execute();
    expect(new Set(all.map((r) => r.tenant_id))).toEqual(new Set([w.tenantA.id, w.tenantB.id]));

    const seen = await app.tenantDbs.withTenant(w.tenantA, async (trx) => ({
      documents: await trx.selectFrom('documents').select(['id', 'tenant_id']).execute(),
      files: await trx.selectFrom('files').select(['id', 'tenant_id']).execute(),
      count: await sql<{ n: number }>`SELECT count(*)::int AS n FROM documents`.execute(trx),
      role: await sql<{ r: string }>`SELECT current_user AS r`.execute(trx),
    }));
    expect(seen.role.rows[0].r).toBe('app_user');
    expect(seen.documents.map((d) => d.tenant_id)).toEqual(seen.documents.map(() => w.tenantA.id));
    expect(seen.documents.map((d) => d.id)).toContain(w.docA);
    expect(seen.documents.map((d) => d.id)).not.toContain(stray.documentId);
    expect(seen.files.every((f) => f.tenant_id === w.tenantA.id)).toBe(true);
    expect(seen.count.rows[0].n).toBe(seen.documents.length);

    // An unfiltered UPDATE touches A's rows only.
    const updated = await app.tenantDbs.withTenant(w.tenantA, (trx) =>
      trx.updateTable('documents').set({ error_message: 'touched' }).executeTakeFirst());
    expect(Number(updated.numUpdatedRows)).toBe(seen.documents.length);
    const strayRow = await owner.selectFrom('documents').select('error_message').where('id', '=', stray.documentId).executeTakeFirstOrThrow();
    expect(strayRow.error_message).toBeNull();

    // Writing a row for another tenant is refused by the policy.
    await expect(app.tenantDbs.withTenant(w.tenantA, (trx) =>
      trx.insertInto('files').values({
        tenant_id: w.tenantB.id, sha256: 'f'.repeat(64), md5: 'f'.repeat(32), size: 1, storage_key: 'x',
      }).execute())).rejects.toThrow(/row-level security/);

    // The app role with no tenant set sees nothing at all.
    const none = await owner.transaction().execute(async (trx) => {
      await sql`SELECT set_config('role', 'app_user', true)`.execute(trx);
      return trx.selectFrom('documents').select('id').execute();
    });
    expect(none).toEqual([]);
    await owner.deleteFrom('documents').where('id', '=', stray.documentId).execute();
    await owner.deleteFrom('files').where('id', '=', stray.fileId).execute();
    await owner.updateTable('documents').set({ error_message: null }).execute();
  });
}

describe.each(dbModes())('isolation of shared tenants on %s', (mode) => {
  isolationSuite(mode, 'shared');
});

describe.skipIf(!HAS_PG)('isolation of dedicated tenants on postgres', () => {
  isolationSuite('postgres', 'dedicated');
});
