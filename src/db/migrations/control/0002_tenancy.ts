import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    CREATE TABLE tenants (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      name text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
      slug text NOT NULL,
      isolation text NOT NULL DEFAULT 'shared' CHECK (isolation IN ('shared', 'dedicated')),
      is_active boolean NOT NULL DEFAULT true,
      storage_quota_mb integer NOT NULL CHECK (storage_quota_mb > 0),
      storage_used_bytes bigint NOT NULL DEFAULT 0 CHECK (storage_used_bytes >= 0),
      db_server text,
      db_name text UNIQUE,
      created_by uuid REFERENCES users(id) ON DELETE SET NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now(),
      CHECK (isolation = 'shared' OR (db_server IS NOT NULL AND db_name IS NOT NULL))
    )`.execute(db);
  await sql`CREATE UNIQUE INDEX tenants_name_key ON tenants (lower(name))`.execute(db);
  await sql`
    ALTER TABLE users ADD CONSTRAINT users_default_tenant_fk
      FOREIGN KEY (default_tenant_id) REFERENCES tenants(id) ON DELETE SET NULL`.execute(db);
  await sql`
    CREATE TABLE memberships (
      user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
      tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
      role text NOT NULL CHECK (role IN ('admin', 'user', 'viewer')),
      joined_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (user_id, tenant_id)
    )`.execute(db);
  await sql`CREATE INDEX memberships_tenant_idx ON memberships (tenant_id, role)`.execute(db);
  await sql`
    CREATE TABLE invitations (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
      email text NOT NULL,
      role text NOT NULL CHECK (role IN ('admin', 'user', 'viewer')),
      token_hash text NOT NULL UNIQUE,
      expires_at timestamptz NOT NULL,
      used_at timestamptz,
      created_by uuid REFERENCES users(id) ON DELETE SET NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    )`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TABLE IF EXISTS invitations`.execute(db);
  await sql`DROP TABLE IF EXISTS memberships`.execute(db);
  await sql`ALTER TABLE users DROP CONSTRAINT IF EXISTS users_default_tenant_fk`.execute(db);
  await sql`DROP TABLE IF EXISTS tenants`.execute(db);
}
