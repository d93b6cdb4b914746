/** Helpers of the documents tests: multipart bodies, uploads, roles, readiness. */
import { createHash, randomBytes } from 'node:crypto';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { signUp, uniqueEmail, type Session } from '../helpers/app.js';
import type { Role } from '../../src/db/schema.js';

export interface Part {
  name: string;
  /** A file part when given (may be ''); a field otherwise. */
  filename?: string;
  contentType?: string;
  data: Buffer | string;
}

export function multipart(parts: Part[], boundary = `----tb${randomBytes(8).toString('hex')}`) {
  const chunks: Buffer[] = [];
  for (const p of parts) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"`;
    if (p.filename !== undefined) head += `; filename="${p.filename}"`;
    head += '\r\n';
    if (p.contentType) head += `Content-Type: ${p.contentType}\r\n`;
    // Raw UTF-8 in the part headers, as browsers and curl send them.
    chunks.push(Buffer.from(`${head}\r\n`, 'utf8'), Buffer.isBuffer(p.data) ? p.data : Buffer.from(p.data), Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { payload: Buffer.concat(chunks), headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } };
}

export const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
export const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

export interface Org {
  admin: Session;
  tid: string;
}

export async function newOrg(app: FastifyInstance, tag = 'org'): Promise<Org> {
  const admin = await signUp(app, { organization_name: `${tag} ${uniqueEmail('o')}` });
  return { admin, tid: admin.organizationId! };
}

/** A new user with `role` in the tenant (membership inserted directly). */
export async function member(app: FastifyInstance, tid: string, role: Role): Promise<Session> {
  const s = await signUp(app);
  await app.db.insertInto('memberships').values({ user_id: s.userId, tenant_id: tid, role }).execute();
  return s;
}

export function upload(
  app: FastifyInstance,
  s: Session,
  tid: string,
  data: Buffer | string,
  opts: { filename?: string; contentType?: string; url?: string; extra?: Part[] } = {},
): Promise<LightMyRequestResponse> {
  const body = multipart([
    ...(opts.extra ?? []),
    { name: 'file', filename: opts.filename ?? 'hello.txt', contentType: opts.contentType ?? 'text/plain', data },
  ]);
  return app.inject({
    method: 'POST',
    url: opts.url ?? `/api/tenants/${tid}/documents`,
    headers: { ...s.auth, ...body.headers },
    payload: body.payload,
  });
}

/**
 * Stop the in-process job runner (src/jobs) so documents stay `pending` until a
 * test marks them (markReady) or runs the jobs itself (`app.jobs.drain()`).
 */
export async function quietJobs(app: FastifyInstance): Promise<void> {
  await (app as any).jobs?.stop?.();
}

export async function tenantRef(app: FastifyInstance, tid: string) {
  return app.db.selectFrom('tenants').select(['id', 'isolation', 'db_server', 'db_name']).where('id', '=', tid).executeTakeFirstOrThrow();
}

/** Mark a document ready (what the validate_document worker does on success). */
export async function markReady(app: FastifyInstance, tid: string, documentId: string): Promise<void> {
  const ref = await tenantRef(app, tid);
  await app.tenantDbs.withTenant(ref, (trx) =>
    trx.updateTable('documents').set({ status: 'ready', processed_at: new Date() }).where('id', '=', documentId).execute(),
  );
}

export async function usedBytes(app: FastifyInstance, tid: string): Promise<number> {
  const row = await app.db.selectFrom('tenants').select('storage_used_bytes').where('id', '=', tid).executeTakeFirstOrThrow();
  return Number(row.storage_used_bytes);
}

export async function setQuotaMb(app: FastifyInstance, tid: string, mb: number): Promise<void> {
  await app.db.updateTable('tenants').set({ storage_quota_mb: mb }).where('id', '=', tid).execute();
}

export async function countRows(app: FastifyInstance, tid: string) {
  const ref = await tenantRef(app, tid);
  return app.tenantDbs.withTenant(ref, async (trx) => {
    const files = await trx.selectFrom('files').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    const docs = await trx.selectFrom('documents').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    return { files: Number(files.n), documents: Number(docs.n) };
  });
}

export async function outboxTopics(app: FastifyInstance, tid: string): Promise<string[]> {
  const ref = await tenantRef(app, tid);
  const rows = await app.tenantDbs.withTenant(ref, (trx) => trx.selectFrom('outbox').select('topic').orderBy('id').execute());
  return rows.map((r) => r.topic);
}
