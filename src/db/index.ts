/**
 * Connections to the control-plane database: PostgreSQL through a pg pool when
 * DATABASE_URL is set, otherwise the embedded PGlite under DATA_DIR.
 */
import fs from 'node:fs';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { lockDataDir } from './data-dir-lock.js';
import type { ControlSchema } from './schema.js';
import { markDependency } from '../http/errors.js';

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

/** The database, for people (no credentials): "PostgreSQL host:5432/name" or "embedded PGlite at <dir>". */
export function describeDatabase(config: { databaseUrl?: string; pgliteDir: string }): string {
  if (!config.databaseUrl) return `embedded PGlite at ${config.pgliteDir}`;
  const u = new URL(config.databaseUrl);
  return `PostgreSQL ${u.hostname}:${u.port || '5432'}${u.pathname}`;
}

export interface PgPoolOptions {
  max: number;
  /** Bound on opening a connection and on waiting for a free one (then the query fails: 503). */
  connectTimeoutMs?: number;
  /** Told about each connection the server ends or loses (restart, pg_terminate_backend, failover). */
  onConnectionError?: (err: Error) => void;
}

export function createPgPool(connectionString: string, opts: PgPoolOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString,
    max: opts.max,
    idleTimeoutMillis: 30_000,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 10_000,
  });
  // pg-pool listens for 'error' only while a client is idle in the pool: a checked-out client
  // whose connection ends (a transaction idle between statements when the server restarts:
  // 57P01) would emit an unhandled 'error' and kill the process. Every client gets a listener
  // for its whole life; the statement that uses it next fails (503) and the pool discards it.
  pool.on('connect', (client) => client.on('error', (err) => opts.onConnectionError?.(err)));
  pool.on('error', () => {}); // an idle client's error: the client's own listener above reports it
  // A failed connection attempt is a plain socket error (ECONNREFUSED): mark it as the database's.
  const connect = pool.connect.bind(pool) as (cb?: (err: Error | undefined, ...rest: unknown[]) => void) => Promise<unknown> | void;
  (pool as { connect: typeof connect }).connect = (cb) =>
    cb
      ? connect((err, ...rest) => cb(err && markDependency(err, 'database'), ...rest))
      : (connect() as Promise<unknown>).catch((err: unknown) => Promise.reject(markDependency(err, 'database')));
  return pool;
}

export interface OpenDatabaseOptions {
  databaseUrl?: string;
  pgliteDir: string;
  poolMax: number;
  /** Bound on opening a connection and on waiting for a free one (then the query fails: 503). */
  connectTimeoutMs?: number;
  /** Told about each connection the server ends or loses (restart, pg_terminate_backend, failover). */
  onConnectionError?: (err: Error) => void;
  /**
   * What this process is, for the embedded database's lock ('server', 'worker', 'cli <command>'):
   * a second opener is refused with a message naming it (src/db/data-dir-lock.ts).
   */
  role?: string;
  /** Told when a stale lock (its process gone) was taken over. */
  onStaleLock?(message: string): void;
}

export async function openDatabase(opts: OpenDatabaseOptions): Promise<Database> {
  if (opts.databaseUrl) {
    const pool = createPgPool(opts.databaseUrl, { max: opts.poolMax, connectTimeoutMs: opts.connectTimeoutMs, onConnectionError: opts.onConnectionError });
    const db = new Kysely<ControlSchema>({ dialect: new PostgresDialect({ pool }) });
    return { db, kind: 'postgres', pool, close: () => db.destroy() };
  }
  // Loaded only for the embedded database: a PostgreSQL deployment never pays for PGlite's module.
  const [{ PGlite }, { createPglitePool }] = await Promise.all([import('@electric-sql/pglite'), import('./pglite-pool.js')]);
  const memory = opts.pgliteDir.startsWith('memory://');
  // Before anything touches the directory: a second process is refused here.
  const lock = memory ? null : lockDataDir(opts.pgliteDir, opts.role ?? 'server');
  if (lock?.tookOverFrom) {
    const { owner, reason } = lock.tookOverFrom;
    opts.onStaleLock?.(`took over the stale lock ${lock.file}${owner ? ` of ${owner.role} pid ${owner.pid}` : ''}: ${reason}`);
  }
  let pglite;
  try {
    if (!memory) fs.mkdirSync(opts.pgliteDir, { recursive: true });
    pglite = await PGlite.create(memory ? undefined : opts.pgliteDir, {
      parsers: { 1700: (v: string) => Number(v) },
    });
  } catch (err) {
    lock?.release();
    throw err;
  }
  const pool = createPglitePool(pglite);
  const db = new Kysely<ControlSchema>({ dialect: new PostgresDialect({ pool: pool as any }) });
  return {
    db,
    kind: 'pglite',
    async close() {
      try {
        await db.destroy();
      } finally {
        lock?.release();
      }
    },
  };
}
