/**
 * Row-level security for tenant tables. Requests touch tenant data only inside
 * `withTenant` (src/db/tenant-db.ts), which sets `app.tenant_id` and switches to
 * the APP_ROLE for the transaction; the role does not own the tables, RLS is
 * forced, so a query without any tenant filter still sees one tenant's rows.
 */
import { sql, type Kysely } from 'kysely';

export const APP_ROLE = 'app_user';

/** Create the (cluster-wide) role once; concurrent creators are tolerated. */
export async function ensureAppRole(db: Kysely<any>): Promise<void> {
  await sql`
    DO $$ BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = ${sql.lit(APP_ROLE)}) THEN
        CREATE ROLE ${sql.id(APP_ROLE)} NOLOGIN;
      END IF;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END $$`.execute(db);
  await sql`GRANT USAGE ON SCHEMA public TO ${sql.id(APP_ROLE)}`.execute(db);
}

/** Force RLS on a table with a `tenant_id` column and let the app role use it. */
export async function enableTenantRls(db: Kysely<any>, table: string): Promise<void> {
  await ensureAppRole(db);
  await sql`ALTER TABLE ${sql.table(table)} ENABLE ROW LEVEL SECURITY`.execute(db);
  await sql`ALTER TABLE ${sql.table(table)} FORCE ROW LEVEL SECURITY`.execute(db);
  await sql`
    CREATE POLICY tenant_isolation ON ${sql.table(table)}
      USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
      WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)`.execute(db);
  await sql`GRANT SELECT, INSERT, UPDATE, DELETE ON ${sql.table(table)} TO ${sql.id(APP_ROLE)}`.execute(db);
}
