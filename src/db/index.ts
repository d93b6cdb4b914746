/**
 * Connections to the control-plane database: PostgreSQL through a pg pool when
 * DATABASE_URL is set, otherwise the embedded PGlite under DATA_DIR.
 */
import fs from 'node:fs';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import type { ControlSchema } from './schema.js';

// bigint (count, sums of sizes) and numeric as JS numbers: sizes stay far below 2^53.
pg.types.setTypeParser(20, (v) => Number(v));
pg.types.setTypeParser(1700, (v) => Number(v));

export type DbKind = 'postgres' | 'pglite';

export interface Database {
  db: Kysely<ControlSchema>;
  kind: DbKind;
  /** The pg pool (postgres kind), for pool metrics. */
  pool?: pg.Pool;
  close(): Promise<void>;
}

export function createPgPool(connectionString: string, max: number): pg.Pool {
  const pool = new pg.Pool({ connectionString, max, idleTimeoutMillis: 30_000, connectionTimeoutMillis: 10_000 });
  // An idle client that errors (server restart) must not crash the process.
  pool.on('error', () => {});
  return pool;
}

export async function openDatabase(opts: { databaseUrl?: string; pgliteDir: string; poolMax: number }): Promise<Database> {
  if (opts.databaseUrl) {
    const pool = createPgPool(opts.databaseUrl, opts.poolMax);
    const db = new Kysely<ControlSchema>({ dialect: new PostgresDialect({ pool }) });
    return { db, kind: 'postgres', pool, close: () => db.destroy() };
  }
  // Loaded only for the embedded database: a PostgreSQL deployment never pays for PGlite's module.
  const [{ PGlite }, { createPglitePool }] = await Promise.all([import('@electric-sql/pglite'), import('./pglite-pool.js')]);
  const memory = opts.pgliteDir.startsWith('memory://');
  if (!memory) fs.mkdirSync(opts.pgliteDir, { recursive: true });
  const pglite = await PGlite.create(memory ? undefined : opts.pgliteDir, {
    parsers: { 1700: (v: string) => Number(v) },
  });
  const pool = createPglitePool(pglite);
  const db = new Kysely<ControlSchema>({ dialect: new PostgresDialect({ pool: pool as any }) });
  return { db, kind: 'pglite', close: () => db.destroy() };
}
