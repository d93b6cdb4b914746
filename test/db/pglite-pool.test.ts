import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql, type Kysely } from 'kysely';
import { openDatabase, type Database } from '../../src/db/index.js';

describe('PGlite adapter for Kysely', () => {
  let database: Database;
  let db: Kysely<any>;

  beforeAll(async () => {
    database = await openDatabase({ pgliteDir: 'memory://', poolMax: 1 });
    db = database.db as Kysely<any>;
    await sql`CREATE TABLE counter (id int PRIMARY KEY, n int NOT NULL)`.execute(db);
    await sql`INSERT INTO counter VALUES (1, 0)`.execute(db);
  });
  afterAll(async () => database?.close());

  it('reports affected rows like pg (Kysely numUpdatedRows/numDeletedRows)', async () => {
    await sql`CREATE TABLE t (a int)`.execute(db);
    await db.insertInto('t').values([{ a: 1 }, { a: 2 }, { a: 3 }]).execute();
    const upd = await db.updateTable('t').set({ a: 9 }).where('a', '>', 1).executeTakeFirst();
    expect(upd.numUpdatedRows).toBe(2n);
    const del = await db.deleteFrom('t').executeTakeFirst();
    expect(del.numDeletedRows).toBe(3n);
  });

  it('parses bigint and numeric as numbers, timestamps as Dates', async () => {
    const row = await sql<{ b: number; n: number; t: Date }>`SELECT 9007199254740::int8 AS b, 12.5::numeric AS n, now() AS t`.execute(db);
    expect(row.rows[0].b).toBe(9007199254740);
    expect(row.rows[0].n).toBe(12.5);
    expect(row.rows[0].t).toBeInstanceOf(Date);
  });

  it('serialises transactions: concurrent read-modify-write transactions never interleave', async () => {
    const bump = () =>
      db.transaction().execute(async (trx) => {
        const { n } = await trx.selectFrom('counter').select('n').where('id', '=', 1).executeTakeFirstOrThrow();
        await new Promise((r) => setTimeout(r, 2));
        await trx.updateTable('counter').set({ n: n + 1 }).where('id', '=', 1).execute();
      });
    // Plain queries from other "requests" run meanwhile and must not land inside a transaction.
    const readers = Array.from({ length: 20 }, () => db.selectFrom('counter').select('n').execute());
    await Promise.all([...Array.from({ length: 20 }, bump), ...readers]);
    const { n } = await db.selectFrom('counter').select('n').where('id', '=', 1).executeTakeFirstOrThrow();
    expect(n).toBe(20);
  });

  it('rolls back a failed transaction and frees the connection for the next one', async () => {
    await expect(
      db.transaction().execute(async (trx) => {
        await trx.updateTable('counter').set({ n: -1 }).where('id', '=', 1).execute();
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    const { n } = await db.selectFrom('counter').select('n').where('id', '=', 1).executeTakeFirstOrThrow();
    expect(n).toBe(20);
    const failingSql = db.transaction().execute(async (trx) => {
      await sql`SELECT * FROM no_such_table`.execute(trx);
    });
    await expect(failingSql).rejects.toThrow(/no_such_table/);
    expect((await sql`SELECT 1 AS one`.execute(db)).rows).toEqual([{ one: 1 }]);
  });

  it('keeps SET LOCAL settings inside their transaction only', async () => {
    const inside = await db.transaction().execute(async (trx) => {
      await sql`SELECT set_config('app.tenant_id', 'abc', true)`.execute(trx);
      return (await sql<{ v: string }>`SELECT current_setting('app.tenant_id', true) AS v`.execute(trx)).rows[0].v;
    });
    expect(inside).toBe('abc');
    const after = (await sql<{ v: string | null }>`SELECT current_setting('app.tenant_id', true) AS v`.execute(db)).rows[0].v;
    expect(after ?? '').toBe('');
  });
});
