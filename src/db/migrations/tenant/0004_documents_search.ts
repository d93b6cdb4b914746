import { sql, type Kysely } from 'kysely';

/**
 * Index for the files list (newest first per tenant). The documents list uses
 * documents_tenant_created_idx / documents_tenant_status_idx from 0001.
 *
 * No trigram index on documents.filename: requests read tenant tables through
 * row-level security, and PostgreSQL only uses a user condition as an index
 * condition below an RLS policy when its operator is LEAKPROOF — ILIKE is not,
 * so a pg_trgm GIN index would only cost writes (measured in
 * bench/documents-explain.ts). The filename filter scans the tenant's rows.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`CREATE INDEX IF NOT EXISTS files_tenant_created_idx ON files (tenant_id, created_at DESC, id DESC)`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP INDEX IF EXISTS files_tenant_created_idx`.execute(db);
}
