import { sql, type Kysely } from 'kysely';

/**
 * `deployment`: one row, this database's random identity, made when the
 * database is created. A storage root (local folder or S3 bucket) records the
 * deployment it belongs to in its `.tenantbase-deployment` marker
 * (src/storage/owner.ts), so a server or `files:gc` never works on another
 * deployment's files: the embedded and the PostgreSQL database of one machine,
 * or two databases configured with one UPLOAD_FOLDER, are two deployments. A
 * database restored from a backup keeps its identity (and its files); a
 * recreated one gets a new one.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    CREATE TABLE deployment (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      created_at timestamptz NOT NULL DEFAULT now(),
      singleton boolean NOT NULL DEFAULT true UNIQUE CHECK (singleton)
    )`.execute(db);
  await sql`INSERT INTO deployment DEFAULT VALUES`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TABLE IF EXISTS deployment`.execute(db);
}
