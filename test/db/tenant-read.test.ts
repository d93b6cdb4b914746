/**
 * TenantDatabases.read: tenant-scoped reads in one round trip on PostgreSQL
 * (scoping statement + queries pipelined as prepared statements before one
 * Sync, src/db/pipeline.ts) and the ordinary transaction on PGlite. What must
 * hold: the same rows as withTenant, row-level security still filtering,
 * nothing of the scope left on the pooled connection, hostile values bound
 * as values, and a failed pipeline leaving no broken connection behind.
 */
import crypto from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { openDatabase, type Database } from '../../src/db/index.js';
import { migrateMain } from '../../src/db/migrate.js';
import { createTenantDatabases, type TenantDatabases, type TenantRef } from '../../src/db/tenant-db.js';
import { createTestDatabase, HAS_PG } from '../helpers/env.js';

const NASTY = [
  "it's", "'; DROP TABLE documents; --", "\\", "\\'", "a\\'; SELECT 1; --", "$1", "$$x$$", "E'x'", '"quoted"',
  'ünïcødé ✓ 文字', '%_\\%', 'line\nbreak\ttab', '/* not a comment */', '-- nor this', '',
];

const modes = HAS_PG ? (['pglite', 'postgres'] as const) : (['pglite'] as const);

describe.each(modes)('TenantDatabases.read on %s', (mode) => {
  let database: Database;
  let tenantDbs: TenantDatabases;
  let drop: (() => Promise<void>) | undefined;
  const a: TenantRef = { id: crypto.randomUUID(), isolation: 'shared', db_server: null, db_name: null };
  const b: TenantRef = { id: crypto.randomUUID(), isolation: 'shared', db_server: null, db_name: null };
  const docsOf = new Map<string, string[]>();

  beforeAll(async () => {
    if (mode === 'postgres') {
      const t = await createTestDatabase();
      drop = t.drop;
      // One connection: what a read leaves behind is what the next user of the pool gets.
      database = await openDatabase({ databaseUrl: t.url, pgliteDir: '', poolMax: 1 });
    } else {
      database = await openDatabase({ pgliteDir: 'memory://', poolMax: 1 });
    }
    await migrateMain(database.db);
    tenantDbs = createTenantDatabases(database.db, database.pool);
    for (const tenant of [a, b]) {
      const ids = await tenantDbs.withTenant(tenant, async (trx) => {
        const file = await trx.insertInto('files').values({
          tenant_id: tenant.id, sha256: crypto.randomBytes(32).toString('hex'), md5: 'm'.repeat(32), size: 3, storage_key: 'k',
        }).returning('id').executeTakeFirstOrThrow();
        const out: string[] = [];
        for (const filename of NASTY) {
          const doc = await trx.insertInto('documents').values({
            tenant_id: tenant.id, file_id: file.id, filename, mime_type: 'text/plain', size: 3,
            user_id: crypto.randomUUID(), uploaded_by_email: 'u@example.com',
          }).returning('id').executeTakeFirstOrThrow();
          out.push(doc.id);
        }
        return out;
      });
      docsOf.set(tenant.id, ids);
    }
  });
  afterAll(async () => {
    await tenantDbs?.close();
    await database?.close();
    await drop?.();
  });

  it('returns the same rows as withTenant, one array per query, in order', async () => {
    const [docs, count] = await tenantDbs.read(a, (db) => [
      db.selectFrom('documents').select(['id', 'filename', 'created_at']).where('tenant_id', '=', a.id).orderBy('id'),
      db.selectFrom('documents').select((eb) => eb.fn.countAll<number>().as('n')).where('tenant_id', '=', a.id),
    ] as const);
    const expected = await tenantDbs.withTenant(a, (trx) =>
      trx.selectFrom('documents').select(['id', 'filename', 'created_at']).where('tenant_id', '=', a.id).orderBy('id').execute());
    expect(docs).toEqual(expected);
    expect(docs).toHaveLength(NASTY.length);
    expect(docs[0].created_at).toBeInstanceOf(Date);
    expect(Number(count[0].n)).toBe(NASTY.length);
  });

  it('is filtered by row-level security even without a tenant filter in the query', async () => {
    const [docs] = await tenantDbs.read(b, (db) => [db.selectFrom('documents').select('id').orderBy('id')] as const);
    expect(docs.map((d) => d.id)).toEqual([...docsOf.get(b.id)!].sort());
    const [other] = await tenantDbs.read(b, (db) => [db.selectFrom('documents').select('id').where('id', '=', docsOf.get(a.id)![0])] as const);
    expect(other).toEqual([]);
  });

  it('matches every hostile filename by equality, finding exactly its own row', async () => {
    for (const [i, filename] of NASTY.entries()) {
      const [rows] = await tenantDbs.read(a, (db) => [db.selectFrom('documents').select('id').where('filename', '=', filename)] as const);
      expect(rows.map((r) => r.id), JSON.stringify(filename)).toEqual([docsOf.get(a.id)![i]]);
    }
  });

  it('leaves no tenant and no role on the connection afterwards, also after a failed read', async () => {
    // No tenant: the setting is unset (null) on a new connection, '' once a transaction-local value ended.
    const probe = async () => {
      const row = (await sql<{ tenant: string | null; role: string }>`
        SELECT current_setting('app.tenant_id', true) AS tenant, current_user AS role`.execute(database.db)).rows[0];
      return { tenant: row.tenant ?? '', role: row.role };
    };
    const before = await probe();
    expect(before.tenant).toBe('');
    await tenantDbs.read(a, (db) => [db.selectFrom('documents').select('id')] as const);
    expect(await probe()).toEqual(before);
    await expect(tenantDbs.read(a, (db) => [
      db.selectFrom('documents').select('id').where(sql<boolean>`id = ${'not-a-uuid'}::uuid`),
    ] as const)).rejects.toThrow(/uuid/i);
    expect(await probe()).toEqual(before);
    // Both RLS and the owner role are back: the owner sees every tenant's rows.
    const all = await sql<{ n: number }>`SELECT count(*)::int AS n FROM documents`.execute(database.db);
    expect(all.rows[0].n).toBe(NASTY.length * 2);
  });

  it('binds arrays and other values pg serialises, with the same scoping', async () => {
    const ids = docsOf.get(a.id)!.slice(0, 2);
    const [rows] = await tenantDbs.read(a, (db) => [
      db.selectFrom('documents').select('id').where('id', '=', sql<string>`ANY(${ids}::uuid[])`).orderBy('id'),
    ] as const);
    expect(rows.map((r) => r.id)).toEqual([...ids].sort());
    const [none] = await tenantDbs.read(b, (db) => [
      db.selectFrom('documents').select('id').where('id', '=', sql<string>`ANY(${ids}::uuid[])`),
    ] as const);
    expect(none).toEqual([]);
  });

  it('keeps working after a failed read, and after a migration changed a prepared query\'s columns', async () => {
    const all = (t: TenantRef) => tenantDbs.read(t, (db) => [db.selectFrom('documents').selectAll().orderBy('id')] as const);
    const before = (await all(a))[0];
    for (let i = 0; i < 3; i++) {
      await expect(tenantDbs.read(a, (db) => [
        db.selectFrom('documents').select('id').where(sql<boolean>`id = ${`bad-${i}`}::uuid`),
      ] as const)).rejects.toThrow(/uuid/i);
      expect((await all(a))[0]).toHaveLength(before.length);
    }
    await sql`ALTER TABLE documents ADD COLUMN scratch_note text`.execute(database.db);
    try {
      const [after] = await all(a);
      expect(after).toHaveLength(before.length);
      expect(after[0]).toHaveProperty('scratch_note', null);
    } finally {
      await sql`ALTER TABLE documents DROP COLUMN scratch_note`.execute(database.db);
    }
    expect((await all(a))[0]).toEqual(before);
  });

  // PostgreSQL only (PGlite reads are in-process transactions): registered for that mode alone.
  if (mode === 'postgres') it('is one round trip on PostgreSQL: one query on the client, one Sync', async () => {
    const pool = database.pool!;
    const client = await pool.connect();
    const calls: unknown[] = [];
    const original = client.query;
    (client as { query: unknown }).query = function (this: unknown, ...args: unknown[]) {
      calls.push(args[0]);
      return (original as (...x: unknown[]) => unknown).apply(this, args);
    };
    const connection = (client as unknown as { connection: { sync(): void } }).connection;
    const originalSync = connection.sync;
    let syncs = 0;
    connection.sync = function (this: unknown) {
      syncs += 1;
      return originalSync.call(this);
    };
    client.release();
    try {
      for (let i = 0; i < 3; i++) {
        const [rows] = await tenantDbs.read(a, (db) => [db.selectFrom('documents').select('id').where('id', '=', docsOf.get(a.id)![i])] as const);
        expect(rows).toEqual([{ id: docsOf.get(a.id)![i] }]);
      }
    } finally {
      (client as { query: unknown }).query = original;
      connection.sync = originalSync;
    }
    expect(calls).toHaveLength(3);
    expect(syncs).toBe(3);
  });
});

