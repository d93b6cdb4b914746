import { sql, type Kysely } from 'kysely';

/**
 * Jobs handed to Redis (src/jobs/bullmq.ts) stay unfinished in the outbox
 * until they complete:
 *
 * - `uid`: a random id of each row. The BullMQ job id is made from it, so job
 *   ids never repeat across databases or time (the outbox id is a sequence of
 *   one database: a recreated or restored database, or two deployments on one
 *   Redis and prefix, would hand out ids BullMQ has seen and silently ignores).
 * - `enqueued_at`: when the relay first handed the job to Redis. The row is done
 *   (`published_at`) only when the job finished (the worker marks it); until
 *   then `available_at` is when the relay checks that Redis still has the job
 *   (and gives it again if Redis lost it).
 *
 * The claim of new rows (src/events/claim.ts) only looks at rows never handed
 * over (`outbox_pending_idx` now excludes handed rows, so a long Redis backlog
 * does not slow it), and handed rows due for a check are found by
 * `outbox_enqueued_idx`.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`ALTER TABLE outbox ADD COLUMN uid uuid NOT NULL DEFAULT gen_random_uuid()`.execute(db);
  await sql`ALTER TABLE outbox ADD COLUMN enqueued_at timestamptz`.execute(db);
  await sql`DROP INDEX IF EXISTS outbox_pending_idx`.execute(db);
  await sql`CREATE INDEX outbox_pending_idx ON outbox (kind, id) WHERE published_at IS NULL AND enqueued_at IS NULL`.execute(db);
  await sql`CREATE INDEX outbox_enqueued_idx ON outbox (available_at) WHERE published_at IS NULL AND enqueued_at IS NOT NULL`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP INDEX IF EXISTS outbox_enqueued_idx`.execute(db);
  await sql`DROP INDEX IF EXISTS outbox_pending_idx`.execute(db);
  await sql`CREATE INDEX outbox_pending_idx ON outbox (kind, id) WHERE published_at IS NULL`.execute(db);
  await sql`ALTER TABLE outbox DROP COLUMN IF EXISTS enqueued_at`.execute(db);
  await sql`ALTER TABLE outbox DROP COLUMN IF EXISTS uid`.execute(db);
}
