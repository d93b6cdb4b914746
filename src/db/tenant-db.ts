/**
 * Tenant routing: where a tenant's data lives and how a request reaches it.
 * `shared` tenants live in the main database; `dedicated` ones in a database of
 * their own (resolved by a DedicatedResolver, see src/tenants/). Either way the
 * work runs in one transaction with `app.tenant_id` set and the non-owner
 * APP_ROLE active, so row-level security filters every row.
 */
import { sql, type Compilable, type CompiledQuery, type Kysely, type Transaction } from 'kysely';
import type { Isolation, TenantSchema } from './schema.js';
import { APP_ROLE } from './rls.js';
import { inlineParameters, NotInlinable, quoteLiteral } from './inline.js';

export interface TenantRef {
  id: string;
  isolation: Isolation;
  db_server: string | null;
  db_name: string | null;
}

export type TenantTx = Transaction<TenantSchema>;

/** The pg-Pool shape (pg.Pool, or a dedicated database's pool) that `read` sends its one message through. */
export interface RawPool {
  connect(): Promise<{ query(text: string): Promise<unknown>; release(destroy?: boolean | Error): void }>;
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
   * in one round trip on PostgreSQL: the scoping statement and the queries go
   * as one simple-protocol message, which PostgreSQL runs as one transaction
   * (so the `set_config(..., true)` settings end with it), with the queries'
   * parameters rendered as literals (src/db/inline.ts). Elsewhere (PGlite,
   * or a query that cannot be inlined) it is `withTenant` running them in turn.
   * Returns each query's rows, in order.
   */
  read<const Q extends readonly Compilable<any>[]>(
    tenant: TenantRef,
    build: (db: Kysely<TenantSchema>) => Q,
  ): ReadResult<Q>;
  setDedicatedResolver(resolver: DedicatedResolver): void;
  close(): Promise<void>;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The statement that scopes a transaction to a tenant (the same one `withTenant` runs, as literals). */
function scopeStatement(tenantId: string): string {
  if (!UUID_RE.test(tenantId)) throw new Error('tenant id is not a UUID');
  return `SELECT set_config('app.tenant_id', ${quoteLiteral(tenantId)}, true), set_config('role', ${quoteLiteral(APP_ROLE)}, true)`;
}

/** One message: scope, then each query. Null when a query cannot be rendered safely. */
function readMessage(tenantId: string, queries: CompiledQuery[]): string | null {
  try {
    return [scopeStatement(tenantId), ...queries.map((q) => inlineParameters(q.sql, q.parameters))].join(';\n');
  } catch (err) {
    if (err instanceof NotInlinable) return null;
    throw err;
  }
}

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
      const pool = poolFor(tenant);
      const message = pool ? readMessage(tenant.id, compiled) : null;
      if (!pool || message === null) {
        return withTenant(tenant, async (trx) => {
          const out: unknown[][] = [];
          for (const q of compiled) out.push((await trx.executeQuery(q)).rows as unknown[]);
          return out;
        }) as never;
      }
      const client = await pool.connect();
      let broken: Error | undefined;
      try {
        const results = (await client.query(message)) as Array<{ rows: unknown[] }>;
        // results[0] is the scoping statement; one result per query follows.
        return results.slice(1).map((r) => r.rows) as never;
      } catch (err) {
        // A statement error ends the implicit transaction cleanly; anything else may leave the connection unusable.
        if (!(err as { code?: string }).code) broken = err as Error;
        throw err;
      } finally {
        client.release(broken);
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
