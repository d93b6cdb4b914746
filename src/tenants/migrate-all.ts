/**
 * Tenant migrations over every tenant database (`cli tenants:migrate`): the
 * shared tenant tables of the main database, then each dedicated tenant's
 * database, several at a time. A failure in one database is recorded with its
 * error and the others go on. `dryRun` lists what would be applied and changes
 * nothing; `tenantMigrationHistory` lists what each database has applied.
 */
import { sql, type Kysely } from 'kysely';
import type { ControlSchema, Tenant } from '../db/schema.js';
import { migrateToLatest } from '../db/migrate.js';
import { tenantMigrations } from '../db/migrations/tenant/index.js';
import type { DedicatedTenantDatabases } from './dedicated.js';

const MIGRATION_TABLE = 'tenant_migration';
export const DEFAULT_MIGRATE_CONCURRENCY = 8;

export interface MigrationTarget {
  /** 'shared' (main database) or the dedicated tenant's database name. */
  label: string;
  kind: 'shared' | 'dedicated';
  tenantId: string | null;
  tenantName: string | null;
  /** How many shared tenants the main database's tables serve (kind 'shared'). */
  sharedTenants?: number;
}

export interface TargetResult extends MigrationTarget {
  status: 'migrated' | 'up_to_date' | 'pending' | 'failed';
  /** Applied now (or, dry run, that would be). */
  migrations: string[];
  error?: string;
  ms: number;
}

export interface MigrateAllSummary {
  results: TargetResult[];
  total: number;
  migrated: number;
  upToDate: number;
  pending: number;
  failed: number;
  ms: number;
}

export interface MigrateAllOptions {
  db: Kysely<ControlSchema>;
  dedicated: DedicatedTenantDatabases | null;
  dryRun?: boolean;
  /** Only this tenant's database (the main database for a shared tenant). */
  tenantId?: string;
  concurrency?: number;
  /** Called as each database finishes, in completion order. */
  onResult?: (r: TargetResult, done: number, total: number) => void;
}

type TenantRow = Pick<Tenant, 'id' | 'name' | 'isolation' | 'db_server' | 'db_name'>;

export class UnknownTenantError extends Error {}

/** The databases to visit: the main database (shared tables) and every dedicated tenant's, oldest first. */
export async function migrationTargets(db: Kysely<ControlSchema>, tenantId?: string): Promise<{ target: MigrationTarget; tenant?: TenantRow }[]> {
  const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  let tenants: TenantRow[];
  let includeShared = true;
  if (tenantId !== undefined) {
    const t = uuid.test(tenantId)
      ? await db.selectFrom('tenants').select(['id', 'name', 'isolation', 'db_server', 'db_name']).where('id', '=', tenantId).executeTakeFirst()
      : undefined;
    if (!t) throw new UnknownTenantError(`No tenant with id ${tenantId}`);
    includeShared = t.isolation === 'shared';
    tenants = t.isolation === 'dedicated' ? [t] : [];
  } else {
    tenants = await db
      .selectFrom('tenants')
      .select(['id', 'name', 'isolation', 'db_server', 'db_name'])
      .where('isolation', '=', 'dedicated')
      .orderBy('created_at')
      .orderBy('id')
      .execute();
  }
  const out: { target: MigrationTarget; tenant?: TenantRow }[] = [];
  if (includeShared) {
    const n = await db
      .selectFrom('tenants')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('isolation', '=', 'shared')
      .executeTakeFirstOrThrow();
    out.push({ target: { label: 'shared', kind: 'shared', tenantId: null, tenantName: null, sharedTenants: Number(n.n) } });
  }
  for (const t of tenants) {
    out.push({ target: { label: t.db_name ?? `(no database) ${t.id}`, kind: 'dedicated', tenantId: t.id, tenantName: t.name }, tenant: t });
  }
  return out;
}

function dbOf(main: Kysely<ControlSchema>, dedicated: DedicatedTenantDatabases | null, tenant?: TenantRow): Kysely<any> {
  if (!tenant) return main;
  if (!dedicated) throw new Error('dedicated tenant databases are not configured (DATABASE_URL / TENANT_DB_SERVERS)');
  return dedicated.dbFor(tenant);
}

/** Names recorded in the database's migration table (none when the table does not exist yet). */
async function executedMigrations(db: Kysely<any>): Promise<{ name: string; timestamp: string }[]> {
  const exists = await sql<{ t: string | null }>`SELECT to_regclass(${MIGRATION_TABLE}) AS t`.execute(db);
  if (!exists.rows[0]?.t) return [];
  const r = await sql<{ name: string; timestamp: string }>`SELECT name, timestamp FROM ${sql.table(MIGRATION_TABLE)} ORDER BY name`.execute(db);
  return r.rows;
}

/** What migrateToLatest would apply; throws as it would on a migration the code does not know. */
export async function pendingTenantMigrations(db: Kysely<any>): Promise<string[]> {
  const done = new Set((await executedMigrations(db)).map((m) => m.name));
  const known = Object.keys(tenantMigrations).sort();
  const unknown = [...done].filter((n) => !known.includes(n));
  if (unknown.length) throw new Error(`corrupted migrations: applied migration(s) ${unknown.join(', ')} not found in the code`);
  return known.filter((n) => !done.has(n));
}

function errorText(err: unknown): string {
  return ((err as Error)?.message || String(err)).replace(/\s+/g, ' ').trim();
}

async function runPool<T>(items: T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, async () => {
    while (next < items.length) {
      const item = items[next];
      next += 1;
      await fn(item);
    }
  });
  await Promise.all(workers);
}

export async function migrateAllTenants(opts: MigrateAllOptions): Promise<MigrateAllSummary> {
  const started = Date.now();
  const targets = await migrationTargets(opts.db, opts.tenantId);
  const results: TargetResult[] = [];
  let done = 0;
  const visit = async ({ target, tenant }: { target: MigrationTarget; tenant?: TenantRow }) => {
    const t0 = Date.now();
    let result: TargetResult;
    try {
      const db = dbOf(opts.db, opts.dedicated, tenant);
      if (opts.dryRun) {
        const pending = await pendingTenantMigrations(db);
        result = { ...target, status: pending.length ? 'pending' : 'up_to_date', migrations: pending, ms: 0 };
      } else {
        const r = await migrateToLatest(db, 'tenant');
        const applied = (r.results ?? []).filter((m) => m.status === 'Success').map((m) => m.migrationName);
        result = { ...target, status: applied.length ? 'migrated' : 'up_to_date', migrations: applied, ms: 0 };
      }
    } catch (err) {
      result = { ...target, status: 'failed', migrations: [], error: errorText(err), ms: 0 };
    }
    result.ms = Date.now() - t0;
    results.push(result);
    done += 1;
    opts.onResult?.(result, done, targets.length);
  };
  // The main database first (its failure is reported like any other), then the dedicated ones in parallel.
  for (const t of targets.filter((x) => x.target.kind === 'shared')) await visit(t);
  await runPool(targets.filter((x) => x.target.kind === 'dedicated'), opts.concurrency ?? DEFAULT_MIGRATE_CONCURRENCY, visit);
  const count = (s: TargetResult['status']) => results.filter((r) => r.status === s).length;
  return {
    results,
    total: results.length,
    migrated: count('migrated'),
    upToDate: count('up_to_date'),
    pending: count('pending'),
    failed: count('failed'),
    ms: Date.now() - started,
  };
}

export interface HistoryEntry extends MigrationTarget {
  applied: { name: string; executedAt: string }[];
  pending: string[];
  error?: string;
}

/** Each database's applied tenant migrations (and what is still pending). */
export async function tenantMigrationHistory(opts: Omit<MigrateAllOptions, 'dryRun' | 'onResult'>): Promise<HistoryEntry[]> {
  const targets = await migrationTargets(opts.db, opts.tenantId);
  const out = new Map<MigrationTarget, HistoryEntry>();
  await runPool(targets, opts.concurrency ?? DEFAULT_MIGRATE_CONCURRENCY, async ({ target, tenant }) => {
    try {
      const db = dbOf(opts.db, opts.dedicated, tenant);
      const executed = await executedMigrations(db);
      const done = new Set(executed.map((m) => m.name));
      out.set(target, {
        ...target,
        applied: executed.map((m) => ({ name: m.name, executedAt: new Date(m.timestamp).toISOString() })),
        pending: Object.keys(tenantMigrations).sort().filter((n) => !done.has(n)),
      });
    } catch (err) {
      out.set(target, { ...target, applied: [], pending: [], error: errorText(err) });
    }
  });
  return targets.map(({ target }) => out.get(target)!);
}
