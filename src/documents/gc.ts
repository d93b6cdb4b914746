/**
 * `cli files:gc [--dry-run]`: reconcile stored bytes, file rows and documents
 * of every tenant, in both directions, and recompute each tenant's
 * `storage_used_bytes` from its files table (the counter lives in the control
 * database, a dedicated tenant's files in another, so only this can repair drift),
 * and check each tenant's document counter (src/documents/counts.ts) against its
 * documents, correcting it if it drifted.
 *
 *  - files no document references: row and bytes removed (`file.deleted`);
 *  - file rows whose bytes are missing: the row and its documents removed
 *    (`document.deleted`, `file.deleted`) — they could never be downloaded —
 *    except when only `failed` documents refer to it (DELETE_FAILED_UPLOADS
 *    removes a failed upload's bytes and keeps the record): reported, kept;
 *  - bytes without a row of a tenant of this database (a crash between storing
 *    the bytes and committing the row): removed;
 *  - bytes of tenants this database does not know: reported, never removed.
 *    Tenants are never deleted from the database (a deleted organization is
 *    deactivated and keeps its data), so an unknown tenant is not a deleted
 *    one: its bytes are another database's (a restored backup older than the
 *    tenant, or a storage root shared by mistake), and only a person can tell.
 *
 * It runs only on a storage root whose marker names this database's deployment
 * (src/storage/owner.ts): never on another deployment's files, nor on a root
 * no server of this deployment has used (a wrong UPLOAD_FOLDER would make every
 * file row look like one whose bytes are missing).
 *
 * Every removal re-checks under the tenant's content lock (src/documents/queries.ts
 * `lockContent`), which uploads hold while they write bytes and insert the row,
 * so an upload in flight is never mistaken for an orphan. Recomputing the quota
 * counter while uploads are in flight can be off by those uploads (their
 * reservations are replaced by the sum of committed rows); run it when quiet, or
 * again later.
 *
 * Staging leftovers (local `.tmp/`, S3 `tmp/`) older than `stagingMaxAgeMs`
 * (default an hour; a live upload's staging data is written as bytes arrive)
 * are removed too. On S3, incomplete multipart uploads are not objects: expire
 * them with the bucket's lifecycle rule (AbortIncompleteMultipartUpload).
 */
import type { Kysely } from 'kysely';
import type { ControlSchema } from '../db/schema.js';
import type { TenantDatabases, TenantRef } from '../db/tenant-db.js';
import { recordEvent } from '../events/outbox.js';
import { UUID_RE } from '../http/ids.js';
import type { BlobStore } from '../storage/blob-store.js';
import { checkStorageOwner, readDeploymentId, StorageOwnerError } from '../storage/owner.js';
import { recountDocuments } from './counts.js';
import { lockContent } from './queries.js';

export interface FilesGcOptions {
  db: Kysely<ControlSchema>;
  tenantDbs: TenantDatabases;
  storage: BlobStore;
  dryRun?: boolean;
  log?: (line: string) => void;
  /** Staging data older than this is a leftover (default 1 hour). */
  stagingMaxAgeMs?: number;
  /** The storage root and database, for the ownership check's messages. */
  describe?: { where: string; setting: string; database: string };
}

export interface TenantGcReport {
  tenantId: string;
  unreferencedFiles: string[];
  filesWithoutBytes: string[];
  /** File rows without bytes that only failed documents refer to (kept). */
  failedWithoutBytes: string[];
  bytesWithoutRows: string[];
  storageUsedBefore: number | null;
  storageUsedAfter: number | null;
  /** The tenant's document counter (tenant/0005 `document_counts`) before, and its document count after. */
  documentCountBefore: number | null;
  documentCountAfter: number | null;
  error?: string;
}

export interface FilesGcReport {
  dryRun: boolean;
  tenants: TenantGcReport[];
  /** Keys under tenants/<id>/files/ of tenants this database does not know (kept). */
  unknownTenantBytes: string[];
  /** The same per tenant: how many blobs and bytes. */
  unknownTenants: Array<{ tenantId: string; blobs: number; bytes: number }>;
  /** Staging leftovers (removed unless a dry run). */
  staging: { removed: string[]; bytes: number };
  totals: {
    unreferencedFiles: number;
    filesWithoutBytes: number;
    bytesWithoutRows: number;
    /** Size of those blobs. */
    bytesWithoutRowsSize: number;
    /** Blobs of unknown tenants (kept) and their size. */
    unknownTenantBlobs: number;
    unknownTenantBlobsSize: number;
    /** Bytes removed (a dry run: that would be removed). */
    bytesFreed: number;
    quotaCorrections: number;
    /** Tenants whose document counter differed from their documents (corrected unless a dry run). */
    documentCountCorrections: number;
    errors: number;
  };
}

/** Staged data untouched this long is a leftover, not a live upload (which writes it as its bytes arrive). */
export const STAGING_MAX_AGE_MS = 3_600_000;

const FILE_KEY_RE = /^tenants\/([^/]+)\/files\/([0-9a-f]{2})\/([0-9a-f]{2})\/([0-9a-f]{64})$/;

interface TenantRow extends TenantRef {
  storage_used_bytes: number;
}

export async function runFilesGc(opts: FilesGcOptions): Promise<FilesGcReport> {
  const { db, storage } = opts;
  const dryRun = opts.dryRun ?? false;
  const log = opts.log ?? (() => undefined);
  const report: FilesGcReport = {
    dryRun,
    tenants: [],
    unknownTenantBytes: [],
    unknownTenants: [],
    staging: { removed: [], bytes: 0 },
    totals: {
      unreferencedFiles: 0,
      filesWithoutBytes: 0,
      bytesWithoutRows: 0,
      bytesWithoutRowsSize: 0,
      unknownTenantBlobs: 0,
      unknownTenantBlobsSize: 0,
      bytesFreed: 0,
      quotaCorrections: 0,
      documentCountCorrections: 0,
      errors: 0,
    },
  };

  await assertOwnStorage(opts);

  const tenants = new Map<string, TenantRow>();
  for (const t of await db.selectFrom('tenants').select(['id', 'isolation', 'db_server', 'db_name', 'storage_used_bytes']).execute()) {
    tenants.set(t.id, t);
  }
  const done = new Set<string>();
  const unknown = new Map<string, Map<string, number>>();

  // Keys come sorted (local walk and S3 listing), so each tenant's keys are contiguous.
  const state: { group: { tenantId: string; blobs: Map<string, number> } | null } = { group: null };
  const flush = async () => {
    const { group } = state;
    if (!group) return;
    const t = tenants.get(group.tenantId);
    if (t) {
      report.tenants.push(await reconcileTenant(opts, t, group.blobs, dryRun, log, report));
      done.add(t.id);
    } else {
      unknown.set(group.tenantId, group.blobs);
    }
    state.group = null;
  };
  for await (const obj of storage.list('tenants/')) {
    const m = FILE_KEY_RE.exec(obj.key);
    if (!m) continue; // not a content-addressed file key of ours
    if (state.group?.tenantId !== m[1]) {
      await flush();
      state.group = { tenantId: m[1], blobs: new Map() };
    }
    state.group.blobs.set(obj.key, obj.size);
  }
  await flush();
  for (const t of tenants.values()) {
    if (!done.has(t.id)) report.tenants.push(await reconcileTenant(opts, t, new Map(), dryRun, log, report));
  }

  // Bytes of tenants that are not in the tenants table (re-checked: one may have been created meanwhile): kept.
  if (unknown.size > 0) {
    const ids = [...unknown.keys()].filter((id) => UUID_RE.test(id));
    const existing = new Set(
      ids.length ? (await db.selectFrom('tenants').select('id').where('id', 'in', ids).execute()).map((r) => r.id) : [],
    );
    for (const [tenantId, blobs] of unknown) {
      if (existing.has(tenantId)) continue;
      let bytes = 0;
      for (const [key, size] of blobs) {
        report.unknownTenantBytes.push(key);
        bytes += size;
      }
      report.unknownTenants.push({ tenantId, blobs: blobs.size, bytes });
      report.totals.unknownTenantBlobs += blobs.size;
      report.totals.unknownTenantBlobsSize += bytes;
      log(`keeping ${blobs.size} blob(s), ${bytes} bytes, of tenant ${tenantId}, which this database does not know (tenants/${tenantId}/)`);
    }
  }

  const stagingCutoff = new Date(Date.now() - (opts.stagingMaxAgeMs ?? STAGING_MAX_AGE_MS));
  report.staging = await storage.purgeStaging(stagingCutoff, { dryRun });
  for (const key of report.staging.removed) log(`${dryRun ? 'would remove' : 'removing'} staging leftover: ${key}`);
  report.totals.bytesFreed += report.staging.bytes;

  log(
    `files:gc${dryRun ? ' (dry run)' : ''}: ${report.tenants.length} tenants, ` +
      `${report.staging.removed.length} staging leftovers, ` +
      `${report.totals.unreferencedFiles} unreferenced files, ${report.totals.filesWithoutBytes} file rows without bytes, ` +
      `${report.totals.bytesWithoutRows} blobs without rows, ${report.totals.bytesFreed} bytes ${dryRun ? 'to free' : 'freed'}, ` +
      `${report.totals.unknownTenantBlobs} blobs of unknown tenants kept, ` +
      `${report.totals.quotaCorrections} quota counters corrected, ` +
      `${report.totals.documentCountCorrections} document counters corrected, ${report.totals.errors} errors`,
  );
  return report;
}

/** Refuses (StorageOwnerError) unless the storage root's marker names this database's deployment. */
async function assertOwnStorage(opts: FilesGcOptions): Promise<void> {
  const id = await readDeploymentId(opts.db);
  if (!id) throw new StorageOwnerError('the database has no deployment identity: run "cli migrate" first');
  const d = opts.describe ?? { where: `the ${opts.storage.kind} storage`, setting: 'the storage setting', database: 'this database' };
  await checkStorageOwner(opts.storage, { id, database: d.database }, { where: d.where, setting: d.setting, claim: false });
}

async function reconcileTenant(
  opts: FilesGcOptions,
  tenant: TenantRow,
  blobs: Map<string, number>,
  dryRun: boolean,
  log: (line: string) => void,
  report: FilesGcReport,
): Promise<TenantGcReport> {
  const { db, tenantDbs, storage } = opts;
  const r: TenantGcReport = {
    tenantId: tenant.id,
    unreferencedFiles: [],
    filesWithoutBytes: [],
    failedWithoutBytes: [],
    bytesWithoutRows: [],
    storageUsedBefore: Number(tenant.storage_used_bytes),
    storageUsedAfter: null,
    documentCountBefore: null,
    documentCountAfter: null,
  };
  const verb = dryRun ? 'would remove' : 'removing';
  try {
    const rows = await tenantDbs.withTenant(tenant, (trx) =>
      trx
        .selectFrom('files as f')
        .select([
          'f.id', 'f.sha256', 'f.storage_key', 'f.size',
          (eb) => eb.exists(eb.selectFrom('documents as d').select('d.id').whereRef('d.file_id', '=', 'f.id')).as('referenced'),
        ])
        .where('f.tenant_id', '=', tenant.id)
        .execute(),
    );
    const byKey = new Map(rows.map((row) => [row.storage_key, row]));
    let wouldFree = 0; // dry run: sizes of the rows that would be removed
    let wouldDelete = 0; // dry run: documents that would be removed

    // 1. Bytes without a row.
    for (const [key, size] of blobs) {
      if (byKey.has(key)) continue;
      const sha256 = FILE_KEY_RE.exec(key)![4];
      const removed = await tenantDbs.withTenant(tenant, async (trx) => {
        await lockContent(trx, tenant.id, sha256);
        const row = await trx.selectFrom('files').select('id').where('tenant_id', '=', tenant.id).where('sha256', '=', sha256).executeTakeFirst();
        if (row) return false; // an upload committed it meanwhile
        log(`${verb} blob without a file row: ${key}`);
        if (!dryRun) await storage.delete(key);
        return true;
      });
      if (removed) {
        r.bytesWithoutRows.push(key);
        report.totals.bytesWithoutRowsSize += size;
        report.totals.bytesFreed += size;
      }
    }

    // 2. File rows whose bytes are missing, and 3. files no document references.
    for (const row of rows) {
      const missing = !blobs.has(row.storage_key);
      if (!missing && row.referenced) continue;
      const outcome = await tenantDbs.withTenant(tenant, async (trx) => {
        await lockContent(trx, tenant.id, row.sha256);
        const file = await trx
          .selectFrom('files')
          .select(['id', 'size', 'storage_key'])
          .where('tenant_id', '=', tenant.id)
          .where('id', '=', row.id)
          .executeTakeFirst();
        if (!file) return null;
        const docs = await trx.selectFrom('documents').select(['id', 'filename', 'status']).where('file_id', '=', file.id).execute();
        if (missing) {
          if (await storage.head(file.storage_key)) return null; // committed meanwhile
          // Only failed documents refer to it: DELETE_FAILED_UPLOADS removed the bytes on purpose;
          // keep the failure record (an identical upload restores the bytes).
          if (docs.length > 0 && docs.every((d) => d.status === 'failed')) return 'kept';
        } else if (docs.length > 0) {
          return null; // referenced again meanwhile
        }
        log(
          missing
            ? `${verb} file row without bytes ${file.id} (${file.storage_key}) and its ${docs.length} document(s)`
            : `${verb} unreferenced file ${file.id} (${file.size} bytes)`,
        );
        if (dryRun) {
          if (missing) wouldDelete += docs.length;
          return missing ? 'missing' : 'unreferenced';
        }
        for (const doc of docs) {
          await trx.deleteFrom('documents').where('id', '=', doc.id).execute();
          await recordEvent(trx, 'document.deleted', {
            tenantId: tenant.id,
            userId: null,
            data: { document_id: doc.id, file_id: file.id, filename: doc.filename, reason: 'bytes_missing' },
          });
        }
        await trx.deleteFrom('files').where('id', '=', file.id).execute();
        await recordEvent(trx, 'file.deleted', {
          tenantId: tenant.id,
          userId: null,
          data: { file_id: file.id, sha256: row.sha256, size: file.size, reason: missing ? 'bytes_missing' : 'unreferenced' },
        });
        if (!missing) await storage.delete(file.storage_key);
        return missing ? 'missing' : 'unreferenced';
      });
      if (outcome === 'kept') {
        r.failedWithoutBytes.push(row.id);
        continue;
      }
      if (outcome && dryRun) wouldFree += Number(row.size);
      if (outcome === 'missing') r.filesWithoutBytes.push(row.id);
      if (outcome === 'unreferenced') {
        r.unreferencedFiles.push(row.id);
        report.totals.bytesFreed += Number(row.size);
      }
    }

    // 4. The quota counter, recomputed from the files table.
    const sum = await tenantDbs.withTenant(tenant, (trx) =>
      trx
        .selectFrom('files')
        .select((eb) => eb.fn.coalesce(eb.fn.sum<number>('size'), eb.lit(0)).as('total'))
        .where('tenant_id', '=', tenant.id)
        .executeTakeFirstOrThrow(),
    );
    r.storageUsedAfter = Number(sum.total) - wouldFree;
    if (r.storageUsedAfter !== r.storageUsedBefore) {
      log(`tenant ${tenant.id}: storage_used_bytes ${r.storageUsedBefore} -> ${r.storageUsedAfter}${dryRun ? ' (dry run)' : ''}`);
      report.totals.quotaCorrections += 1;
      if (!dryRun) await db.updateTable('tenants').set({ storage_used_bytes: r.storageUsedAfter }).where('id', '=', tenant.id).execute();
    }

    // 5. The document counter (kept by triggers in the documents' own transactions, so only a
    // change that bypassed them can make it drift), compared with count(*) in one snapshot.
    const counts = await tenantDbs.withTenant(tenant, (trx) => recountDocuments(trx, tenant.id, { dryRun }));
    r.documentCountBefore = counts.before;
    r.documentCountAfter = counts.after - wouldDelete;
    if (counts.before !== counts.after) {
      log(`tenant ${tenant.id}: document counter ${counts.before} -> ${counts.after}${dryRun ? ' (dry run)' : ''}`);
      report.totals.documentCountCorrections += 1;
    }
  } catch (err) {
    // A tenant whose database cannot be reached is skipped: none of its bytes are touched.
    r.error = (err as Error).message;
    report.totals.errors += 1;
    log(`tenant ${tenant.id}: skipped: ${r.error}`);
  }
  report.totals.unreferencedFiles += r.unreferencedFiles.length;
  report.totals.filesWithoutBytes += r.filesWithoutBytes.length;
  report.totals.bytesWithoutRows += r.bytesWithoutRows.length;
  return r;
}
