import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql, type Kysely } from 'kysely';
import { openDatabase, type Database } from '../../src/db/index.js';
import { migrateDown, migrateToLatest, migrationStatus, migrateMain } from '../../src/db/migrate.js';
import { controlMigrations } from '../../src/db/migrations/control/index.js';
import { tenantMigrations } from '../../src/db/migrations/tenant/index.js';
import { createTestDatabase, HAS_PG } from '../helpers/env.js';

const modes = HAS_PG ? ['pglite', 'postgres'] : ['pglite'];

async function tables(db: Kysely<any>): Promise<string[]> {
  const r = await sql<{ t: string }>`SELECT tablename AS t FROM pg_tables WHERE schemaname = 'public' ORDER BY 1`.execute(db);
  return r.rows.map((x) => x.t);
}

describe.each(modes)('migrations on %s', (mode) => {
  let database: Database;
  let drop: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    if (mode === 'postgres') {
      const t = await createTestDatabase();
      drop = t.drop;
      database = await openDatabase({ databaseUrl: t.url, pgliteDir: '', poolMax: 2 });
    } else {
      database = await openDatabase({ pgliteDir: 'memory://', poolMax: 1 });
    }
  });
  afterAll(async () => {
    await database?.close();
    await drop?.();
  });

  it('applies every control and tenant migration, is idempotent, and goes all the way down and up again', async () => {
    const db = database.db as Kysely<any>;
    await migrateMain(db);
    await migrateMain(db); // nothing left to do the second time
    const status = [...(await migrationStatus(db, 'control')), ...(await migrationStatus(db, 'tenant'))];
    expect(status.every((m) => m.executedAt)).toBe(true);
    expect(status).toHaveLength(Object.keys(controlMigrations).length + Object.keys(tenantMigrations).length);
    const all = await tables(db);
    for (const t of ['users', 'sessions', 'refresh_tokens', 'tenants', 'memberships', 'invitations', 'files', 'documents', 'outbox']) {
      expect(all).toContain(t);
    }

    for (let i = 0; i < Object.keys(tenantMigrations).length; i++) await migrateDown(db, 'tenant');
    for (let i = 0; i < Object.keys(controlMigrations).length; i++) await migrateDown(db, 'control');
    const left = (await tables(db)).filter((t) => !t.endsWith('_migration') && !t.endsWith('_migration_lock'));
    expect(left).toEqual([]);

    await migrateMain(db);
    expect(await tables(db)).toEqual(all);
  });

  it('forces row-level security on tenant tables', async () => {
    const db = database.db as Kysely<any>;
    const r = await sql<{ relname: string; relrowsecurity: boolean; relforcerowsecurity: boolean }>`
      SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class
      WHERE relname IN ('files', 'documents', 'outbox') ORDER BY relname`.execute(db);
    expect(r.rows.length).toBeGreaterThanOrEqual(3);
    for (const row of r.rows) {
      expect(row.relrowsecurity, row.relname).toBe(true);
      expect(row.relforcerowsecurity, row.relname).toBe(true);
    }
  });

  it('reports a failing migration with its name', async () => {
    const db = database.db as Kysely<any>;
    await sql`DROP TABLE documents CASCADE`.execute(db);
    // The migration record says nothing ran, but `files` still exists: re-applying 0001 fails.
    await sql`DELETE FROM tenant_migration`.execute(db);
    await expect(migrateToLatest(db, 'tenant')).rejects.toThrow(/tenant migration 0001_documents failed/);
  });
});
