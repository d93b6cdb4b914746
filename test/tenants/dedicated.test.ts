/**
 * Dedicated tenants on PostgreSQL: provisioning (a database of its own with the
 * tenant tables, recorded in the tenant row), data read and written there,
 * placement over several servers, and the bounded LRU connection pools.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import { buildTestApp, signUp, type Session, type TestApp } from '../helpers/app.js';
import { createTestDatabase, HAS_PG, PG_ADMIN_URL, requirePg } from '../helpers/env.js';
import { tenantMigrations } from '../../src/db/migrations/tenant/index.js';
import { databaseUrl, dedicatedDatabaseName, serverKey } from '../../src/tenants/dedicated.js';
import { TenantConnectionPools } from '../../src/tenants/pool.js';
import type { TenantRef } from '../../src/db/tenant-db.js';
import { closeWithTenantDatabases, createTenant, insertDocument, orgName, outboxTopics, pgQuery, tenantRef } from './helpers.js';

if (!HAS_PG) console.warn('[tests] dedicated tenant databases not run: they need PostgreSQL (set TEST_DATABASE_URL)');

describe('dedicated database names and server keys', () => {
  it('names databases tenant_{slug}_{8 hex}, at most 63 characters', () => {
    const id = '1234abcd-0000-4000-8000-000000000000';
    expect(dedicatedDatabaseName('acme_corp', id)).toBe('tenant_acme_corp_1234abcd');
    const long = dedicatedDatabaseName('x'.repeat(200), id);
    expect(long.length).toBeLessThanOrEqual(63);
    expect(long).toMatch(/^tenant_x+_1234abcd$/);
    expect(dedicatedDatabaseName('', id)).toBe('tenant_tenant_1234abcd');
  });

  it('keys a server by its URL without password or query', () => {
    expect(serverKey('postgres://app:s3cret@db.internal:6543/postgres?sslmode=require')).toBe('postgres://app@db.internal:6543/postgres');
    expect(serverKey('postgresql://db/')).toBe('postgres://db:5432/postgres');
    expect(databaseUrl('postgres://app:s3cret@db:5432/postgres?sslmode=require', 'tenant_a_1')).toBe('postgres://app:s3cret@db:5432/tenant_a_1?sslmode=require');
  });
});

describe.skipIf(!HAS_PG)('dedicated tenants on postgres', () => {
  let t: TestApp;
  let app: FastifyInstance;
  let admin: Session;
  let server2: Awaited<ReturnType<typeof createTestDatabase>>;
  let server2Url: string;

  beforeAll(async () => {
    requirePg();
    // Two "servers": the cluster's admin database and a second database of the same cluster.
    // The second URL carries a password (trust auth ignores it): it must never be stored.
    server2 = await createTestDatabase('tb_srv2');
    const u = new URL(server2.url);
    u.password = 'never-stored-secret';
    server2Url = u.toString();
    t = await buildTestApp({ mode: 'postgres', config: { tenantDbServers: [PG_ADMIN_URL!, server2Url], tenantPoolMaxTotal: 6 } });
    app = t.app;
    admin = await signUp(app);
  });
  afterAll(async () => {
    await closeWithTenantDatabases(t);
    await server2?.drop();
  });

  it('creates the database, applies every tenant migration, records where it lives', async () => {
    const name = orgName('Provisioned');
    const started = Date.now();
    const res = await app.inject({ method: 'POST', url: '/api/tenants', headers: admin.auth, payload: { name, isolation: 'dedicated' } });
    const ms = Date.now() - started;
    expect(res.statusCode, res.body).toBe(201);
    expect(res.json()).toMatchObject({ name, isolation: 'dedicated', is_active: true, members: [{ user_id: admin.userId, role: 'admin' }] });
    expect(ms).toBeLessThan(10_000);

    const row = await app.db.selectFrom('tenants').selectAll().where('id', '=', res.json().id).executeTakeFirstOrThrow();
    expect(row.db_name).toMatch(new RegExp(`^tenant_provisioned_[a-z0-9_]+_${row.id.replace(/-/g, '').slice(0, 8)}$`));
    expect(row.db_name!.length).toBeLessThanOrEqual(63);
    expect([serverKey(PG_ADMIN_URL!), serverKey(server2Url)]).toContain(row.db_server);
    expect(row.db_server).not.toMatch(/secret|:[^/@]*@/);

    const exists = await pgQuery(PG_ADMIN_URL!, 'SELECT datname FROM pg_database WHERE datname = $1', [row.db_name]);
    expect(exists).toHaveLength(1);
    const tenantDbUrl = databaseUrl(PG_ADMIN_URL!, row.db_name!);
    const tables = await pgQuery(tenantDbUrl, `SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1`);
    const byName = Object.fromEntries(tables.map((r) => [r.relname, r]));
    for (const table of ['files', 'documents', 'outbox']) {
      expect(byName[table], table).toMatchObject({ relrowsecurity: true, relforcerowsecurity: true });
    }
    // No control-plane table in a tenant database.
    expect(byName.users).toBeUndefined();
    expect(byName.tenants).toBeUndefined();
    const applied = await pgQuery(tenantDbUrl, 'SELECT name FROM tenant_migration ORDER BY name');
    expect(applied.map((r) => r.name)).toEqual(Object.keys(tenantMigrations).sort());
    // Only the owner may connect: PUBLIC has no CONNECT on it.
    const acl = await pgQuery(PG_ADMIN_URL!, "SELECT has_database_privilege('app_user', $1, 'CONNECT') AS c", [row.db_name]);
    expect(acl[0].c).toBe(false);

    // The control-plane events go to the main database's outbox.
    expect(await outboxTopics(app, row.id)).toEqual(['tenant.created', 'member.added']);
  });

  it('reads and writes tenant data in its own database, not in the main one', async () => {
    const tenant = await createTenant(app, admin.auth, { isolation: 'dedicated' });
    const ref = await tenantRef(app, tenant.id);
    const { documentId } = await insertDocument(app, ref, admin.userId, 'own-db.txt');
    const viaApi = await app.inject({ method: 'GET', url: `/api/tenants/${tenant.id}/documents/${documentId}`, headers: admin.auth });
    expect(viaApi.statusCode).toBe(200);
    expect(viaApi.json().filename).toBe('own-db.txt');

    const inTenantDb = await pgQuery(databaseUrl(PG_ADMIN_URL!, ref.db_name!), 'SELECT id FROM documents');
    expect(inTenantDb.map((r) => r.id)).toEqual([documentId]);
    const inMain = await app.db.selectFrom('documents').select('id').where('tenant_id', '=', tenant.id).execute();
    expect(inMain).toEqual([]);
    // The same query code, scoped by RLS in the tenant database too.
    const scoped = await app.tenantDbs.withTenant(ref, (trx) => trx.selectFrom('documents').select('id').execute());
    expect(scoped.map((r) => r.id)).toEqual([documentId]);
  });

  it('spreads new dedicated tenants over the configured servers (fewest dedicated tenants first)', async () => {
    for (let i = 0; i < 3; i += 1) await createTenant(app, admin.auth, { isolation: 'dedicated' });
    const rows = await app.db.selectFrom('tenants').select('db_server').where('isolation', '=', 'dedicated').execute();
    const counts = new Map<string, number>();
    for (const r of rows) counts.set(r.db_server!, (counts.get(r.db_server!) ?? 0) + 1);
    expect([...counts.keys()].sort()).toEqual([serverKey(PG_ADMIN_URL!), serverKey(server2Url)].sort());
    const [x, y] = [...counts.values()];
    expect(Math.abs(x - y)).toBeLessThanOrEqual(1);
    const all = await app.db.selectFrom('tenants').select(['db_server', 'db_name']).execute();
    expect(JSON.stringify(all)).not.toContain('never-stored-secret');
  });

  it('refuses a taken name before creating any database', async () => {
    const name = orgName('Dup');
    await createTenant(app, admin.auth, { name, isolation: 'shared' });
    const before = await pgQuery(PG_ADMIN_URL!, "SELECT count(*)::int AS n FROM pg_database WHERE datname LIKE 'tenant_dup_%'");
    const res = await app.inject({ method: 'POST', url: '/api/tenants', headers: admin.auth, payload: { name, isolation: 'dedicated' } });
    expect(res.statusCode).toBe(409);
    expect(res.json().code).toBe('organization_exists');
    const after = await pgQuery(PG_ADMIN_URL!, "SELECT count(*)::int AS n FROM pg_database WHERE datname LIKE 'tenant_dup_%'");
    expect(after[0].n).toBe(before[0].n);
  });

  it('answers 503 for a tenant whose server is no longer configured', async () => {
    const tenant = await createTenant(app, admin.auth, { isolation: 'dedicated' });
    const ref = await tenantRef(app, tenant.id);
    await app.db.updateTable('tenants').set({ db_server: 'postgres://gone@nowhere:5432/postgres' }).where('id', '=', tenant.id).execute();
    try {
      const res = await app.inject({ method: 'GET', url: `/api/tenants/${tenant.id}/documents`, headers: admin.auth });
      expect(res.statusCode).toBe(503);
      expect(res.json().code).toBe('tenant_db_unavailable');
      expect(res.body).not.toContain('never-stored-secret');
    } finally {
      await app.db.updateTable('tenants').set({ db_server: ref.db_server }).where('id', '=', tenant.id).execute();
    }
  });

  it('keeps tenant connections under TENANT_POOL_MAX_TOTAL with many tenants busy at once', async () => {
    const refs: TenantRef[] = [];
    for (let i = 0; i < 4; i += 1) refs.push(await tenantRef(app, (await createTenant(app, admin.auth, { isolation: 'dedicated' })).id));
    const pools = app.dedicatedTenants!.pools;
    let peak = 0;
    const work = Array.from({ length: 40 }, (_, i) => app.tenantDbs.withTenant(refs[i % refs.length], async (trx) => {
      peak = Math.max(peak, pools.stats().open);
      await sql`SELECT pg_sleep(0.01)`.execute(trx);
      return (await trx.selectFrom('documents').select('id').execute()).length;
    }));
    const counts = await Promise.all(work);
    expect(counts.every((n) => n === 0)).toBe(true);
    expect(peak).toBeLessThanOrEqual(6);
    expect(pools.stats().open).toBeLessThanOrEqual(6);
  });
});

describe.skipIf(!HAS_PG)('tenant connection pools (bound, LRU, idle close) on postgres', () => {
  const dbs: Awaited<ReturnType<typeof createTestDatabase>>[] = [];
  beforeAll(async () => {
    for (let i = 0; i < 3; i += 1) dbs.push(await createTestDatabase('tb_pool'));
  });
  afterAll(async () => {
    for (const d of dbs) await d.drop();
  });

  it('closes the least recently used idle connection of another database when the budget is spent', async () => {
    const pools = new TenantConnectionPools({ maxTotal: 2, acquireTimeoutMs: 2000 });
    try {
      const [a, b, c] = dbs.map((d) => pools.pool(d.url));
      const ca = await a.connect();
      ca.release();
      await new Promise((r) => setTimeout(r, 5));
      const cb = await b.connect();
      cb.release();
      expect(pools.stats()).toMatchObject({ open: 2, idle: 2 });
      const cc = await c.connect();
      await cc.query('SELECT 1');
      // A (least recently used) was closed for C; B stays.
      expect(pools.connectionsOf(dbs[0].url).open).toBe(0);
      expect(pools.connectionsOf(dbs[1].url).open).toBe(1);
      expect(pools.stats().open).toBe(2);
      cc.release();
    } finally {
      await pools.close();
    }
  });

  it('makes callers wait when every connection is busy, then serves them in turn; times out with a clear error', async () => {
    const pools = new TenantConnectionPools({ maxTotal: 2, acquireTimeoutMs: 300 });
    try {
      const [a, b] = dbs.map((d) => pools.pool(d.url));
      const a1 = await a.connect();
      const a2 = await a.connect();
      let served = false;
      const waiting = b.connect().then((c) => {
        served = true;
        return c;
      });
      await new Promise((r) => setTimeout(r, 50));
      expect(served).toBe(false);
      expect(pools.stats()).toMatchObject({ open: 2, waiting: 1 });
      a1.release();
      const b1 = await waiting;
      expect((await b1.query('SELECT current_database() AS d')).rows[0].d).toBe(dbs[1].name);
      expect(pools.stats().open).toBe(2);
      // Everything busy again: the next caller times out.
      await expect(a.connect()).rejects.toThrow(/timed out .* waiting for a tenant database connection/);
      a2.release();
      b1.release();
    } finally {
      await pools.close();
    }
  });

  it('closes idle connections after the idle timeout and forgets the database', async () => {
    const pools = new TenantConnectionPools({ maxTotal: 4, idleTimeoutMs: 200 });
    try {
      const c = await pools.pool(dbs[2].url).connect();
      c.release();
      expect(pools.stats().open).toBe(1);
      await new Promise((r) => setTimeout(r, 600));
      expect(pools.stats()).toMatchObject({ open: 0, databases: 0 });
    } finally {
      await pools.close();
    }
  });

  it('replaces a connection that broke', async () => {
    const pools = new TenantConnectionPools({ maxTotal: 2 });
    try {
      const pool = pools.pool(dbs[0].url);
      const c = await pool.connect();
      const pid = (await c.query('SELECT pg_backend_pid() AS p')).rows[0].p;
      c.release();
      await pgQuery(PG_ADMIN_URL!, 'SELECT pg_terminate_backend($1)', [pid]);
      await new Promise((r) => setTimeout(r, 100));
      const again = await pool.connect();
      expect((await again.query('SELECT 1 AS one')).rows[0].one).toBe(1);
      again.release();
      expect(pools.stats().open).toBe(1);
    } finally {
      await pools.close();
    }
  });
});
