/**
 * Helpers of the jobs/events tests: documents created directly (the blob staged
 * through the storage layer, the rows and the validate_document job written in
 * one tenant transaction - what an upload does), and reading them back.
 */
import { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import type { TenantRef } from '../../src/db/tenant-db.js';
import { recordEvent, recordJob } from '../../src/events/outbox.js';
import { fileKey } from '../../src/storage/index.js';
import { signUp, type Session } from '../helpers/app.js';

export const PNG_1PX = Buffer.from(
  '89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082',
  'hex',
);

/** The start of a 64-bit ELF executable (what a ".png" must not be). */
export function elfBytes(size = 4096): Buffer {
  const b = Buffer.alloc(size, 0);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x01, 0x00]).copy(b, 0);
  b.writeUInt16LE(2, 16); // ET_EXEC
  b.writeUInt16LE(0x3e, 18); // x86-64
  b.writeUInt32LE(1, 20);
  return b;
}

export interface Org {
  session: Session;
  tenant: TenantRef & { storage_quota_mb: number };
}

export async function newOrg(app: FastifyInstance, tag = 'Jobs'): Promise<Org> {
  const session = await signUp(app, { organization_name: `${tag} ${Date.now().toString(36)} ${Math.random().toString(36).slice(2, 8)}` });
  const tenant = await app.db
    .selectFrom('tenants')
    .select(['id', 'isolation', 'db_server', 'db_name', 'storage_quota_mb'])
    .where('id', '=', session.organizationId!)
    .executeTakeFirstOrThrow();
  return { session, tenant };
}

export interface StagedDoc {
  documentId: string;
  fileId: string;
  key: string;
  sha256: string;
}

/**
 * Stores `bytes` and inserts the file and a pending document with its
 * validate_document job and document.uploaded event, like an upload.
 */
export async function createDocument(
  app: FastifyInstance,
  org: Org,
  bytes: Buffer,
  opts: { filename?: string; mimeType?: string; job?: boolean } = {},
): Promise<StagedDoc> {
  const staged = await app.storage.stage(Readable.from([bytes]), { maxBytes: 1024 * 1024 * 1024 });
  const key = fileKey(org.tenant.id, staged.sha256);
  await staged.commit(key);
  return app.tenantDbs.withTenant(org.tenant, async (trx) => {
    const existing = await trx.selectFrom('files').select('id').where('sha256', '=', staged.sha256).executeTakeFirst();
    const file =
      existing ??
      (await trx
        .insertInto('files')
        .values({ tenant_id: org.tenant.id, sha256: staged.sha256, md5: staged.md5, size: staged.size, storage_key: key })
        .returning('id')
        .executeTakeFirstOrThrow());
    const doc = await trx
      .insertInto('documents')
      .values({
        tenant_id: org.tenant.id,
        file_id: file.id,
        filename: opts.filename ?? 'notes.txt',
        mime_type: opts.mimeType ?? 'text/plain',
        size: staged.size,
        user_id: org.session.userId,
        uploaded_by_email: org.session.email,
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    if (opts.job !== false) {
      await recordJob(trx, { name: 'validate_document', tenantId: org.tenant.id, payload: { document_id: doc.id } });
    }
    await recordEvent(trx, 'document.uploaded', { tenantId: org.tenant.id, userId: org.session.userId, data: { document_id: doc.id, file_id: file.id } });
    return { documentId: doc.id, fileId: file.id, key, sha256: staged.sha256 };
  });
}

export async function getDoc(app: FastifyInstance, org: Org, id: string) {
  return app.tenantDbs.withTenant(org.tenant, (trx) =>
    trx.selectFrom('documents').selectAll().where('id', '=', id).executeTakeFirstOrThrow(),
  );
}

export async function outboxRows(app: FastifyInstance, org: Org, kind?: 'event' | 'job') {
  const res = await sql<{
    id: number;
    kind: string;
    topic: string;
    payload: any;
    published_at: Date | null;
    enqueued_at: Date | null;
    dead_at: Date | null;
    attempts: number;
    last_error: string | null;
    uid: string;
  }>`SELECT id, kind, topic, payload, published_at, enqueued_at, dead_at, attempts, last_error, uid FROM outbox
     WHERE tenant_id = ${org.tenant.id} ${kind ? sql`AND kind = ${kind}` : sql``} ORDER BY id`.execute(app.tenantDbs.dbFor(org.tenant));
  return res.rows.map((r) => ({ ...r, id: Number(r.id), payload: typeof r.payload === 'string' ? JSON.parse(r.payload) : r.payload }));
}

/** Events of a type for a document in the outbox. */
export async function processedEvents(app: FastifyInstance, org: Org, documentId: string) {
  return (await outboxRows(app, org, 'event')).filter(
    (r) => r.topic === 'document.processed' && r.payload.data.document_id === documentId,
  );
}

export async function waitFor<T>(fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 20_000, stepMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms; last value: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
