/**
 * Tenant routing: where a tenant's data lives and how a request reaches it.
 * `shared` tenants live in the main database; `dedicated` ones in a database of
 * their own (resolved by a DedicatedResolver, see src/tenants/). Either way the
 * work runs in one transaction with `app.tenant_id` set and the non-owner
 * APP_ROLE active, so row-level security filters every row.
 */
import { sql, type Compilable, type Kysely, type Transaction } from 'kysely';
import type { Isolation, TenantSchema } from './schema.js';
import { APP_ROLE } from './rls.js';
import { PipelineError, runPipeline, type PipelineClient } from './pipeline.js';

export interface TenantRef {
  id: string;
  isolation: Isolation;
  db_server: string | null;
  db_name: string | null;
}

export type TenantTx = Transaction<TenantSchema>;

/** The pg-Pool shape (pg.Pool, or a dedicated database's pool) that `read` pipelines through. */
export interface RawPool {
  connect(): Promise<PipelineClient & { release(destroy?: boolean | Error): void }>;
}

/** Gives the database that holds a dedicated tenant's data. */
export interface DedicatedResolver {
  dbFor(tenant: TenantRef): Kysely<TenantSchema>;
  /** The pool behind `dbFor(tenant)`, when it is a PostgreSQL server (for `read`). */
  poolFor?(tenant: TenantRef): RawPool;
  close(): Promise<void>;
}

type RowsOf<Q> = Q extends Compilable<infer R> ? R[] : never;
/** The rows of each query of a `read`, in order. */
export type ReadResult<Q extends readonly Compilable<any>[]> = Promise<{ -readonly [K in keyof Q]: RowsOf<Q[K]> }>;

export interface TenantDatabases {
  /** The tenant's data database (no tenant set): for migrations and maintenance only. */
  dbFor(tenant: TenantRef): Kysely<TenantSchema>;
  /** Run `fn` in a transaction scoped to the tenant by row-level security. */
  withTenant<T>(tenant: TenantRef, fn: (trx: TenantTx) => Promise<T>): Promise<T>;
  /**
   * Run read-only queries under the same row-level security as `withTenant`,
   * in one round trip on PostgreSQL: the scoping statement and the queries are
   * pipelined as prepared statements before one Sync, which PostgreSQL runs as
   * one transaction (so the `set_config(..., true)` settings end with it); see
   * src/db/pipeline.ts. On PGlite it is `withTenant` running them in turn.
   * Returns each query's rows, in order.
   */
  read<const Q extends readonly Compilable<any>[]>(
    tenant: TenantRef,
    build: (db: Kysely<TenantSchema>) => Q,
  ): ReadResult<Q>;
  setDedicatedResolver(resolver: DedicatedResolver): void;
  close(): Promise<void>;
}

/** The statement that scopes a transaction to a tenant (as `withTenant` runs it). */
const SCOPE = `SELECT set_config('app.tenant_id', $1, true), set_config('role', $2, true)`;

/**
 * @param main the main database (shared tenants)
 * @param mainPool its pg pool when it is a PostgreSQL server (enables the one-round-trip `read`)
 */
export function createTenantDatabases(main: Kysely<any>, mainPool?: RawPool): TenantDatabases {
  let dedicated: DedicatedResolver | null = null;

  function dbFor(tenant: TenantRef): Kysely<TenantSchema> {
    if (tenant.isolation === 'shared') return main as Kysely<TenantSchema>;
    if (!dedicated) throw new Error('dedicated tenant databases are not available in this deployment');
    return dedicated.dbFor(tenant);
  }

  function poolFor(tenant: TenantRef): RawPool | undefined {
    if (tenant.isolation === 'shared') return mainPool;
    return dedicated?.poolFor?.(tenant);
  }

  function withTenant<T>(tenant: TenantRef, fn: (trx: TenantTx) => Promise<T>): Promise<T> {
    return dbFor(tenant)
      .transaction()
      .execute(async (trx) => {
        await sql`SELECT set_config('app.tenant_id', ${tenant.id}, true), set_config('role', ${APP_ROLE}, true)`.execute(trx);
        return fn(trx);
      });
  }

  return {
    dbFor,
    withTenant,
    async read(tenant, build) {
      const compiled = build(dbFor(tenant)).map((q) => q.compile());
      if (compiled.length === 0) return [] as never;
      const inTransaction = () => withTenant(tenant, async (trx) => {
        const out: unknown[][] = [];
        for (const q of compiled) out.push((await trx.executeQuery(q)).rows as unknown[]);
        return out;
      }) as never;
      const pool = poolFor(tenant);
      if (!pool) return inTransaction();
      const client = await pool.connect();
      try {
        const [, ...rows] = await runPipeline(client, [
          { text: SCOPE, values: [tenant.id, APP_ROLE] },
          ...compiled.map((q) => ({ text: q.sql, values: q.parameters })),
        ]);
        client.release();
        return rows as never;
      } catch (err) {
        // The connection's prepared statements are unknown after a failed pipeline: discard it.
        client.release(err instanceof Error ? err : true);
        // A statement prepared before a migration changed its table (0A000 "cached plan must not
        // change result type"): the next connection prepares it afresh, so try once more the plain way.
        if (err instanceof PipelineError && err.code === '0A000') return inTransaction();
        throw err instanceof PipelineError ? err.cause : err;
      }
    },
    setDedicatedResolver(resolver) {
      dedicated = resolver;
    },
    async close() {
      await dedicated?.close();
    },
  };
}
