/**
 * Kysely Migrator over the two migration sets: the control plane (main
 * database) and the tenant-data tables (main database for shared tenants, and
 * every dedicated tenant database).
 */
import { Migrator, type Kysely, type MigrationResultSet, type MigrationInfo } from 'kysely';
import { controlMigrations } from './migrations/control/index.js';
import { tenantMigrations } from './migrations/tenant/index.js';

export type MigrationSet = 'control' | 'tenant';

function migrator(db: Kysely<any>, set: MigrationSet): Migrator {
  const migrations = set === 'control' ? controlMigrations : tenantMigrations;
  return new Migrator({
    db,
    provider: { getMigrations: async () => migrations },
    migrationTableName: set === 'control' ? 'control_migration' : 'tenant_migration',
    migrationLockTableName: set === 'control' ? 'control_migration_lock' : 'tenant_migration_lock',
  });
}

function check(result: MigrationResultSet, set: MigrationSet): MigrationResultSet {
  if (result.error) {
    const failed = result.results?.find((r) => r.status === 'Error')?.migrationName;
    const err = result.error instanceof Error ? result.error : new Error(String(result.error));
    err.message = `${set} migration ${failed ?? ''} failed: ${err.message}`;
    throw err;
  }
  return result;
}

export async function migrateToLatest(db: Kysely<any>, set: MigrationSet): Promise<MigrationResultSet> {
  return check(await migrator(db, set).migrateToLatest(), set);
}

export async function migrateDown(db: Kysely<any>, set: MigrationSet): Promise<MigrationResultSet> {
  return check(await migrator(db, set).migrateDown(), set);
}

export async function migrationStatus(db: Kysely<any>, set: MigrationSet): Promise<readonly MigrationInfo[]> {
  return migrator(db, set).getMigrations();
}

/** Everything the main database needs: control plane, then the shared tenant tables. */
export async function migrateMain(db: Kysely<any>): Promise<void> {
  await migrateToLatest(db, 'control');
  await migrateToLatest(db, 'tenant');
}
