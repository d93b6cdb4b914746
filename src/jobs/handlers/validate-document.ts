/**
 * `validate_document` (the first seed's validate_file task): queued with the
 * upload, in its transaction (`recordJob(trx, {name: 'validate_document',
 * tenantId, payload: {document_id}})`).
 *
 * 1. Load the document and its file (tenant-scoped transaction). Not found, or
 *    no longer `pending`: nothing to do (idempotent).
 * 2. Stream the stored bytes once: they exist and are readable, their size and
 *    SHA-256 match what was recorded, the type sniffed from the first bytes
 *    agrees with the declared type and the extension (src/jobs/content-type.ts).
 * 3. The tenant is still within its quota: `storage_used_bytes` (kept by the
 *    documents capability, this upload's new bytes included) is not over
 *    `storage_quota_mb` - it can be, e.g. after an admin lowered the quota.
 * 4. `ready` + processed_at, or `failed` + error_message (+ processed_at), and
 *    the `document.processed` event, in one transaction. The update only
 *    applies to a still-pending document, so concurrent or repeated runs change
 *    it (and emit the event) once.
 * 5. A failed upload's bytes are removed (same transaction, under the uploads'
 *    content lock) when DELETE_FAILED_UPLOADS is on and no other live document
 *    uses the file. The file row stays: the failed document still refers to it.
 *
 * Small files (up to INLINE_MAX_BYTES) are checked inside the transaction of
 * step 1; larger ones between two transactions, so no transaction stays open
 * while many bytes stream. Jobs of one tenant that run at the same time in this
 * process share that transaction (natural batching, src/jobs/coalesce.ts): one
 * SELECT, one UPDATE and one event INSERT for the batch, each job still getting
 * its own outcome (or error, retried alone).
 *
 * Problems found in the content fail the document at once. Errors (storage
 * unreachable, database down) are thrown: the job is retried, and after the last
 * attempt `onDead` fails the document with the reason.
 */
import { sql } from 'kysely';
import { recordEvents } from '../../events/outbox.js';
import type { TenantRef, TenantTx } from '../../db/tenant-db.js';
import { lockContent } from '../../documents/queries.js';
import { BlobNotFoundError } from '../../storage/blob-store.js';
import { contentTypeProblem, needsTextCheck } from '../content-type.js';
import { createCoalescer, type Coalescer } from '../coalesce.js';
import { asError } from '../execute.js';
import { inspectBlob } from '../inspect.js';
import { PermanentJobError, type JobContext, type JobHandler, type JobRun } from '../types.js';
import { UUID_RE } from '../../http/ids.js';

export const VALIDATE_DOCUMENT = 'validate_document';

/** Files up to this size are read while the job's single transaction is open. */
export const INLINE_MAX_BYTES = 256 * 1024;

export interface ValidateDocumentPayload {
  document_id: string;
}

export type ValidationOutcome =
  | { status: 'ready' | 'failed'; document_id: string; error_message: string | null }
  | { status: 'skipped'; document_id: string; reason: string };

const MB = 1024 * 1024;

interface TenantRow extends TenantRef {
  storage_quota_mb: number;
  storage_used_bytes: number;
}

interface DocFile {
  id: string;
  tenant_id: string;
  file_id: string;
  filename: string;
  mime_type: string;
  size: number;
  status: string;
  user_id: string;
  file_size: number;
  sha256: string;
  storage_key: string;
}

function documentId(job: JobRun<ValidateDocumentPayload>): string {
  const id = job.payload?.document_id;
  if (typeof id !== 'string' || !UUID_RE.test(id)) throw new PermanentJobError('payload.document_id must be a UUID');
  if (!UUID_RE.test(job.tenantId)) throw new PermanentJobError('tenant id must be a UUID');
  return id;
}

const TENANT_TTL_MS = 1_000;
const tenantCaches = new WeakMap<JobContext, Map<string, { row: TenantRow; at: number }>>();

const overQuota = (t: TenantRow) => t.storage_used_bytes > t.storage_quota_mb * MB;

/**
 * The tenant's routing and quota figures, cached for a second per process. A
 * cached "over quota" is always re-read, so a stale entry can only let a job
 * through for that second, never fail one.
 */
async function loadTenant(ctx: JobContext, tenantId: string): Promise<TenantRow | undefined> {
  let cache = tenantCaches.get(ctx);
  if (!cache) {
    cache = new Map();
    tenantCaches.set(ctx, cache);
  }
  const hit = cache.get(tenantId);
  if (hit && Date.now() - hit.at < TENANT_TTL_MS && !overQuota(hit.row)) return hit.row;
  const found = await ctx.db
    .selectFrom('tenants')
    .select(['id', 'isolation', 'db_server', 'db_name', 'storage_quota_mb', 'storage_used_bytes'])
    .where('id', '=', tenantId)
    .executeTakeFirst();
  if (!found) {
    cache.delete(tenantId);
    return undefined;
  }
  const row = { ...found, storage_used_bytes: Number(found.storage_used_bytes) };
  if (cache.size > 10_000) cache.clear();
  cache.set(tenantId, { row, at: Date.now() });
  return row;
}

async function loadDocuments(trx: TenantTx, tenantId: string, ids: string[]): Promise<Map<string, DocFile>> {
  const rows = await trx
    .selectFrom('documents as d')
    .innerJoin('files as f', 'f.id', 'd.file_id')
    .select([
      'd.id', 'd.tenant_id', 'd.file_id', 'd.filename', 'd.mime_type', 'd.size', 'd.status', 'd.user_id',
      'f.size as file_size', 'f.sha256', 'f.storage_key',
    ])
    .where('d.id', 'in', ids)
    .where('d.tenant_id', '=', tenantId)
    .execute();
  return new Map(
    rows.map((r) => [r.id, { ...r, size: Number(r.size), file_size: Number(r.file_size), sha256: r.sha256.trim() }]),
  );
}

async function loadDocument(trx: TenantTx, tenantId: string, id: string): Promise<DocFile | undefined> {
  return (await loadDocuments(trx, tenantId, [id])).get(id);
}

/** What steps 2 and 3 found wrong, or null. Throws when the bytes cannot be read right now (retried). */
async function findProblem(ctx: JobContext, tenant: TenantRow, doc: DocFile): Promise<string | null> {
  let found;
  try {
    found = await inspectBlob(ctx.storage, doc.storage_key, { textCheck: needsTextCheck(doc.mime_type, doc.filename) });
  } catch (err) {
    if (err instanceof BlobNotFoundError) return 'The stored file does not exist';
    throw err;
  }
  if (found.size !== doc.file_size || found.size !== doc.size) {
    return `File size mismatch: expected ${doc.size} bytes, the stored file has ${found.size}`;
  }
  if (found.sha256 !== doc.sha256) {
    return `Checksum mismatch: expected SHA-256 ${doc.sha256}, the stored file has ${found.sha256}`;
  }
  const typeProblem = contentTypeProblem({ declared: doc.mime_type, filename: doc.filename, sniffed: found.sniffed, isText: found.isText });
  if (typeProblem) return typeProblem;
  const quota = tenant.storage_quota_mb * MB;
  if (tenant.storage_used_bytes > quota) {
    return `Organization storage quota exceeded: ${tenant.storage_used_bytes} bytes used of ${quota} (${tenant.storage_quota_mb} MB)`;
  }
  return null;
}

/** Step 4 (and 5) for several documents in the caller's tenant transaction. Null for one no longer pending. */
async function settleMany(
  ctx: JobContext,
  trx: TenantTx,
  tenant: TenantRow,
  list: Array<{ doc: DocFile; problem: string | null }>,
): Promise<Array<ValidationOutcome | null>> {
  if (list.length === 0) return [];
  const res = await sql<{ id: string; processed_at: Date | null }>`
    UPDATE documents AS d
    SET status = v.status, error_message = v.error_message, processed_at = clock_timestamp(), updated_at = now()
    FROM unnest(${sql.val(list.map((x) => x.doc.id))}::uuid[], ${sql.val(list.map((x) => (x.problem ? 'failed' : 'ready')))}::text[],
                ${sql.val(list.map((x) => x.problem))}::text[]) AS v(id, status, error_message)
    WHERE d.id = v.id AND d.tenant_id = ${tenant.id} AND d.status = 'pending'
    RETURNING d.id, d.processed_at`.execute(trx);
  const updated = new Map(res.rows.map((r) => [r.id, r.processed_at]));
  const outcomes: Array<ValidationOutcome | null> = [];
  const events: Parameters<typeof recordEvents>[1] = [];
  const failed: DocFile[] = [];
  for (const { doc, problem } of list) {
    if (!updated.has(doc.id)) {
      outcomes.push(null);
      continue;
    }
    const status = problem ? 'failed' : 'ready';
    const processedAt = updated.get(doc.id);
    updated.delete(doc.id); // a document twice in the list is settled once
    events.push({
      type: 'document.processed',
      tenantId: tenant.id,
      userId: doc.user_id,
      data: {
        document_id: doc.id,
        file_id: doc.file_id,
        filename: doc.filename,
        mime_type: doc.mime_type,
        size: doc.size,
        status,
        error_message: problem,
        processed_at: processedAt ? new Date(processedAt).toISOString() : null,
      },
    });
    if (problem) failed.push(doc);
    outcomes.push({ status, document_id: doc.id, error_message: problem });
  }
  await recordEvents(trx, events);
  if (ctx.config.deleteFailedUploads) for (const doc of failed) await deleteFailedBytes(ctx, trx, tenant, doc);
  return outcomes;
}

async function settle(ctx: JobContext, trx: TenantTx, tenant: TenantRow, doc: DocFile, problem: string | null): Promise<ValidationOutcome | null> {
  return (await settleMany(ctx, trx, tenant, [{ doc, problem }]))[0];
}

async function deleteFailedBytes(ctx: JobContext, trx: TenantTx, tenant: TenantRow, doc: DocFile): Promise<void> {
  // The uploads' content lock: an identical upload cannot reuse the file while we decide.
  await lockContent(trx, tenant.id, doc.sha256);
  const other = await trx
    .selectFrom('documents')
    .select('id')
    .where('file_id', '=', doc.file_id)
    .where('tenant_id', '=', tenant.id)
    .where('id', '<>', doc.id)
    .where('status', '<>', 'failed')
    .executeTakeFirst();
  if (other) return;
  try {
    await ctx.storage.delete(doc.storage_key);
    ctx.log.info({ document_id: doc.id, storage_key: doc.storage_key }, 'bytes of a failed upload deleted');
  } catch (err) {
    // The bytes stay (logged); the document is not left pending for it.
    ctx.log.warn({ err, document_id: doc.id }, 'validate_document: could not delete the bytes of a failed upload');
  }
}

function logOutcome(ctx: JobContext, tenant: TenantRow, outcome: ValidationOutcome): ValidationOutcome {
  if (outcome.status !== 'skipped') {
    ctx.log.info(
      { document_id: outcome.document_id, tenant_id: tenant.id, status: outcome.status, error_message: outcome.error_message },
      'document validated',
    );
  }
  return outcome;
}

const skipped = (documentId: string, reason: string): ValidationOutcome => ({ status: 'skipped', document_id: documentId, reason });

/** A file too large to read inside the transaction: checked between two. */
async function validateLarge(ctx: JobContext, tenant: TenantRow, doc: DocFile): Promise<ValidationOutcome> {
  const problem = await findProblem(ctx, tenant, doc);
  const outcome = await ctx.tenantDbs.withTenant(tenant, (trx) => settle(ctx, trx, tenant, doc, problem));
  return outcome ?? skipped(doc.id, 'already processed');
}

/** Validates the documents of one tenant's concurrent jobs in one transaction. */
async function validateBatch(ctx: JobContext, tenantId: string, docIds: string[]): Promise<Array<ValidationOutcome | Error>> {
  const tenant = await loadTenant(ctx, tenantId);
  if (!tenant) return docIds.map((id) => skipped(id, 'tenant not found'));
  const results: Array<ValidationOutcome | Error> = docIds.map((id) => skipped(id, 'already processed'));
  const large: Array<{ i: number; doc: DocFile }> = [];
  await ctx.tenantDbs.withTenant(tenant, async (trx) => {
    const docs = await loadDocuments(trx, tenant.id, [...new Set(docIds)]);
    const checked: Array<{ i: number; doc: DocFile; problem: string | null }> = [];
    const taken = new Set<string>();
    await Promise.all(
      docIds.map(async (id, i) => {
        const doc = docs.get(id);
        if (!doc) return void (results[i] = skipped(id, 'document not found'));
        if (doc.status !== 'pending') return void (results[i] = skipped(id, `already ${doc.status}`));
        if (taken.has(id)) return; // the same document twice in a batch: one settles it
        taken.add(id);
        if (doc.size > INLINE_MAX_BYTES) return void large.push({ i, doc });
        try {
          checked.push({ i, doc, problem: await findProblem(ctx, tenant, doc) });
        } catch (err) {
          results[i] = asError(err); // this job alone is retried
        }
      }),
    );
    const outcomes = await settleMany(ctx, trx, tenant, checked);
    checked.forEach((c, k) => {
      results[c.i] = outcomes[k] ?? skipped(c.doc.id, 'already processed');
    });
  });
  for (const { i, doc } of large) {
    try {
      results[i] = await validateLarge(ctx, tenant, doc);
    } catch (err) {
      results[i] = asError(err);
    }
  }
  for (const r of results) if (!(r instanceof Error)) logOutcome(ctx, tenant, r);
  return results;
}

const batchers = new WeakMap<JobContext, Coalescer<string, ValidationOutcome>>();

function batcherFor(ctx: JobContext): Coalescer<string, ValidationOutcome> {
  let b = batchers.get(ctx);
  if (!b) {
    b = createCoalescer<string, ValidationOutcome>({ maxBatch: 64, flush: (tenantId, ids) => validateBatch(ctx, tenantId, ids) });
    batchers.set(ctx, b);
  }
  return b;
}

export const validateDocument: JobHandler<ValidateDocumentPayload> = {
  name: VALIDATE_DOCUMENT,

  async run(ctx, job): Promise<ValidationOutcome> {
    const docId = documentId(job);
    return batcherFor(ctx).submit(job.tenantId, docId);
  },

  async onDead(ctx, job, error) {
    let docId: string;
    try {
      docId = documentId(job);
    } catch {
      return; // no document to fail
    }
    const tenant = await loadTenant(ctx, job.tenantId);
    if (!tenant) return;
    const reason = `Validation could not be completed after ${job.attempt} attempt${job.attempt === 1 ? '' : 's'}: ${error.message}`;
    const outcome = await ctx.tenantDbs.withTenant(tenant, async (trx) => {
      const doc = await loadDocument(trx, tenant.id, docId);
      return doc && doc.status === 'pending' ? settle(ctx, trx, tenant, doc, reason) : null;
    });
    if (outcome) logOutcome(ctx, tenant, outcome);
  },
};
