/**
 * Document and file changes other than upload: rename / retype, delete (with
 * orphan cleanup: the last document of a file takes the file's bytes and row
 * with it and gives its size back to the quota), and deleting an unreferenced file.
 */
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import { errors } from '../http/errors.js';
import { recordEvent } from '../events/outbox.js';
import type { TenantContext } from '../tenants/context.js';
import { roleAtLeast } from '../tenants/context.js';
import type { Kysely } from 'kysely';
import type { ControlSchema } from '../db/schema.js';
import type { TenantDatabases, TenantRef, TenantTx } from '../db/tenant-db.js';
import type { BlobStore } from '../storage/blob-store.js';
import { sanitizeFilename } from '../storage/filename.js';
import { getDocument, getFile, lockContent, type DocumentWithFile } from './queries.js';
import { UUID_RE } from '../http/ids.js';
import { releaseQuota } from './quota.js';

export interface Actor {
  tenant: TenantContext;
  userId: string;
}

const notFound = () => errors.notFound('Document not found', 'document_not_found');

/** Users change and delete their own documents; admins any. Viewers never (403). */
function assertCanModify(actor: Actor, doc: Pick<DocumentWithFile, 'user_id'>): void {
  const { role } = actor.tenant;
  if (role === 'admin') return;
  if (roleAtLeast(role, 'user') && doc.user_id === actor.userId) return;
  throw errors.forbidden(
    roleAtLeast(role, 'user') ? 'You can only change your own documents' : 'Viewers cannot change documents',
    roleAtLeast(role, 'user') ? 'not_owner' : 'insufficient_role',
  );
}

export async function updateDocument(
  app: FastifyInstance,
  actor: Actor,
  id: string,
  body: { filename?: string; mime_type?: string },
): Promise<DocumentWithFile> {
  const { tenant } = actor;
  return app.tenantDbs.withTenant(tenant, async (trx) => {
    const doc = await getDocument(trx, tenant.id, id);
    if (!doc) throw notFound();
    assertCanModify(actor, doc);
    const changes: { filename?: string; mime_type?: string } = {};
    if (body.filename !== undefined) changes.filename = sanitizeFilename(body.filename);
    if (body.mime_type !== undefined) changes.mime_type = body.mime_type.toLowerCase();
    if (Object.keys(changes).length === 0) return doc;
    await trx
      .updateTable('documents')
      .set({ ...changes, updated_at: sql<Date>`now()` })
      .where('tenant_id', '=', tenant.id)
      .where('id', '=', doc.id)
      .execute();
    await recordEvent(trx, 'document.updated', {
      tenantId: tenant.id,
      userId: actor.userId,
      data: { document_id: doc.id, changes },
    });
    return (await getDocument(trx, tenant.id, doc.id))!;
  });
}

/**
 * Delete the document's bytes' last owner? Then the file goes too. Runs under the
 * content lock so an identical upload cannot reuse the file while its bytes are
 * being removed (it waits, then finds no file and stores the bytes again).
 */
async function removeFileIfUnreferenced(
  trx: TenantTx,
  storage: BlobStore,
  tenantId: string,
  userId: string | null,
  file: { id: string; storage_key: string; sha256: string },
  reason?: string,
): Promise<number | null> {
  const ref = await trx.selectFrom('documents').select('id').where('file_id', '=', file.id).limit(1).executeTakeFirst();
  if (ref) return null;
  const gone = await trx
    .deleteFrom('files')
    .where('tenant_id', '=', tenantId)
    .where('id', '=', file.id)
    .returning('size')
    .executeTakeFirst();
  if (!gone) return null;
  await recordEvent(trx, 'file.deleted', {
    tenantId,
    userId,
    data: { file_id: file.id, sha256: file.sha256, size: gone.size, ...(reason ? { reason } : {}) },
  });
  // Last: if the bytes cannot be removed the transaction rolls back and nothing changed.
  await storage.delete(file.storage_key);
  return gone.size;
}

export async function deleteDocument(app: FastifyInstance, storage: BlobStore, actor: Actor, id: string): Promise<void> {
  const { tenant } = actor;
  const freed = await app.tenantDbs.withTenant(tenant, async (trx) => {
    const doc = await getDocument(trx, tenant.id, id);
    if (!doc) throw notFound();
    assertCanModify(actor, doc);
    await lockContent(trx, tenant.id, doc.sha256);
    const deleted = await trx
      .deleteFrom('documents')
      .where('tenant_id', '=', tenant.id)
      .where('id', '=', doc.id)
      .returning('id')
      .executeTakeFirst();
    if (!deleted) throw notFound(); // deleted concurrently
    await recordEvent(trx, 'document.deleted', {
      tenantId: tenant.id,
      userId: actor.userId,
      data: { document_id: doc.id, file_id: doc.file_id, filename: doc.filename },
    });
    return removeFileIfUnreferenced(trx, storage, tenant.id, actor.userId, {
      id: doc.file_id,
      storage_key: doc.storage_key,
      sha256: doc.sha256,
    });
  });
  if (freed !== null) {
    await releaseQuota(app.db, tenant.id, freed).catch((err) => app.log.error({ err }, 'quota release failed'));
  }
}

/** Admin: delete a file no document references (409 `file_in_use` otherwise). */
export async function deleteFile(app: FastifyInstance, storage: BlobStore, actor: Actor, fileId: string): Promise<void> {
  const { tenant } = actor;
  const notFoundFile = () => errors.notFound('File not found', 'file_not_found');
  if (!UUID_RE.test(fileId)) throw notFoundFile();
  const freed = await app.tenantDbs.withTenant(tenant, async (trx) => {
    const file = await getFile(trx, tenant.id, fileId);
    if (!file) throw notFoundFile();
    await lockContent(trx, tenant.id, file.sha256);
    const size = await removeFileIfUnreferenced(trx, storage, tenant.id, actor.userId, file);
    if (size === null) {
      const still = await trx.selectFrom('files').select('id').where('id', '=', file.id).executeTakeFirst();
      if (!still) throw notFoundFile();
      throw errors.conflict('Documents still reference this file', 'file_in_use', { document_count: file.document_count });
    }
    return size;
  });
  await releaseQuota(app.db, tenant.id, freed).catch((err) => app.log.error({ err }, 'quota release failed'));
}

/**
 * For background cleanup (e.g. the `document.deleted` consumer): remove the file
 * if no document references it — row, `file.deleted` event and bytes under the
 * content lock (so a concurrent identical upload cannot lose its bytes), then
 * give its size back to the tenant's quota. Idempotent; false when the file is
 * gone or still referenced.
 */
export async function removeFileIfOrphaned(
  deps: { db: Kysely<ControlSchema>; tenantDbs: TenantDatabases; storage: BlobStore },
  tenant: TenantRef,
  fileId: string,
  opts: { userId?: string | null; reason?: string } = {},
): Promise<boolean> {
  if (!UUID_RE.test(fileId)) return false;
  const freed = await deps.tenantDbs.withTenant(tenant, async (trx) => {
    const file = await getFile(trx, tenant.id, fileId);
    if (!file || file.document_count > 0) return null;
    await lockContent(trx, tenant.id, file.sha256);
    return removeFileIfUnreferenced(trx, deps.storage, tenant.id, opts.userId ?? null, file, opts.reason);
  });
  if (freed === null) return false;
  await releaseQuota(deps.db, tenant.id, freed);
  return true;
}
