/**
 * Streaming upload: the multipart `file` part goes straight to the blob store's
 * staging area while SHA-256 and MD5 are computed (memory bounded whatever the
 * size), then — once the whole request has been read — the upload is placed:
 * deduplicated against the tenant's files by SHA-256, quota reserved for new
 * bytes only, bytes committed under their content-addressed key, and the
 * document inserted with its `validate_document` job and `document.uploaded`
 * event in one tenant transaction. Any failure leaves no blob and no row.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Multipart, MultipartFile } from '@fastify/multipart';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { AppError, errors, isStorageFull } from '../http/errors.js';
import { FileTooLargeError, fileKey, type BlobStore, type StagedBlob } from '../storage/blob-store.js';
import { sanitizeFilename } from '../storage/filename.js';
import { isUniqueViolation } from '../tenants/queries.js';
import type { TenantContext } from '../tenants/context.js';
import { eventRow, jobRow, outboxCommitted, type OutboxRow } from '../events/outbox.js';
import { DOCUMENT_COLUMNS, lockContentFile, type DocumentWithFile } from './queries.js';
import { releaseQuota, reserveQuota } from './quota.js';

/** Room for the multipart envelope (boundaries, part headers, small fields) on top of the file itself. */
export const MULTIPART_OVERHEAD = 1024 * 1024;
const MIME_RE = /^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}\/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$/;

export interface ReceivedUpload {
  staged: StagedBlob;
  filename: string;
  mimeType: string;
}

/** Wraps a blob-store failure so it is not mistaken for a malformed body. */
class StorageFailure extends Error {
  constructor(override readonly cause: unknown) {
    super('storage failure');
  }
}

/** The client stopped sending the body. */
class BodyIdleTimeout extends Error {
  constructor(readonly ms: number) {
    super(`no bytes of the request body arrived for ${ms} ms`);
  }
}

/**
 * Fail the multipart parse with BodyIdleTimeout once the body has sent nothing
 * for `ms` (the parser then destroys the file part, so its staging file is
 * removed). Time the server itself holds the body back (backpressure from a
 * slow disk, bytes buffered and unread) does not count. Returns the stop function.
 */
function watchBodyIdle(req: IncomingMessage, ms: number): () => void {
  const stop = () => {
    clearTimeout(timer);
    req.off('data', onData);
  };
  const timer = setTimeout(function check() {
    if (req.complete || req.destroyed) return stop();
    if (req.readableFlowing === false || req.readableLength > 0) {
      timer.refresh();
      return;
    }
    stop();
    // @fastify/multipart listens for the request's errors: it ends the parts with this one.
    if (req.listenerCount('error') > 0) req.emit('error', new BodyIdleTimeout(ms));
    else req.destroy();
  }, ms);
  const onData = () => timer.refresh();
  req.on('data', onData);
  return stop;
}

const tooLarge = (limit: number) =>
  errors.payloadTooLarge(`The file is larger than the allowed maximum of ${limit} bytes`, 'file_too_large', { limit });

/** The declared type, lower-cased without parameters; application/octet-stream when missing or malformed. */
export function normalizeMimeType(declared: string | undefined): string {
  const t = (declared ?? '').split(';')[0].trim().toLowerCase();
  return MIME_RE.test(t) ? t : 'application/octet-stream';
}

async function drain(stream: NodeJS.ReadableStream): Promise<void> {
  await pipeline(stream, new Writable({ write: (_c, _e, cb) => cb() })).catch(() => undefined);
}

/** Map an error of the multipart parser (not of the storage) to a 4xx. */
function parserError(err: unknown, maxBytes: number): AppError {
  if (err instanceof AppError) return err;
  if (err instanceof BodyIdleTimeout) {
    return new AppError(408, 'request_timeout', `The upload was cut: ${err.message}`, { connection: 'close' });
  }
  const code = (err as { code?: string }).code;
  switch (code) {
    case 'FST_FILES_LIMIT':
      return errors.badRequest('Send one file per request (multipart field "file")', 'too_many_files');
    case 'FST_REQ_FILE_TOO_LARGE':
      return tooLarge(maxBytes);
    case 'FST_PARTS_LIMIT':
    case 'FST_FIELDS_LIMIT':
      return errors.badRequest('The multipart body has too many parts', 'too_many_parts');
    case 'FST_PROTO_VIOLATION':
      return errors.badRequest('Malformed multipart field name', 'invalid_multipart');
    case 'FST_INVALID_MULTIPART_CONTENT_TYPE':
      return errors.unsupportedMediaType('The request must be multipart/form-data with a "file" part', 'unsupported_media_type');
    case 'FST_MP_PREMATURE_CLOSE':
      return errors.badRequest('The upload ended before the multipart body was complete', 'incomplete_upload');
  }
  const message = (err as Error)?.message ?? '';
  if (/unexpected end|terminated early/i.test(message)) {
    return errors.badRequest('The upload ended before the multipart body was complete', 'incomplete_upload');
  }
  return errors.badRequest(`The multipart body could not be read: ${message || 'malformed'}`, 'invalid_multipart');
}

/**
 * Read the multipart body: exactly one file part named `file` (a second file is
 * 400 `too_many_files`), an optional `filename` field (before or after the file).
 * The file's bytes are staged in the blob store; the caller commits or discards.
 */
export async function receiveUpload(
  request: FastifyRequest,
  storage: BlobStore,
  limits: { maxBytes: number; bodyIdleTimeoutMs: number },
): Promise<ReceivedUpload> {
  const { maxBytes } = limits;
  if (!request.isMultipart()) {
    throw errors.unsupportedMediaType('The request must be multipart/form-data with a "file" part', 'unsupported_media_type');
  }
  // Refused before reading; the rest of the body is discarded after the answer (src/http/unread-body.ts).
  const declaredLength = Number(request.headers['content-length']);
  if (Number.isFinite(declaredLength) && declaredLength > maxBytes + MULTIPART_OVERHEAD) throw tooLarge(maxBytes);

  let staged: StagedBlob | null = null;
  let part: MultipartFile | null = null;
  let filenameField: string | undefined;
  let otherFile = false;
  let stopWatching = () => {};
  try {
    const parts = request.parts({
      limits: { fileSize: maxBytes + 1, files: 1, fields: 10, fieldSize: 64 * 1024, parts: 20, headerPairs: 100 },
    });
    stopWatching = watchBodyIdle(request.raw, limits.bodyIdleTimeoutMs);
    for await (const p of parts as AsyncIterable<Multipart>) {
      if (p.type === 'field') {
        if (p.fieldname === 'filename' && typeof p.value === 'string') filenameField = p.value;
        continue;
      }
      if (p.fieldname !== 'file') {
        otherFile = true;
        await drain(p.file);
        continue;
      }
      part = p;
      let sourceFailed = false;
      p.file.once('error', () => { sourceFailed = true; });
      // A body the parser already found broken (truncated, aborted): refuse before staging anything.
      if (p.file.errored || p.file.destroyed) throw parserError(p.file.errored ?? new Error('upload aborted'), maxBytes);
      try {
        // The store reads the part itself and destroys it if the staging fails.
        staged = await storage.stage(p.file, { maxBytes });
      } catch (err) {
        if (err instanceof FileTooLargeError) throw tooLarge(maxBytes);
        // A full disk is the storage's, even when the client's body has ended meanwhile.
        if (isStorageFull(err)) throw new StorageFailure(err);
        // The client's stream failed (aborted, truncated, stalled): 4xx. Otherwise the storage failed: 5xx.
        const clientFailed = sourceFailed || p.file.errored || (request.raw.destroyed && !request.raw.complete);
        if (clientFailed) throw parserError(err, maxBytes);
        throw new StorageFailure(err);
      }
      if (p.file.truncated) throw tooLarge(maxBytes);
    }
  } catch (err) {
    await (staged as StagedBlob | null)?.discard();
    // The error handler answers storage failures (507 for a full disk, src/http/errors.ts).
    if (err instanceof StorageFailure) throw err.cause;
    // Everything else comes from the parser (malformed or truncated body, a second file, limits).
    throw parserError(err, maxBytes);
  } finally {
    stopWatching();
  }

  if (!staged || !part) {
    throw errors.badRequest(
      otherFile ? 'The file must be sent in the multipart field "file"' : 'No file was sent (multipart field "file")',
      'no_file',
    );
  }
  if (staged.size === 0) {
    await staged.discard();
    if (!part.filename) throw errors.badRequest('No file was selected', 'no_file');
    throw errors.badRequest('The file is empty', 'empty_file');
  }
  return {
    staged,
    filename: sanitizeFilename(filenameField?.trim() ? filenameField : part.filename),
    mimeType: normalizeMimeType(part.mimetype),
  };
}

export interface PlaceDeps {
  app: FastifyInstance;
  storage: BlobStore;
}

export interface PlaceResult {
  document: DocumentWithFile;
  deduplicated: boolean;
}

/**
 * Turn a staged upload into a document. Reserve the size in the tenant's quota
 * (one conditional UPDATE), then in one tenant transaction under the content
 * lock: if the tenant already has this SHA-256, the document points at that file
 * (no new bytes; the reservation is released); otherwise commit the bytes, insert
 * the file row and the document. No reservation and new bytes: 413
 * `quota_exceeded`. The staged bytes are always committed or discarded; a
 * reservation that did not become a file is released.
 *
 * The transaction is two statements besides BEGIN/set_config/COMMIT: the content
 * lock with the file lookup (`lockContentFile`), then one INSERT that writes the
 * file row (new bytes), the document, its `validate_document` job and its
 * `document.uploaded` event (ids made here, so the outbox payloads need no
 * second statement), plus the caller's rows (the audit entry), and returns the
 * document. Relays are woken once it committed.
 */
export async function placeUpload(
  deps: PlaceDeps,
  p: {
    tenant: TenantContext;
    userId: string;
    email: string;
    upload: ReceivedUpload;
    /** More outbox rows to write with the document (the request's audit entry). */
    outbox?: OutboxRow[];
  },
): Promise<PlaceResult> {
  const { app, storage } = deps;
  const { tenant, upload } = p;
  const { staged } = upload;
  const key = fileKey(tenant.id, staged.sha256);

  const attempt = (reserved: boolean) =>
    app.tenantDbs.withTenant(tenant, async (trx) => {
      let file = await lockContentFile(trx, tenant.id, staged.sha256);
      let created = false;
      if (file && !(await storage.head(file.storage_key))) {
        // A row whose bytes are gone (DELETE_FAILED_UPLOADS removed a failed upload's bytes, or a
        // crash): these are the same bytes, so put them back. The row is already counted in the quota.
        await staged.commit(file.storage_key);
      }
      if (!file) {
        if (!reserved) return null;
        // Under the lock with no row: whatever is at `key` is ours to write (or an orphan).
        await staged.commit(key);
        created = true;
        file = { id: randomUUID(), size: staged.size, storage_key: key };
      }
      const documentId = randomUUID();
      const outbox = [
        jobRow({ name: 'validate_document', tenantId: tenant.id, payload: { document_id: documentId } }),
        eventRow('document.uploaded', {
          tenantId: tenant.id,
          userId: p.userId,
          data: {
            document_id: documentId,
            file_id: file.id,
            filename: upload.filename,
            mime_type: upload.mimeType,
            size: staged.size,
            sha256: staged.sha256,
            deduplicated: !created,
          },
        }).row,
        ...(p.outbox ?? []),
      ];
      const newFile = { id: file.id, tenant_id: tenant.id, sha256: staged.sha256, md5: staged.md5, size: staged.size, storage_key: key };
      try {
        // Data-modifying CTEs always run; the document's foreign key is checked at the end of the statement.
        const withOutbox = trx.with('o', (db) => db.insertInto('outbox').values(outbox));
        const withFile = created ? (withOutbox.with('f', (db) => db.insertInto('files').values(newFile)) as unknown as typeof withOutbox) : withOutbox;
        const doc = await withFile
          .insertInto('documents')
          .values({
            id: documentId,
            tenant_id: tenant.id,
            file_id: file.id,
            filename: upload.filename,
            mime_type: upload.mimeType,
            size: staged.size,
            user_id: p.userId,
            uploaded_by_email: p.email,
          })
          .returning(DOCUMENT_COLUMNS)
          .executeTakeFirstOrThrow();
        return { document: { ...doc, sha256: staged.sha256, storage_key: file.storage_key }, created };
      } catch (err) {
        // Without the lock (another writer of the same table outside this code) a racing
        // identical upload can still win the unique key: this transaction is aborted, retry
        // reuses its row (whose bytes these are: they stay).
        if (created && isUniqueViolation(err)) throw new RaceLost();
        // The file row rolls back with this transaction; its bytes must go too (still under the lock).
        if (created) await storage.delete(key).catch(() => undefined);
        throw err;
      }
    });

  let reserved = false;
  try {
    // Reserve first (one UPDATE outside the tenant transaction: on PGlite there is one connection,
    // and the tenant role cannot touch `tenants`); a duplicate gives it back below.
    reserved = await reserveQuota(app.db, tenant.id, staged.size);
    // Without a reservation only a duplicate can succeed: attempt() returns null when the bytes are new.
    const result = await retryRace(() => attempt(reserved));
    if (result === null) {
      throw errors.payloadTooLarge('This upload would exceed the organization\'s storage quota', 'quota_exceeded', {
        quota_bytes: tenant.storage_quota_mb * 1024 * 1024,
      });
    }
    outboxCommitted(['job', 'event']);
    if (reserved && !result.created) {
      reserved = false;
      await releaseQuota(app.db, tenant.id, staged.size);
    }
    return { document: result.document, deduplicated: !result.created };
  } catch (err) {
    if (reserved) {
      await releaseQuota(app.db, tenant.id, staged.size).catch((e) => app.log.error({ err: e }, 'quota release failed'));
    }
    throw err;
  } finally {
    await staged.discard();
  }
}

class RaceLost extends Error {}

async function retryRace<T>(fn: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof RaceLost) || i >= 2) throw err;
    }
  }
}
