/**
 * Tenant routing: where a tenant's data lives and how a request reaches it.
 * `shared` tenants live in the main database; `dedicated` ones in a database of
 * their own (resolved by a DedicatedResolver, see src/tenants/). Either way the
 * work runs in one transaction with `app.tenant_id` set and the non-owner
 * APP_ROLE active, so row-level security filters every row.
 */
import { sql, type Kysely, type Transaction } from 'kysely';
import type { Isolation, TenantSchema } from './schema.js';
import { APP_ROLE } from './rls.js';

export interface TenantRef {
  id: string;
  isolation: Isolation;
  db_server: string | null;
  db_name: string | null;
}

export type TenantTx = Transaction<TenantSchema>;

/** Gives the database that holds a dedicated tenant's data. */
export interface DedicatedResolver {
  dbFor(tenant: TenantRef): Kysely<TenantSchema>;
  close(): Promise<void>;
}

export interface TenantDatabases {
  /** The tenant's data database (no tenant set): for migrations and maintenance only. */
  dbFor(tenant: TenantRef): Kysely<TenantSchema>;
  /** Run `fn` in a transaction scoped to the tenant by row-level security. */
  withTenant<T>(tenant: TenantRef, fn: (trx: TenantTx) => Promise<T>): Promise<T>;
  setDedicatedResolver(resolver: DedicatedResolver): void;
  close(): Promise<void>;
}

export function createTenantDatabases(main: Kysely<any>): TenantDatabases {
  let dedicated: DedicatedResolver | null = null;

  function dbFor(tenant: TenantRef): Kysely<TenantSchema> {
    if (tenant.isolation === 'shared') return main as Kysely<TenantSchema>;
    if (!dedicated) throw new Error('dedicated tenant databases are not available in this deployment');
    return dedicated.dbFor(tenant);
  }

  return {
    dbFor,
    withTenant(tenant, fn) {
      return dbFor(tenant)
        .transaction()
        .execute(async (trx) => {
          await sql`SELECT set_config('app.tenant_id', ${tenant.id}, true), set_config('role', ${APP_ROLE}, true)`.execute(trx);
          return fn(trx);
        });
    },
    setDedicatedResolver(resolver) {
      dedicated = resolver;
    },
    async close() {
      await dedicated?.close();
    },
  };
}
