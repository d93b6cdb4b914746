/**
 * Streaming a document's bytes: Content-Disposition attachment with the
 * sanitized name, the declared Content-Type, Content-Length, ETag (the SHA-256),
 * single byte ranges (206 / 416) and If-None-Match (304). Only `ready`
 * documents are served (409 `not_ready`).
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError, errors } from '../http/errors.js';
import { BlobNotFoundError, type BlobStore } from '../storage/blob-store.js';
import { contentDisposition } from '../storage/filename.js';
import type { DocumentWithFile } from './queries.js';

export type ByteRange = { start: number; end: number };

/**
 * Parse a Range header against a resource of `size` bytes (RFC 9110 §14):
 * `null` = serve the whole resource (no header, another unit, several ranges);
 * 'unsatisfiable' = 416; else the inclusive range, clamped to the size.
 */
export function parseRange(header: string | undefined, size: number): ByteRange | null | 'unsatisfiable' {
  if (header === undefined) return null;
  const m = /^\s*([A-Za-z]+)\s*=\s*(.*)$/.exec(header);
  if (!m) return 'unsatisfiable';
  if (m[1].toLowerCase() !== 'bytes') return null; // unknown units are ignored
  const spec = m[2].trim();
  if (spec.includes(',')) return null; // several ranges: answer with the whole file
  const r = /^(\d*)\s*-\s*(\d*)$/.exec(spec);
  if (!r || (r[1] === '' && r[2] === '')) return 'unsatisfiable';
  if (r[1] === '') {
    const suffix = Number(r[2]);
    if (!Number.isSafeInteger(suffix) || suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(r[1]);
  const end = r[2] === '' ? size - 1 : Math.min(Number(r[2]), size - 1);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start >= size || (r[2] !== '' && Number(r[2]) < start)) {
    return 'unsatisfiable';
  }
  return { start, end };
}

export function etagOf(sha256: string): string {
  return `"${sha256}"`;
}

function etagMatches(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  return header.split(',').some((t) => {
    const v = t.trim().replace(/^W\//, '');
    return v === '*' || v === etag;
  });
}

export function assertReady(doc: Pick<DocumentWithFile, 'status'>): void {
  if (doc.status !== 'ready') {
    throw errors.conflict(`The document is not ready for download (status: ${doc.status})`, 'not_ready', { document_status: doc.status });
  }
}

/** Send the document's bytes (the caller has checked access and readiness). */
export async function sendDocument(
  storage: BlobStore,
  doc: DocumentWithFile,
  request: FastifyRequest,
  reply: FastifyReply,
): Promise<FastifyReply> {
  const etag = etagOf(doc.sha256);
  reply.header('etag', etag);
  reply.header('accept-ranges', 'bytes');
  reply.header('cache-control', 'private, no-cache');
  if (etagMatches(request.headers['if-none-match'], etag)) return reply.status(304).send();

  const size = doc.size;
  const ifRange = request.headers['if-range'];
  const rangeHeader = ifRange === undefined || String(ifRange).trim() === etag ? request.headers.range : undefined;
  const range = parseRange(rangeHeader, size);
  if (range === 'unsatisfiable') {
    reply.header('content-range', `bytes */${size}`);
    throw new AppError(416, 'range_not_satisfiable', `The range "${rangeHeader}" cannot be served from ${size} bytes`, {
      'content-range': `bytes */${size}`,
    });
  }

  let stream;
  try {
    stream = await storage.get(doc.storage_key, range ?? undefined);
  } catch (err) {
    if (err instanceof BlobNotFoundError) {
      request.log.error({ documentId: doc.id, key: doc.storage_key }, 'stored bytes of a document are missing');
      throw errors.notFound('The stored bytes of this document are missing', 'file_missing');
    }
    throw err;
  }
  reply.header('content-type', doc.mime_type);
  reply.header('content-disposition', contentDisposition(doc.filename, 'attachment'));
  if (range) {
    reply.status(206);
    reply.header('content-range', `bytes ${range.start}-${range.end}/${size}`);
    reply.header('content-length', String(range.end - range.start + 1));
  } else {
    reply.header('content-length', String(size));
  }
  return reply.send(stream);
}
