import { createHash } from 'node:crypto';
import { Transform, type Readable } from 'node:stream';
import { UUID_RE } from '../http/ids.js';

export interface StagedBlob {
  /** Byte count and hex digests of the streamed bytes. */
  size: number;
  sha256: string;
  md5: string;
  /** Move the staged bytes to `key`. If an object already exists at key (dedup), discard the staged bytes and return {stored:false}. */
  commit(key: string): Promise<{ stored: boolean }>;
  /** Remove the staged bytes (idempotent; a no-op after commit). */
  discard(): Promise<void>;
}

export interface BlobStore {
  readonly kind: 'local' | 's3';
  /**
   * Stream `source` to a temporary location while computing SHA-256 and MD5 in bounded memory.
   * If more than `maxBytes` arrive, stop, remove the partial temp data and reject with FileTooLargeError.
   * If the source errors / is aborted, remove the temp data and reject with that error.
   */
  stage(source: NodeJS.ReadableStream | Readable, opts: { maxBytes: number }): Promise<StagedBlob>;
  head(key: string): Promise<{ size: number } | null>;
  /** Readable of the bytes; range is inclusive [start, end] like HTTP Range. Rejects with BlobNotFoundError if missing. */
  get(key: string, range?: { start: number; end: number }): Promise<Readable>;
  /** Idempotent. */
  delete(key: string): Promise<void>;
  /** Every stored object whose key starts with `prefix` (temp data excluded); for garbage collection. */
  list(prefix: string): AsyncIterable<{ key: string; size: number }>;
  /**
   * Staged uploads last modified before `olderThan` (left by a crash or a killed upload; a live
   * upload touches its staging data as bytes arrive): removed unless `dryRun`. Returns what was found.
   */
  purgeStaging(olderThan: Date, opts?: { dryRun?: boolean }): Promise<{ removed: string[]; bytes: number }>;
  /** S3: a presigned GET URL (using publicUrl host if configured) with response-content-disposition/type set; local: null (the app signs its own URL). */
  presignGet(key: string, opts: { expiresIn: number; filename: string; contentType: string }): Promise<string | null>;
  /** Readiness check; rejects when storage is unusable. */
  ping(): Promise<void>;
  /** Bytes still free for new blobs (local disk: the filesystem's space available to this user). */
  freeBytes?(): Promise<number>;
  close?(): Promise<void>;
}

export class FileTooLargeError extends Error {
  readonly code = 'file_too_large';
  constructor(readonly limit: number) {
    super(`file exceeds the limit of ${limit} bytes`);
    this.name = 'FileTooLargeError';
  }
}

export class BlobNotFoundError extends Error {
  readonly code = 'blob_not_found';
  constructor(readonly key: string) {
    super(`blob not found: ${key}`);
    this.name = 'BlobNotFoundError';
  }
}

const SHA256_RE = /^[0-9a-f]{64}$/;

/** Storage key of a tenant's content-addressed file. Only validated ids reach the key. */
export function fileKey(tenantId: string, sha256: string): string {
  if (typeof tenantId !== 'string' || !UUID_RE.test(tenantId)) throw new TypeError('fileKey: tenantId must be a UUID');
  if (typeof sha256 !== 'string' || !SHA256_RE.test(sha256)) {
    throw new TypeError('fileKey: sha256 must be 64 lowercase hex characters');
  }
  const t = tenantId.toLowerCase();
  return `tenants/${t}/files/${sha256.slice(0, 2)}/${sha256.slice(2, 4)}/${sha256}`;
}

/**
 * Reject keys that are not plain relative slash-separated paths
 * (empty, absolute, `.`/`..`/empty segments, backslashes, control characters).
 */
export function assertKey(key: string): void {
  if (typeof key !== 'string' || key.length === 0 || key.length > 1024) throw new TypeError('invalid storage key');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f\\]/.test(key)) throw new TypeError('invalid storage key');
  for (const segment of key.split('/')) {
    if (segment === '' || segment === '.' || segment === '..') throw new TypeError('invalid storage key');
  }
}

/** Validate an inclusive byte range; returns it unchanged. */
export function assertRange(range: { start: number; end: number }): { start: number; end: number } {
  const { start, end } = range;
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
    throw new RangeError(`invalid byte range ${start}-${end}`);
  }
  return range;
}

export function assertMaxBytes(maxBytes: number): void {
  if (typeof maxBytes !== 'number' || Number.isNaN(maxBytes) || maxBytes < 0) {
    throw new TypeError('maxBytes must be a non-negative number');
  }
}

/**
 * Counts bytes and computes SHA-256 and MD5 of everything it is given, and
 * fails with FileTooLargeError as soon as more than `maxBytes` have arrived
 * (the over-limit chunk is not hashed). `update` is the direct form (a store that
 * reads its source itself); `transform` is the same as a pass-through stream
 * (the over-limit chunk is not passed on). `digest()` is valid once every byte went through.
 */
export function createHashMeter(maxBytes: number): {
  update(chunk: Buffer): void;
  transform: Transform;
  digest(): { size: number; sha256: string; md5: string };
} {
  assertMaxBytes(maxBytes);
  const sha256 = createHash('sha256');
  const md5 = createHash('md5');
  let size = 0;
  let result: { size: number; sha256: string; md5: string } | undefined;
  function update(chunk: Buffer): void {
    size += chunk.length;
    if (size > maxBytes) throw new FileTooLargeError(maxBytes);
    sha256.update(chunk);
    md5.update(chunk);
  }
  const transform = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      try {
        update(chunk);
      } catch (err) {
        callback(err as Error);
        return;
      }
      callback(null, chunk);
    },
  });
  return {
    update,
    transform,
    digest() {
      result ??= { size, sha256: sha256.digest('hex'), md5: md5.digest('hex') };
      return result;
    },
  };
}
