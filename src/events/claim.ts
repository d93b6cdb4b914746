/**
 * Lease-based claiming of outbox rows, shared by the event relay, the job relay
 * (outbox -> BullMQ) and the embedded job runner. Works the same on PostgreSQL
 * and PGlite, and never holds a transaction while the work is done:
 *
 *  1. claim (one short transaction): the oldest due rows
 *     (`published_at IS NULL AND available_at <= now()`), `FOR UPDATE SKIP LOCKED`
 *     so concurrent claimers (two relays, two API processes) never take the same
 *     row; each claimed row gets a lease (`available_at = now() + lease`) and
 *     `attempts + 1`. With `ordered`, a tenant's rows are only taken while no
 *     earlier row of that tenant is still undelivered (claimed by someone else,
 *     leased, or backing off), so each tenant's rows go out in id order.
 *  2. do the work (publish, enqueue, run the job);
 *  3. `markDone` (published_at), or `release` (back off: due again later), or
 *     `markDead` (jobs only: done, with dead_at and the error kept).
 *
 * A claimer that dies between 1 and 3 leaves rows whose lease expires: they are
 * claimed again (at-least-once). `attempts` doubles as a fencing token: release
 * and heartbeat only touch a row still holding the attempt they claimed.
 *
 * Jobs on Redis add a state between 2 and 3: the relay hands a job to BullMQ and
 * marks the row `enqueued` (`markEnqueued`: `enqueued_at`, and `available_at`
 * = when to check on it), and the worker marks it done when the job finished.
 * `claimBatch` only takes rows never handed over; `claimEnqueued` takes handed
 * rows due for that check (src/jobs/bullmq.ts).
 */
import { sql, type Kysely } from 'kysely';
import type { OutboxTable, TenantSchema } from '../db/schema.js';

export type OutboxKind = OutboxTable['kind'];

export interface ClaimedRow {
  id: number;
  tenant_id: string | null;
  kind: OutboxKind;
  topic: string;
  payload: unknown;
  created_at: Date;
  /** Including this claim. */
  attempts: number;
  /** The row's random id (BullMQ job ids are made from it). */
  uid: string;
  /** Jobs: when the relay first handed it to Redis (null: never). */
  enqueued_at: Date | null;
}

export interface ClaimOptions {
  limit: number;
  leaseMs: number;
  /** Keep each tenant's rows in id order across concurrent claimers. */
  ordered: boolean;
}

type Db = Kysely<TenantSchema>;

function toNumber(v: unknown): number {
  return typeof v === 'number' ? v : Number(v);
}

function parsePayload(v: unknown): unknown {
  return typeof v === 'string' ? JSON.parse(v) : v;
}

export async function claimBatch(db: Db, kind: OutboxKind, opts: ClaimOptions): Promise<ClaimedRow[]> {
  return db.transaction().execute(async (trx) => {
    const candidates = await sql<{ id: unknown; tenant_id: string | null }>`
      SELECT id, tenant_id FROM outbox
      WHERE kind = ${kind} AND published_at IS NULL AND enqueued_at IS NULL AND available_at <= now()
      ORDER BY id
      LIMIT ${opts.limit}
      FOR UPDATE SKIP LOCKED`.execute(trx);
    let rows = candidates.rows.map((r) => ({ id: toNumber(r.id), tenant_id: r.tenant_id }));
    if (rows.length === 0) return [];

    if (opts.ordered) {
      // The first earlier undelivered row of each tenant that we did not get blocks that tenant.
      const ids = rows.map((r) => r.id);
      const maxId = ids[ids.length - 1];
      const blockers = await sql<{ tenant_id: string | null; first: unknown }>`
        SELECT tenant_id, min(id) AS first FROM outbox
        WHERE kind = ${kind} AND published_at IS NULL AND enqueued_at IS NULL AND id < ${maxId}
          AND NOT (id = ANY(${sql.val(ids)}::bigint[]))
        GROUP BY tenant_id`.execute(trx);
      if (blockers.rows.length > 0) {
        const firstBlocked = new Map(blockers.rows.map((b) => [b.tenant_id ?? '', toNumber(b.first)]));
        rows = rows.filter((r) => {
          const block = firstBlocked.get(r.tenant_id ?? '');
          return block === undefined || r.id < block;
        });
        if (rows.length === 0) return [];
      }
    }

    return lease(trx, rows.map((r) => r.id), opts.leaseMs);
  });
}

/** Lease the rows (their claim): `available_at` pushed ahead, `attempts` + 1. */
async function lease(trx: Db, ids: number[], leaseMs: number): Promise<ClaimedRow[]> {
  const claimed = await sql<Omit<ClaimedRow, 'id'> & { id: unknown }>`
    UPDATE outbox
    SET available_at = now() + make_interval(secs => ${leaseMs / 1000}), attempts = attempts + 1
    WHERE id = ANY(${sql.val(ids)}::bigint[])
    RETURNING id, tenant_id, kind, topic, payload, created_at, attempts, uid, enqueued_at`.execute(trx);
  return claimed.rows
    .map((r) => ({ ...r, id: toNumber(r.id), attempts: toNumber(r.attempts), payload: parsePayload(r.payload) }))
    .sort((a, b) => a.id - b.id);
}

/** Jobs handed to Redis and not finished whose check is due (oldest check first), leased like claimBatch's. */
export async function claimEnqueued(db: Db, opts: { limit: number; leaseMs: number }): Promise<ClaimedRow[]> {
  return db.transaction().execute(async (trx) => {
    const due = await sql<{ id: unknown }>`
      SELECT id FROM outbox
      WHERE published_at IS NULL AND enqueued_at IS NOT NULL AND available_at <= now() AND kind = 'job'
      ORDER BY available_at
      LIMIT ${opts.limit}
      FOR UPDATE SKIP LOCKED`.execute(trx);
    return due.rows.length ? lease(trx, due.rows.map((r) => toNumber(r.id)), opts.leaseMs) : [];
  });
}

/**
 * Jobs now in Redis: not done, but not for the relay to hand over again either; it checks on
 * them after `checkAfterMs` (src/jobs/bullmq.ts). Only rows still holding their claim.
 */
export async function markEnqueued(db: Db, rows: Array<{ id: number; attempts: number }>, checkAfterMs: number): Promise<void> {
  if (rows.length === 0) return;
  await sql`
    UPDATE outbox AS o
    SET enqueued_at = coalesce(o.enqueued_at, now()), available_at = now() + make_interval(secs => ${checkAfterMs / 1000})
    FROM unnest(${sql.val(rows.map((r) => r.id))}::bigint[], ${sql.val(rows.map((r) => r.attempts))}::int[]) AS c(id, attempts)
    WHERE o.id = c.id AND o.attempts = c.attempts AND o.published_at IS NULL`.execute(db);
}

/** Every job handed to Redis and not finished is checked on at the next pass (Redis may have lost them). */
export async function checkEnqueuedNow(db: Db): Promise<number> {
  const res = await sql`
    UPDATE outbox SET available_at = now()
    WHERE published_at IS NULL AND enqueued_at IS NOT NULL AND available_at > now() AND kind = 'job'`.execute(db);
  return Number(res.numAffectedRows ?? 0);
}

/**
 * Done (delivered, or the job finished). With `uids` (a job run from Redis), only rows that are
 * still the ones the jobs were made from: in a recreated database an outbox id means another row.
 */
export async function markDone(db: Db, ids: number[], uids?: string[]): Promise<void> {
  if (ids.length === 0) return;
  await sql`
    UPDATE outbox SET published_at = now(), available_at = now()
    WHERE id = ANY(${sql.val(ids)}::bigint[]) AND published_at IS NULL
      ${uids ? sql`AND uid = ANY(${sql.val(uids)}::uuid[])` : sql``}`.execute(db);
}

/** Give rows back, due again after `delayMs`, recording why. Only rows still holding their claim. */
export async function release(db: Db, rows: Array<{ id: number; attempts: number }>, error: string, delayMs: number): Promise<void> {
  if (rows.length === 0) return;
  await sql`
    UPDATE outbox AS o
    SET available_at = now() + make_interval(secs => ${delayMs / 1000}), last_error = ${truncate(error)}
    FROM unnest(${sql.val(rows.map((r) => r.id))}::bigint[], ${sql.val(rows.map((r) => r.attempts))}::int[]) AS c(id, attempts)
    WHERE o.id = c.id AND o.attempts = c.attempts AND o.published_at IS NULL`.execute(db);
}

/** Extend a claim that is still being worked on. False when the claim was lost (lease expired and re-claimed, or done). */
export async function extendLease(db: Db, row: { id: number; attempts: number }, leaseMs: number): Promise<boolean> {
  const res = await sql`
    UPDATE outbox SET available_at = now() + make_interval(secs => ${leaseMs / 1000})
    WHERE id = ${row.id} AND attempts = ${row.attempts} AND published_at IS NULL`.execute(db);
  return Number(res.numAffectedRows ?? 0) > 0;
}

/** Dead-letter a job: done, never retried, kept with its error (see listDeadJobs). `uid` as in markDone. */
export async function markDead(db: Db, id: number, error: string, uid?: string): Promise<void> {
  await sql`
    UPDATE outbox SET published_at = now(), available_at = now(), dead_at = now(), last_error = ${truncate(error)}
    WHERE id = ${id} AND dead_at IS NULL ${uid ? sql`AND uid = ${uid}::uuid` : sql``}`.execute(db);
}

export interface DeadJob {
  id: number;
  tenant_id: string | null;
  topic: string;
  payload: unknown;
  attempts: number;
  last_error: string | null;
  created_at: Date;
  dead_at: Date;
}

export async function listDeadJobs(db: Db, opts: { tenantId?: string; limit?: number } = {}): Promise<DeadJob[]> {
  const res = await sql<DeadJob>`
    SELECT id, tenant_id, topic, payload, attempts, last_error, created_at, dead_at FROM outbox
    WHERE kind = 'job' AND dead_at IS NOT NULL
      ${opts.tenantId ? sql`AND tenant_id = ${opts.tenantId}` : sql``}
    ORDER BY dead_at DESC, id DESC
    LIMIT ${opts.limit ?? 100}`.execute(db);
  return res.rows.map((r) => ({ ...r, id: toNumber(r.id), payload: parsePayload(r.payload) }));
}

export interface PendingCounts {
  events: number;
  jobs: number;
  /** Age in seconds of the oldest undelivered event (0 when none). */
  oldestEventAgeSec: number;
}

export async function pendingCounts(db: Db): Promise<PendingCounts> {
  const res = await sql<{ events: unknown; jobs: unknown; oldest: unknown }>`
    SELECT count(*) FILTER (WHERE kind = 'event') AS events,
           count(*) FILTER (WHERE kind = 'job') AS jobs,
           coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE kind = 'event')), 0) AS oldest
    FROM outbox WHERE published_at IS NULL`.execute(db);
  const r = res.rows[0];
  return { events: toNumber(r?.events ?? 0), jobs: toNumber(r?.jobs ?? 0), oldestEventAgeSec: toNumber(r?.oldest ?? 0) };
}

export function truncate(s: string, max = 2000): string {
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}
