/**
 * Database-per-tenant (`dedicated` isolation) on PostgreSQL.
 *
 * Where: TENANT_DB_SERVERS lists admin URLs of the PostgreSQL servers that may
 * hold tenant databases (default: DATABASE_URL). A tenant row records the
 * server as its *key* — the admin URL without password or query
 * (`postgres://user@host:port/db`), so no secret is ever stored — and its
 * database name `tenant_{slug}_{8 hex of the id}` (at most 63 bytes).
 * New databases go to the configured server holding the fewest dedicated tenants.
 *
 * How: `createDatabase` runs CREATE DATABASE on the server and applies every
 * tenant migration; `dbFor` (the DedicatedResolver of src/db/tenant-db.ts)
 * gives a Kysely over the tenant's database, drawing connections from one
 * bounded, LRU-evicting budget (src/tenants/pool.ts).
 */
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import type { Config } from '../config.js';
import type { ControlSchema, TenantSchema } from '../db/schema.js';
import type { DedicatedResolver, RawPool, TenantRef } from '../db/tenant-db.js';
import { migrateToLatest } from '../db/migrate.js';
import { errors } from '../http/errors.js';
import { TenantConnectionPools, type TenantPoolStats } from './pool.js';

export interface DbServer {
  /** What the tenant row stores in db_server: the admin URL without credentials or query. */
  key: string;
  /** The admin URL (may hold a password): never stored, never logged. */
  url: string;
}

const MAX_IDENTIFIER = 63;
const DB_NAME_RE = /^[a-z_][a-z0-9_]{0,62}$/;

/** `postgres://user@host:port/database`: identifies a server entry without its secrets. */
export function serverKey(adminUrl: string): string {
  const u = new URL(adminUrl);
  const user = u.username ? `${decodeURIComponent(u.username)}@` : '';
  const port = u.port || '5432';
  const database = u.pathname.replace(/^\//, '') || 'postgres';
  return `postgres://${user}${u.hostname}:${port}/${database}`;
}

/** The URL of database `dbName` on the server of `adminUrl` (same credentials and options). */
export function databaseUrl(adminUrl: string, dbName: string): string {
  const u = new URL(adminUrl);
  u.pathname = `/${dbName}`;
  return u.toString();
}

/** `tenant_{slug}_{first 8 hex of the id}`: a valid, unquoted-safe PostgreSQL identifier of at most 63 bytes. */
export function dedicatedDatabaseName(slug: string, tenantId: string): string {
  const short = tenantId.replace(/-/g, '').slice(0, 8).toLowerCase();
  const room = MAX_IDENTIFIER - 'tenant_'.length - 1 - short.length;
  const safeSlug = slug.replace(/[^a-z0-9_]/g, '_').slice(0, room).replace(/_+$/, '') || 'tenant';
  return `tenant_${safeSlug}_${short}`;
}

function assertDbName(name: string): void {
  if (!DB_NAME_RE.test(name)) throw new Error(`unsafe tenant database name: ${name}`);
}

export interface DedicatedOptions {
  servers: string[];
  poolMaxTotal: number;
  maxPerDatabase?: number;
  idleTimeoutMs?: number;
  /** Bound on opening a connection and on waiting for a free one. */
  connectTimeoutMs?: number;
}

export class DedicatedTenantDatabases implements DedicatedResolver {
  readonly servers: DbServer[];
  readonly pools: TenantConnectionPools;
  /** Kysely instances by database URL (stateless wrappers over the shared pools; bounded cache). */
  private readonly kyselys = new Map<string, Kysely<TenantSchema>>();
  private static readonly CACHE_MAX = 1000;

  constructor(opts: DedicatedOptions) {
    if (opts.servers.length === 0) throw new Error('dedicated tenant databases need at least one server (TENANT_DB_SERVERS)');
    const seen = new Set<string>();
    this.servers = opts.servers.map((url) => {
      const key = serverKey(url);
      if (seen.has(key)) throw new Error(`TENANT_DB_SERVERS lists ${key} twice`);
      seen.add(key);
      return { key, url };
    });
    this.pools = new TenantConnectionPools({
      maxTotal: opts.poolMaxTotal,
      maxPerDatabase: opts.maxPerDatabase,
      idleTimeoutMs: opts.idleTimeoutMs,
      connectTimeoutMs: opts.connectTimeoutMs,
      acquireTimeoutMs: opts.connectTimeoutMs,
    });
  }

  static fromConfig(config: Config): DedicatedTenantDatabases | null {
    if (!config.databaseUrl || config.tenantDbServers.length === 0) return null;
    return new DedicatedTenantDatabases({
      servers: config.tenantDbServers,
      poolMaxTotal: config.tenantPoolMaxTotal,
      connectTimeoutMs: config.dbConnectTimeoutMs,
    });
  }

  server(key: string | null): DbServer {
    const server = this.servers.find((s) => s.key === key);
    if (!server) {
      throw errors.unavailable(
        `The database server of this organization (${key ?? 'none'}) is not configured in TENANT_DB_SERVERS`,
        'tenant_db_unavailable',
      );
    }
    return server;
  }

  /** DedicatedResolver: the tenant's own database. */
  dbFor(tenant: TenantRef): Kysely<TenantSchema> {
    if (!tenant.db_name) throw new Error(`tenant ${tenant.id} has no database recorded`);
    return this.dbAt(this.server(tenant.db_server), tenant.db_name);
  }

  /** DedicatedResolver: the pool behind `dbFor(tenant)`. */
  poolFor(tenant: TenantRef): RawPool {
    if (!tenant.db_name) throw new Error(`tenant ${tenant.id} has no database recorded`);
    return this.pools.pool(databaseUrl(this.server(tenant.db_server).url, tenant.db_name));
  }

  dbAt(server: DbServer, dbName: string): Kysely<TenantSchema> {
    const url = databaseUrl(server.url, dbName);
    let db = this.kyselys.get(url);
    if (db) {
      // Refresh its place in the LRU order.
      this.kyselys.delete(url);
      this.kyselys.set(url, db);
      return db;
    }
    db = new Kysely<TenantSchema>({ dialect: new PostgresDialect({ pool: this.pools.pool(url) }) });
    this.kyselys.set(url, db);
    if (this.kyselys.size > DedicatedTenantDatabases.CACHE_MAX) {
      const oldest = this.kyselys.keys().next().value as string;
      this.kyselys.delete(oldest);
    }
    return db;
  }

  /** The configured server with the fewest dedicated tenants (ties: the first listed). */
  async pickServer(control: Kysely<ControlSchema>): Promise<DbServer> {
    const rows = await control
      .selectFrom('tenants')
      .select(['db_server', (eb) => eb.fn.countAll<number>().as('n')])
      .where('isolation', '=', 'dedicated')
      .groupBy('db_server')
      .execute();
    const load = new Map(rows.map((r) => [r.db_server, Number(r.n)]));
    let best = this.servers[0];
    for (const s of this.servers) if ((load.get(s.key) ?? 0) < (load.get(best.key) ?? 0)) best = s;
    return best;
  }

  private async admin<T>(server: DbServer, fn: (c: pg.Client) => Promise<T>): Promise<T> {
    const client = new pg.Client({ connectionString: server.url, connectionTimeoutMillis: 10_000 });
    client.on('error', () => {});
    await client.connect();
    try {
      return await fn(client);
    } finally {
      await client.end().catch(() => {});
    }
  }

  /** CREATE DATABASE on the server, then every tenant migration. On failure nothing is left behind. */
  async createDatabase(server: DbServer, dbName: string): Promise<void> {
    assertDbName(dbName);
    await this.admin(server, async (c) => {
      await c.query(`CREATE DATABASE "${dbName}"`);
      // Only the owner (and superusers) may connect: no other role of the cluster reaches a tenant's data.
      await c.query(`REVOKE ALL ON DATABASE "${dbName}" FROM PUBLIC`);
    });
    try {
      await migrateToLatest(this.dbAt(server, dbName), 'tenant');
    } catch (err) {
      await this.dropDatabase(server, dbName).catch(() => {});
      throw err;
    }
  }

  async dropDatabase(server: DbServer, dbName: string): Promise<void> {
    assertDbName(dbName);
    this.pools.closeDatabase(databaseUrl(server.url, dbName));
    this.kyselys.delete(databaseUrl(server.url, dbName));
    await this.admin(server, (c) => c.query(`DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`));
  }

  async databaseExists(server: DbServer, dbName: string): Promise<boolean> {
    return this.admin(server, async (c) => {
      const r = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [dbName]);
      return (r.rowCount ?? 0) > 0;
    });
  }

  /** A cheap check that a tenant database answers (used by readiness-style tooling). */
  async ping(tenant: TenantRef): Promise<void> {
    await sql`SELECT 1`.execute(this.dbFor(tenant));
  }

  stats(): TenantPoolStats {
    return this.pools.stats();
  }

  async close(): Promise<void> {
    this.kyselys.clear();
    await this.pools.close();
  }
}
