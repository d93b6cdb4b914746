import { sql, type Kysely } from 'kysely';
import { enableTenantRls } from '../../rls.js';

/**
 * 1. `document_counts`: each tenant's number of documents, so the unfiltered
 *    documents list does not count the tenant's rows on every page (an exact
 *    count(*) under row-level security reads them all). Kept by statement-level
 *    triggers on `documents`, in the transaction that inserts or deletes the
 *    rows, whoever writes them (uploads, deletes, files:gc, seeding scripts).
 *    The count is spread over SLOTS rows per tenant, the slot chosen by the
 *    writing backend (`pg_backend_pid() % SLOTS`), so concurrent uploads of one
 *    tenant on different connections do not queue on one row lock until
 *    commit; readers sum the tenant's slots (src/documents/counts.ts). TRUNCATE
 *    empties it. Documents never change tenant (RLS forbids it); `files:gc`
 *    repairs any drift (e.g. a superuser moving rows with triggers disabled).
 *
 * 2. `lock_content_file(lock_key, tenant_id, sha256)`: the uploads' content lock
 *    (src/documents/queries.ts `lockContent`) and then the tenant's file with
 *    that SHA-256, in one round trip. A VOLATILE function's queries each take a
 *    new snapshot, so the file is read after the lock is held (a single SELECT
 *    would read it with a snapshot taken before waiting for the lock, missing a
 *    file committed by the lock's previous holder).
 *
 * 3. The `outbox_notify` trigger of 0003 goes: NOTIFY takes a database-wide
 *    lock at commit, so every transaction that wrote the outbox committed one
 *    after the other. The application wakes relays itself after commit
 *    (src/events/wake.ts): in-process at once, and other processes with at most
 *    one `NOTIFY outbox` per short interval on the main database.
 */
export const SLOTS = 32;

export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    CREATE TABLE document_counts (
      tenant_id uuid NOT NULL,
      slot smallint NOT NULL,
      n bigint NOT NULL,
      PRIMARY KEY (tenant_id, slot)
    )`.execute(db);
  await sql`
    CREATE FUNCTION document_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO document_counts AS c (tenant_id, slot, n)
      SELECT tenant_id, (pg_backend_pid() % ${sql.lit(SLOTS)})::smallint, count(*) FROM new_rows GROUP BY tenant_id
      ON CONFLICT (tenant_id, slot) DO UPDATE SET n = c.n + excluded.n;
      RETURN NULL;
    END $$`.execute(db);
  await sql`
    CREATE FUNCTION document_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO document_counts AS c (tenant_id, slot, n)
      SELECT tenant_id, (pg_backend_pid() % ${sql.lit(SLOTS)})::smallint, -count(*) FROM old_rows GROUP BY tenant_id
      ON CONFLICT (tenant_id, slot) DO UPDATE SET n = c.n + excluded.n;
      RETURN NULL;
    END $$`.execute(db);
  await sql`
    CREATE FUNCTION document_counts_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      TRUNCATE document_counts;
      RETURN NULL;
    END $$`.execute(db);
  await sql`
    CREATE TRIGGER document_counts_insert AFTER INSERT ON documents
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION document_counts_inserted()`.execute(db);
  await sql`
    CREATE TRIGGER document_counts_delete AFTER DELETE ON documents
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION document_counts_deleted()`.execute(db);
  await sql`
    CREATE TRIGGER document_counts_truncate AFTER TRUNCATE ON documents
    FOR EACH STATEMENT EXECUTE FUNCTION document_counts_truncated()`.execute(db);

  // Count the rows already there. The triggers exist and this transaction holds
  // documents' lock until it commits, so no write is counted twice or missed. RLS is
  // forced on documents (it would hide every row from a table owner that is not a
  // superuser): lifted for this statement only.
  await sql`ALTER TABLE documents NO FORCE ROW LEVEL SECURITY`.execute(db);
  await sql`
    INSERT INTO document_counts (tenant_id, slot, n)
    SELECT tenant_id, 0, count(*) FROM documents GROUP BY tenant_id`.execute(db);
  await sql`ALTER TABLE documents FORCE ROW LEVEL SECURITY`.execute(db);
  await enableTenantRls(db, 'document_counts');

  await sql`
    CREATE FUNCTION lock_content_file(lock_key text, file_tenant_id uuid, file_sha256 bpchar)
    RETURNS TABLE (id uuid, size bigint, storage_key text) LANGUAGE plpgsql VOLATILE AS $$
    BEGIN
      PERFORM pg_advisory_xact_lock(hashtextextended(lock_key, 0));
      RETURN QUERY SELECT f.id, f.size, f.storage_key FROM files f WHERE f.tenant_id = file_tenant_id AND f.sha256 = file_sha256;
    END $$`.execute(db);

  await sql`DROP TRIGGER IF EXISTS outbox_notify ON outbox`.execute(db);
  await sql`DROP FUNCTION IF EXISTS outbox_notify()`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`
    CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      PERFORM pg_notify('outbox', '');
      RETURN NULL;
    END $$`.execute(db);
  await sql`CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()`.execute(db);
  await sql`DROP FUNCTION IF EXISTS lock_content_file(text, uuid, bpchar)`.execute(db);
  await sql`DROP TRIGGER IF EXISTS document_counts_truncate ON documents`.execute(db);
  await sql`DROP TRIGGER IF EXISTS document_counts_delete ON documents`.execute(db);
  await sql`DROP TRIGGER IF EXISTS document_counts_insert ON documents`.execute(db);
  await sql`DROP FUNCTION IF EXISTS document_counts_truncated()`.execute(db);
  await sql`DROP FUNCTION IF EXISTS document_counts_deleted()`.execute(db);
  await sql`DROP FUNCTION IF EXISTS document_counts_inserted()`.execute(db);
  await sql`DROP TABLE IF EXISTS document_counts`.execute(db);
}
