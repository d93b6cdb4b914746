import { sql, type Kysely } from 'kysely';
import { enableTenantRls } from '../../rls.js';

export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    CREATE TABLE files (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      tenant_id uuid NOT NULL,
      sha256 char(64) NOT NULL,
      md5 char(32) NOT NULL,
      size bigint NOT NULL CHECK (size >= 0),
      storage_key text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      UNIQUE (tenant_id, sha256)
    )`.execute(db);
  await sql`
    CREATE TABLE documents (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      tenant_id uuid NOT NULL,
      file_id uuid NOT NULL REFERENCES files(id),
      filename text NOT NULL,
      mime_type text NOT NULL,
      size bigint NOT NULL CHECK (size >= 0),
      status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'ready', 'failed')),
      error_message text,
      user_id uuid NOT NULL,
      uploaded_by_email text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now(),
      processed_at timestamptz
    )`.execute(db);
  await sql`CREATE INDEX documents_tenant_created_idx ON documents (tenant_id, created_at DESC, id DESC)`.execute(db);
  await sql`CREATE INDEX documents_tenant_status_idx ON documents (tenant_id, status, created_at DESC)`.execute(db);
  await sql`CREATE INDEX documents_file_idx ON documents (file_id)`.execute(db);
  await enableTenantRls(db, 'files');
  await enableTenantRls(db, 'documents');
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TABLE IF EXISTS documents`.execute(db);
  await sql`DROP TABLE IF EXISTS files`.execute(db);
}
