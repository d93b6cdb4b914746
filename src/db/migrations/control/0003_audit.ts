import { sql, type Kysely } from 'kysely';

/**
 * The audit trail (filled by the `audit.log` consumer, read by
 * GET /api/tenants/:tid/audit) and the consumers' de-duplication table.
 * `audit_log` is append-only: a trigger rejects UPDATE and DELETE. It has no
 * foreign key to tenants or users, so the trail outlives them.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    CREATE TABLE audit_log (
      id bigserial PRIMARY KEY,
      event_id uuid NOT NULL UNIQUE,
      tenant_id uuid,
      user_id uuid,
      actor_email text,
      action text NOT NULL,
      resource_type text,
      resource_id text,
      ip text,
      user_agent text,
      details jsonb NOT NULL DEFAULT '{}'::jsonb,
      occurred_at timestamptz NOT NULL,
      recorded_at timestamptz NOT NULL DEFAULT now()
    )`.execute(db);
  await sql`CREATE INDEX audit_log_tenant_idx ON audit_log (tenant_id, occurred_at DESC, id DESC)`.execute(db);
  await sql`
    CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      RAISE EXCEPTION 'audit_log is append-only';
    END $$`.execute(db);
  await sql`
    CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
      FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()`.execute(db);
  await sql`
    CREATE TABLE consumed_events (
      consumer text NOT NULL,
      event_id uuid NOT NULL,
      consumed_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (consumer, event_id)
    )`.execute(db);
  await sql`CREATE INDEX consumed_events_age_idx ON consumed_events (consumed_at)`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TABLE IF EXISTS consumed_events`.execute(db);
  await sql`DROP TABLE IF EXISTS audit_log`.execute(db);
  await sql`DROP FUNCTION IF EXISTS audit_log_append_only()`.execute(db);
}
