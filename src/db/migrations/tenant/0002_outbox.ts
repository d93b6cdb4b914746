import { sql, type Kysely } from 'kysely';
import { enableTenantRls } from '../../rls.js';

/**
 * The transactional outbox: events and jobs written in the same transaction as
 * the change that causes them, in the database that holds that change (main
 * database for control-plane and shared-tenant changes, the tenant's own
 * database for a dedicated tenant). Relays deliver them and mark them sent.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    CREATE TABLE outbox (
      id bigserial PRIMARY KEY,
      tenant_id uuid,
      kind text NOT NULL CHECK (kind IN ('event', 'job')),
      topic text NOT NULL,
      payload jsonb NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      available_at timestamptz NOT NULL DEFAULT now(),
      published_at timestamptz,
      attempts integer NOT NULL DEFAULT 0,
      last_error text
    )`.execute(db);
  await sql`CREATE INDEX outbox_pending_idx ON outbox (kind, id) WHERE published_at IS NULL`.execute(db);
  // Control-plane events have no tenant; RLS applies to tenant-scoped writers only
  // (the relay runs as the owner). A NULL tenant_id never matches the policy.
  await enableTenantRls(db, 'outbox');
  await sql`GRANT USAGE ON SEQUENCE outbox_id_seq TO app_user`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TABLE IF EXISTS outbox`.execute(db);
}
