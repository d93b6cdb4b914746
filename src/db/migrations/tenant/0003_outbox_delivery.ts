import { sql, type Kysely } from 'kysely';

/**
 * Outbox delivery (src/events/claim.ts): rows are claimed with a lease
 * (`available_at` pushed into the future, `attempts` + 1) and marked done with
 * `published_at`. A job that exhausted its retries is dead-lettered: done, with
 * `dead_at` and its `last_error` kept.
 *
 * The relay and the job runner read every tenant's rows as the connecting user
 * (the tables' owner), not as the RLS-scoped app role; because RLS is FORCEd on
 * the outbox, the owner gets its own permissive policy (a superuser bypasses RLS
 * anyway). Requests switch to the app role, to which this policy does not apply.
 *
 * Every insert notifies channel `outbox` on commit, so a relay listening on it
 * does not wait for its next poll.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`ALTER TABLE outbox ADD COLUMN dead_at timestamptz`.execute(db);
  await sql`CREATE POLICY outbox_relay ON outbox TO CURRENT_USER USING (true) WITH CHECK (true)`.execute(db);
  await sql`
    CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      PERFORM pg_notify('outbox', '');
      RETURN NULL;
    END $$`.execute(db);
  await sql`CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()`.execute(db);
  await sql`CREATE INDEX outbox_dead_idx ON outbox (dead_at DESC) WHERE dead_at IS NOT NULL`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP INDEX IF EXISTS outbox_dead_idx`.execute(db);
  await sql`DROP TRIGGER IF EXISTS outbox_notify ON outbox`.execute(db);
  await sql`DROP FUNCTION IF EXISTS outbox_notify()`.execute(db);
  await sql`DROP POLICY IF EXISTS outbox_relay ON outbox`.execute(db);
  await sql`ALTER TABLE outbox DROP COLUMN IF EXISTS dead_at`.execute(db);
}
