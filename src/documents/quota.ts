/**
 * Tenant storage quota: `tenants.storage_used_bytes` (control-plane database)
 * counts the deduplicated bytes the tenant stores. An upload reserves its size
 * with a conditional UPDATE (concurrent ones of a process: one UPDATE of their
 * sum, see reserveQuota), so concurrent uploads cannot overshoot together;
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

/** Reserve `bytes` if they fit in the quota (one conditional UPDATE); false when they do not. */
async function reserveOne(db: Kysely<ControlSchema>, tenantId: string, bytes: number): Promise<boolean> {
  const row = await db
    .updateTable('tenants')
    .set({ storage_used_bytes: sql`storage_used_bytes + ${bytes}::bigint` })
    .where('id', '=', tenantId)
    .where(sql<boolean>`storage_used_bytes + ${bytes}::bigint <= storage_quota_mb::bigint * ${MB}`)
    .returning('storage_used_bytes')
    .executeTakeFirst();
  return row !== undefined;
}

interface Waiting {
  bytes: number;
  resolve(ok: boolean): void;
  reject(err: unknown): void;
}

interface TenantQueue {
  running: boolean;
  waiting: Waiting[];
}

const queues = new WeakMap<Kysely<ControlSchema>, Map<string, TenantQueue>>();

/**
 * Reserve `bytes` if they fit in the quota; false when they do not.
 *
 * Every upload of a tenant updates the same `tenants` row, and each UPDATE holds
 * the row until its commit is flushed, so reservations queue there one by one.
 * Within this process they queue here instead: while one UPDATE is in flight,
 * the reservations that arrive wait and then go as one UPDATE of their sum under
 * the same condition (all fit together, or that UPDATE changes nothing and each
 * is tried alone, in arrival order). The quota holds exactly as with one UPDATE
 * per upload.
 */
export function reserveQuota(db: Kysely<ControlSchema>, tenantId: string, bytes: number): Promise<boolean> {
  let perDb = queues.get(db);
  if (!perDb) {
    perDb = new Map();
    queues.set(db, perDb);
  }
  let queue = perDb.get(tenantId);
  if (!queue) {
    queue = { running: false, waiting: [] };
    perDb.set(tenantId, queue);
  }
  const q = queue;
  const promise = new Promise<boolean>((resolve, reject) => q.waiting.push({ bytes, resolve, reject }));
  if (!q.running) void drainQueue(db, perDb, tenantId, q);
  return promise;
}

async function drainQueue(db: Kysely<ControlSchema>, perDb: Map<string, TenantQueue>, tenantId: string, q: TenantQueue) {
  q.running = true;
  try {
    while (q.waiting.length > 0) {
      const batch = q.waiting.splice(0);
      if (batch.length > 1) {
        const total = batch.reduce((n, w) => n + w.bytes, 0);
        let together: boolean;
        try {
          together = await reserveOne(db, tenantId, total);
        } catch (err) {
          for (const w of batch) w.reject(err);
          continue;
        }
        if (together) {
          for (const w of batch) w.resolve(true);
          continue;
        }
      }
      for (const w of batch) {
        try {
          w.resolve(await reserveOne(db, tenantId, w.bytes));
        } catch (err) {
          w.reject(err);
        }
      }
    }
  } finally {
    q.running = false;
    perDb.delete(tenantId);
  }
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
