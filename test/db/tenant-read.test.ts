/**
 * TenantDatabases.read: tenant-scoped reads in one round trip on PostgreSQL
 * (scoping statement + queries in one simple-protocol message, parameters as
 * literals) and the ordinary transaction elsewhere. What must hold: the same
 * rows as withTenant, row-level security still filtering, nothing of the
 * scope left on the pooled connection, and no way for a value to escape its
 * literal.
 */
import crypto from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import pg from 'pg';
import { openDatabase, type Database } from '../../src/db/index.js';
import { migrateMain } from '../../src/db/migrate.js';
import { createTenantDatabases, type TenantDatabases, type TenantRef } from '../../src/db/tenant-db.js';
import { inlineParameters, NotInlinable, quoteLiteral } from '../../src/db/inline.js';
import { createTestDatabase, HAS_PG, requirePg } from '../helpers/env.js';

const NASTY = [
  "it's", "'; DROP TABLE documents; --", "\\", "\\'", "a\\'; SELECT 1; --", "$1", "$$x$$", "E'x'", '"quoted"',
  'ünïcødé ✓ 文字', '%_\\%', 'line\nbreak\ttab', '/* not a comment */', '-- nor this', '',
];

describe('inlineParameters', () => {
  it('renders strings, numbers, bigints, booleans, dates and null as literals', () => {
    const d = new Date('2026-01-02T03:04:05.678Z');
    expect(inlineParameters('SELECT $1, $2, $3, $4, $5, $6', ['a', 12, 34n, true, d, null]))
      .toBe("SELECT 'a', '12', '34', 'true', '2026-01-02T03:04:05.678Z', NULL");
    expect(quoteLiteral("it's")).toBe("'it''s'");
    expect(quoteLiteral('a\\b')).toBe(" E'a\\\\b'");
  });

  it('leaves $n inside quoted identifiers and literals alone and handles $10 after $1', () => {
    const params = Array.from({ length: 10 }, (_, i) => `v${i + 1}`);
    expect(inlineParameters(`SELECT "a$1" FROM t WHERE x = '$2' AND y = $10 AND z = $1`, params))
      .toBe(`SELECT "a$1" FROM t WHERE x = '$2' AND y = 'v10' AND z = 'v1'`);
  });

  it('refuses what it cannot render safely', () => {
    const refused: Array<[string, unknown[]]> = [
      ['SELECT $1', [Buffer.from('x')]],
      ['SELECT $1', [[1, 2]]],
      ['SELECT $1', [{ a: 1 }]],
      ['SELECT $1', ['nul\0byte']],
      ['SELECT $1', [Number.NaN]],
      ['SELECT $1', [new Date('nope')]],
      ['SELECT $2', ['only one']],
      ['SELECT $$ x $$', []],
      ["SELECT E'\\''", []],
      ['SELECT 1 -- c', []],
      ['SELECT /* c */ 1', []],
      ["SELECT 'open", []],
    ];
    for (const [text, params] of refused) expect(() => inlineParameters(text, params), text).toThrow(NotInlinable);
  });
});

describe.skipIf(!HAS_PG)('inlined literals on PostgreSQL', () => {
  let client: pg.Client;
  beforeAll(async () => {
    client = new pg.Client({ connectionString: requirePg() });
    await client.connect();
  });
  afterAll(async () => client?.end());

  it('every value comes back exactly as given, as the one column of one row', async () => {
    for (const value of NASTY) {
      const r = await client.query<{ v: string }>(inlineParameters('SELECT $1::text AS v', [value]));
      expect(r.rows).toEqual([{ v: value }]);
    }
  });

  it('numbers, booleans and dates take the type of their context like parameters do', async () => {
    const d = new Date('2026-01-02T03:04:05.678Z');
    const text = 'SELECT g FROM generate_series(1, 100) g WHERE $1 AND $2::timestamptz = $3::timestamptz ORDER BY g LIMIT $4 OFFSET $5';
    const params = [true, d, d, 3, 10];
    const expected = await client.query(text, params);
    const inlined = await client.query(inlineParameters(text, params));
    expect(inlined.rows).toEqual(expected.rows);
    expect(inlined.rows.map((r) => r.g)).toEqual([11, 12, 13]);
  });
});

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
    const probe = async () => (await sql<{ tenant: string | null; role: string }>`
      SELECT current_setting('app.tenant_id', true) AS tenant, current_user AS role`.execute(database.db)).rows[0];
    const before = await probe();
    await tenantDbs.read(a, (db) => [db.selectFrom('documents').select('id')] as const);
    expect(await probe()).toEqual(before);
    await expect(tenantDbs.read(a, (db) => [
      db.selectFrom('documents').select('id').where(sql<boolean>`id = ${'not-a-uuid'}::uuid`),
    ] as const)).rejects.toThrow(/uuid/i);
    expect(await probe()).toEqual(before);
    expect(before.tenant ?? '').toBe('');
    // Both RLS and the owner role are back: the owner sees every tenant's rows.
    const all = await sql<{ n: number }>`SELECT count(*)::int AS n FROM documents`.execute(database.db);
    expect(all.rows[0].n).toBe(NASTY.length * 2);
  });

  it('falls back to the transaction for a value it cannot inline, with the same scoping', async () => {
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

  it.runIf(mode === 'postgres')('sends one message: a read is a single round trip on PostgreSQL', async () => {
    const pool = database.pool!;
    const client = await pool.connect();
    const sent: string[] = [];
    const original = client.query.bind(client);
    (client as { query: unknown }).query = (...args: unknown[]) => {
      sent.push(typeof args[0] === 'string' ? args[0] : JSON.stringify(args[0]));
      return (original as (...x: unknown[]) => unknown)(...args);
    };
    client.release();
    try {
      await tenantDbs.read(a, (db) => [db.selectFrom('documents').select('id').where('id', '=', docsOf.get(a.id)![0])] as const);
    } finally {
      (client as { query: unknown }).query = original;
    }
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatch(/^SELECT set_config\('app\.tenant_id', '[0-9a-f-]{36}', true\), set_config\('role', 'app_user', true\);\n/);
  });
});

