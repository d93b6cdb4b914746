/**
 * A tenant's number of documents without counting its rows: `document_counts`
 * (tenant migration 0005) holds it in a few slot rows per tenant, kept by
 * triggers on `documents` in the same transaction as each insert and delete,
 * so any snapshot sees a sum equal to that snapshot's count(*).
 */
import { sql, type Kysely } from 'kysely';
import type { TenantSchema } from '../db/schema.js';
import type { TenantTx } from '../db/tenant-db.js';

/** The tenant's number of documents: the sum of its slots (a primary-key range read), as `n`. */
export function documentCountQuery(db: Kysely<TenantSchema>, tenantId: string) {
  return db
    .selectFrom('document_counts')
    .select(sql<number>`coalesce(sum(n), 0)`.as('n'))
    .where('tenant_id', '=', tenantId);
}

export async function readDocumentCount(trx: TenantTx, tenantId: string): Promise<number> {
  const row = await documentCountQuery(trx, tenantId).executeTakeFirst();
  return Number(row?.n ?? 0);
}

/**
 * Make the counter equal to count(*) (files:gc). The count and the slots' sum
 * are read in one statement, hence one snapshot, in which they agree unless the
 * counter drifted; the difference is added to a slot (additions commute with
 * concurrent uploads and deletes). Two recounts of one tenant take turns on an
 * advisory lock, so a drift is corrected once. Returns the counter before and after.
 */
export async function recountDocuments(
  trx: TenantTx,
  tenantId: string,
  opts: { dryRun?: boolean } = {},
): Promise<{ before: number; after: number }> {
  await sql`SELECT pg_advisory_xact_lock(hashtextextended(${`document_counts:${tenantId}`}, 0))`.execute(trx);
  const r = await sql<{ counted: unknown; kept: unknown }>`
    SELECT (SELECT count(*) FROM documents WHERE tenant_id = ${tenantId}) AS counted,
           (SELECT coalesce(sum(n), 0) FROM document_counts WHERE tenant_id = ${tenantId}) AS kept`.execute(trx);
  const counted = Number(r.rows[0].counted);
  const kept = Number(r.rows[0].kept);
  if (counted !== kept && !opts.dryRun) {
    await sql`
      INSERT INTO document_counts AS c (tenant_id, slot, n) VALUES (${tenantId}, 0, ${counted - kept})
      ON CONFLICT (tenant_id, slot) DO UPDATE SET n = c.n + excluded.n`.execute(trx);
  }
  return { before: kept, after: counted };
}
