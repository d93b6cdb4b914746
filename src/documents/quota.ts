/**
 * Tenant storage quota: `tenants.storage_used_bytes` (control-plane database)
 * counts the deduplicated bytes the tenant stores. An upload reserves its size
 * with one conditional UPDATE, so concurrent uploads cannot overshoot together;
 * the reservation is released when the upload stored no new bytes (dedup) or
 * failed, and a file's size is released when the file is deleted.
 *
 * A dedicated tenant's files live in another database than `tenants`, so the
 * counter and the files table cannot change in one transaction: a crash between
 * the two leaves the counter off by that file. `files:gc` (src/documents/gc.ts)
 * recomputes it from the files table.
 */
import { sql, type Kysely } from 'kysely';
import type { ControlSchema } from '../db/schema.js';

export const MB = 1024 * 1024;

/** Reserve `bytes` if they fit in the quota; false when they do not. */
export async function reserveQuota(db: Kysely<ControlSchema>, tenantId: string, bytes: number): Promise<boolean> {
  const row = await db
    .updateTable('tenants')
    .set({ storage_used_bytes: sql`storage_used_bytes + ${bytes}::bigint` })
    .where('id', '=', tenantId)
    .where(sql<boolean>`storage_used_bytes + ${bytes}::bigint <= storage_quota_mb::bigint * ${MB}`)
    .returning('storage_used_bytes')
    .executeTakeFirst();
  return row !== undefined;
}

/** Give back `bytes` (never below zero). */
export async function releaseQuota(db: Kysely<ControlSchema>, tenantId: string, bytes: number): Promise<void> {
  if (bytes <= 0) return;
  await db
    .updateTable('tenants')
    .set({ storage_used_bytes: sql`greatest(storage_used_bytes - ${bytes}::bigint, 0)` })
    .where('id', '=', tenantId)
    .execute();
}
