/**
 * /api/tenants/:tid/documents and /api/tenants/:tid/files (API.md "Documents",
 * "Files"), the public signed-link download /api/downloads/:tid/:id, and the
 * seed-001 current-organization API /api/files — one domain model, one storage.
 * Multipart parsing is registered here only (streamed; never buffered).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import multipart from '@fastify/multipart';
import { Type } from '@sinclair/typebox';
import { errors } from '../http/errors.js';
import { PaginationQuery, pageMeta, pageParams, problems } from '../http/schemas.js';
import { requireRole } from '../tenants/context.js';
import { currentOrganizationId } from '../auth/service.js';
import { signDownload, verifyDownload } from '../storage/signed-url.js';
import {
  DocIdParams, DocumentListSchema, DocumentSchema, DownloadUrlQuery, DownloadUrlSchema, FileDetailSchema,
  FileIdParams, FileListSchema, ListQuery, OrgFileDetail, OrgFileListSchema, OrgUploadResult, UpdateDocumentBody,
  type DocumentT, type ListQueryT,
} from './schemas.js';
import { documentById, getDocument, getFile, listFiles, readDocumentsPage, type DocumentWithFile, type FileWithCount } from './queries.js';
import { UUID_RE } from '../http/ids.js';
import { placeUpload, receiveUpload } from './upload.js';
import { auditEntryOf } from '../audit/plugin.js';
import { auditRow } from '../audit/record.js';
import { assertReady, sendDocument } from './download.js';
import { deleteDocument, deleteFile, updateDocument } from './service.js';

const iso = (d: Date) => d.toISOString();

export function toDocument(d: DocumentWithFile): DocumentT {
  return {
    id: d.id,
    filename: d.filename,
    mime_type: d.mime_type,
    size: Number(d.size),
    status: d.status,
    file_id: d.file_id,
    sha256: d.sha256,
    user_id: d.user_id,
    uploaded_by_email: d.uploaded_by_email,
    error_message: d.error_message,
    created_at: iso(d.created_at),
    updated_at: iso(d.updated_at),
    processed_at: d.processed_at ? iso(d.processed_at) : null,
  };
}

function toFile(f: FileWithCount) {
  return { id: f.id, sha256: f.sha256, md5: f.md5, size: Number(f.size), document_count: f.document_count, created_at: iso(f.created_at) };
}

const docNotFound = () => errors.notFound('Document not found', 'document_not_found');

/** Receive and place an upload; its audit entry (answered 201) is written in the document's transaction. */
async function upload(app: FastifyInstance, request: FastifyRequest) {
  const received = await receiveUpload(request, app.storage, {
    maxBytes: app.config.maxFileSizeBytes,
    bodyIdleTimeoutMs: app.config.bodyIdleTimeoutMs,
  });
  const { document } = await placeUpload(
    { app, storage: app.storage },
    {
      tenant: request.tenant,
      userId: request.user.id,
      email: request.user.email,
      upload: received,
      outbox: [auditRow(auditEntryOf(request, 201))],
    },
  );
  request.auditRecorded = true;
  return document;
}

async function loadDocument(request: FastifyRequest, id: string): Promise<DocumentWithFile> {
  if (!UUID_RE.test(id)) throw docNotFound();
  const [[doc]] = await request.readTenantDb((db) => [documentById(db, request.tenant.id, id)] as const);
  if (!doc) throw docNotFound();
  return doc;
}

async function listPage(request: FastifyRequest, q: ListQueryT) {
  const p = pageParams(q);
  const { rows, total } = await readDocumentsPage(
    (build) => request.readTenantDb(build),
    request.tenant.id,
    { filename: q.filename, status: q.status },
    p,
  );
  return { rows, meta: pageMeta(total, p.page, p.perPage) };
}

function baseUrl(app: FastifyInstance, request: FastifyRequest): string {
  return app.config.publicBaseUrl?.replace(/\/+$/, '') ?? `${request.protocol}://${request.host}`;
}

const uploadDescription =
  'multipart/form-data with one file part named `file` and an optional `filename` field. The bytes are streamed to ' +
  'storage; the document starts `pending` until background validation. An empty file is 400 `empty_file`, no file ' +
  '400 `no_file`, a second file 400 `too_many_files`, a non-multipart body 415.';

export const tenantDocumentRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.addHook('onRequest', app.authenticate);
  app.addHook('onRequest', app.tenantContext);

  app.post('/', {
    preHandler: requireRole('user'),
    schema: {
      tags: ['documents'],
      summary: 'Upload a document (streamed multipart)',
      description: uploadDescription,
      consumes: ['multipart/form-data'],
      params: Type.Object({ tid: Type.String() }),
      response: { 201: DocumentSchema, ...problems(400, 401, 403, 404, 413, 415) },
    },
  }, async (request, reply) => reply.status(201).send(toDocument(await upload(app, request))));

  app.get('/', {
    schema: {
      tags: ['documents'],
      summary: 'List documents, newest first',
      params: Type.Object({ tid: Type.String() }),
      querystring: ListQuery,
      response: { 200: DocumentListSchema, ...problems(400, 401, 404) },
    },
  }, async (request) => {
    const { rows, meta } = await listPage(request, request.query);
    return { documents: rows.map(toDocument), ...meta };
  });

  app.get('/:id', {
    schema: { tags: ['documents'], params: DocIdParams, response: { 200: DocumentSchema, ...problems(401, 404) } },
  }, async (request) => toDocument(await loadDocument(request, request.params.id)));

  app.put('/:id', {
    preHandler: requireRole('user'),
    schema: {
      tags: ['documents'],
      summary: 'Rename or retype a document (users: their own; admins: any)',
      params: DocIdParams,
      body: UpdateDocumentBody,
      response: { 200: DocumentSchema, ...problems(400, 401, 403, 404) },
    },
  }, async (request) =>
    toDocument(await updateDocument(app, { tenant: request.tenant, userId: request.user.id }, request.params.id, request.body)));

  app.delete('/:id', {
    preHandler: requireRole('user'),
    schema: {
      tags: ['documents'],
      summary: 'Delete a document; a file no document references any more is removed from storage',
      params: DocIdParams,
      response: { 204: Type.Null(), ...problems(401, 403, 404) },
    },
  }, async (request, reply) => {
    await deleteDocument(app, app.storage, { tenant: request.tenant, userId: request.user.id }, request.params.id);
    return reply.status(204).send(null);
  });

  app.get('/:id/download', {
    schema: {
      tags: ['documents'],
      summary: 'Download the bytes (ready documents only; Range supported)',
      params: DocIdParams,
      response: { ...problems(401, 404, 409, 416) },
    },
  }, async (request, reply) => {
    const doc = await loadDocument(request, request.params.id);
    assertReady(doc);
    return sendDocument(app.storage, doc, request, reply);
  });

  app.get('/:id/download-url', {
    schema: {
      tags: ['documents'],
      summary: 'A URL that downloads without credentials until it expires',
      description: 'S3 storage: a presigned S3 URL. Local storage: an HMAC-signed /api/downloads URL.',
      params: DocIdParams,
      querystring: DownloadUrlQuery,
      response: { 200: DownloadUrlSchema, ...problems(400, 401, 404, 409) },
    },
  }, async (request) => {
    const doc = await loadDocument(request, request.params.id);
    assertReady(doc);
    const expiresIn = request.query.expires_in ?? 3600;
    const expiresAt = Math.floor(Date.now() / 1000) + expiresIn;
    let url = await app.storage.presignGet(doc.storage_key, { expiresIn, filename: doc.filename, contentType: doc.mime_type });
    if (!url) {
      const token = signDownload(app.config.secretKey, { tenantId: request.tenant.id, documentId: doc.id, expiresAt });
      url = `${baseUrl(app, request)}/api/downloads/${request.tenant.id}/${doc.id}?token=${encodeURIComponent(token)}`;
    }
    return { url, expires_at: new Date(expiresAt * 1000).toISOString() };
  });
};

export const tenantFileRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.addHook('onRequest', app.authenticate);
  app.addHook('onRequest', app.tenantContext);
  const fileNotFound = () => errors.notFound('File not found', 'file_not_found');

  app.get('/', {
    schema: {
      tags: ['files'],
      summary: 'The tenant\'s stored (deduplicated) files with their reference counts',
      params: Type.Object({ tid: Type.String() }),
      querystring: PaginationQuery,
      response: { 200: FileListSchema, ...problems(400, 401, 404) },
    },
  }, async (request) => {
    const p = pageParams(request.query);
    const { rows, stats } = await request.withTenantDb((trx) => listFiles(trx, request.tenant.id, p));
    return { files: rows.map(toFile), ...pageMeta(stats.file_count, p.page, p.perPage), stats };
  });

  app.get('/:fid', {
    schema: { tags: ['files'], params: FileIdParams, response: { 200: FileDetailSchema, ...problems(401, 404) } },
  }, async (request) => {
    const result = await request.withTenantDb(async (trx) => {
      const file = await getFile(trx, request.tenant.id, request.params.fid);
      if (!file) return null;
      const documents = await trx
        .selectFrom('documents')
        .select(['id', 'filename', 'user_id'])
        .where('tenant_id', '=', request.tenant.id)
        .where('file_id', '=', file.id)
        .orderBy('created_at', 'desc')
        .limit(1000)
        .execute();
      return { ...toFile(file), documents };
    });
    if (!result) throw fileNotFound();
    return result;
  });

  app.delete('/:fid', {
    preHandler: requireRole('admin'),
    schema: {
      tags: ['files'],
      summary: 'Delete a file no document references (admin)',
      params: FileIdParams,
      response: { 204: Type.Null(), ...problems(401, 403, 404, 409) },
    },
  }, async (request, reply) => {
    await deleteFile(app, app.storage, { tenant: request.tenant, userId: request.user.id }, request.params.fid);
    return reply.status(204).send(null);
  });
};

/** GET /api/downloads/:tid/:id?token= — the signed link of local storage; no credentials. */
export const publicDownloadRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/:tid/:id', {
    schema: {
      tags: ['documents'],
      summary: 'Download through a signed link (from download-url)',
      security: [],
      params: DocIdParams,
      querystring: Type.Object({ token: Type.String({ maxLength: 200 }) }),
      response: { ...problems(400, 403, 404, 409, 416) },
    },
  }, async (request, reply) => {
    const { tid, id } = request.params;
    const status = verifyDownload(app.config.secretKey, { tenantId: tid, documentId: id, token: request.query.token });
    if (status === 'expired') throw errors.forbidden('This download link has expired', 'link_expired');
    if (status !== 'ok' || !UUID_RE.test(tid) || !UUID_RE.test(id)) throw errors.forbidden('This download link is not valid', 'invalid_link');
    const tenant = await app.db
      .selectFrom('tenants')
      .select(['id', 'isolation', 'db_server', 'db_name', 'is_active'])
      .where('id', '=', tid)
      .executeTakeFirst();
    if (!tenant || !tenant.is_active) throw docNotFound();
    const doc = await app.tenantDbs.withTenant(tenant, (trx) => getDocument(trx, tid, id));
    if (!doc) throw docNotFound();
    assertReady(doc);
    return sendDocument(app.storage, doc, request, reply);
  });
};

/**
 * The current-organization API of seed 001: the tenant is `X-Tenant-ID` (a
 * membership, else 404) or the caller's default tenant (409 `no_organization`
 * when they have none). Same rules and storage as the documents API.
 */
export const currentOrgFileRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.addHook('onRequest', app.authenticate);
  app.addHook('onRequest', async (request) => {
    const header = request.headers['x-tenant-id'];
    const given = (Array.isArray(header) ? header[0] : header)?.trim();
    const tid = given || (await currentOrganizationId(app.db, request.user.id));
    if (!tid) throw errors.conflict('You are not a member of any organization', 'no_organization');
    request.tenant = await app.resolveTenant(request.user.id, tid);
  });

  const toSummary = (d: DocumentWithFile) => ({
    id: d.id,
    filename: d.filename,
    size: Number(d.size),
    status: d.status,
    uploaded_at: iso(d.created_at),
    uploaded_by_email: d.uploaded_by_email,
  });

  app.post('/upload', {
    preHandler: requireRole('user'),
    schema: {
      tags: ['files'],
      summary: 'Upload a file to the current organization (seed 001)',
      description: `${uploadDescription} Answers the document id as \`file_id\`.`,
      consumes: ['multipart/form-data'],
      response: { 201: OrgUploadResult, ...problems(400, 401, 403, 404, 409, 413, 415) },
    },
  }, async (request, reply) => {
    const doc = await upload(app, request);
    return reply.status(201).send({ file_id: doc.id, filename: doc.filename, status: doc.status });
  });

  app.get('/', {
    schema: {
      tags: ['files'],
      summary: 'List the current organization\'s files (documents), newest first (seed 001)',
      querystring: ListQuery,
      response: { 200: OrgFileListSchema, ...problems(400, 401, 404, 409) },
    },
  }, async (request) => {
    const { rows, meta } = await listPage(request, request.query);
    return { files: rows.map(toSummary), ...meta };
  });

  app.get('/:id', {
    schema: {
      tags: ['files'],
      params: Type.Object({ id: Type.String() }),
      response: { 200: OrgFileDetail, ...problems(401, 404, 409) },
    },
  }, async (request) => {
    const d = await loadDocument(request, request.params.id);
    return {
      ...toSummary(d),
      mime_type: d.mime_type,
      error_message: d.error_message,
      processed_at: d.processed_at ? iso(d.processed_at) : null,
    };
  });

  app.get('/:id/download', {
    schema: {
      tags: ['files'],
      summary: 'Download the bytes when ready (seed 001)',
      params: Type.Object({ id: Type.String() }),
      response: { ...problems(401, 404, 409, 416) },
    },
  }, async (request, reply) => {
    const doc = await loadDocument(request, request.params.id);
    assertReady(doc);
    return sendDocument(app.storage, doc, request, reply);
  });
};

/** Everything above, with multipart parsing scoped to these routes. */
export const documentsPlugin: FastifyPluginAsyncTypebox = async (app) => {
  // Limits are set per request in receiveUpload (file size = MAX_FILE_SIZE_MB); no attachFieldsToBody.
  await app.register(multipart, { limits: { fileSize: app.config.maxFileSizeBytes + 1, files: 1 } });
  await app.register(tenantDocumentRoutes, { prefix: '/api/tenants/:tid/documents' });
  await app.register(tenantFileRoutes, { prefix: '/api/tenants/:tid/files' });
  await app.register(publicDownloadRoutes, { prefix: '/api/downloads' });
  await app.register(currentOrgFileRoutes, { prefix: '/api/files' });
};
