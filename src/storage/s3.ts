import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  CopyObjectCommand,
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  paginateListObjectsV2,
  S3Client,
  type BucketLocationConstraint,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import {
  assertKey,
  assertRange,
  BlobNotFoundError,
  createHashMeter,
  FileTooLargeError,
  type BlobStore,
  type StagedBlob,
} from './blob-store.js';
import { contentDisposition } from './filename.js';

export interface S3StoreOptions {
  /** Endpoint the server uses (MinIO, s3rver, ...); omit for AWS. */
  endpoint?: string;
  bucket: string;
  region: string;
  accessKeyId?: string;
  secretAccessKey?: string;
  /** Endpoint clients reach the store through; presigned URLs are signed for this host. */
  publicUrl?: string;
  forcePathStyle?: boolean;
}

export type S3BlobStore = BlobStore & {
  readonly kind: 's3';
  readonly bucket: string;
  readonly client: S3Client;
  /** Create the bucket if it does not exist (tests and development). */
  ensureBucket(): Promise<void>;
};

/** Staged uploads live here until commit; a bucket lifecycle rule expiring `tmp/` (and aborting
 * incomplete multipart uploads) cleans up after crashes between stage and commit. */
const TMP_PREFIX = 'tmp/';
/** Memory per staging upload is bounded by about QUEUE_SIZE * PART_SIZE (plus one part being assembled). */
const PART_SIZE = 8 * 1024 * 1024;
const QUEUE_SIZE = 2;
const MAX_PRESIGN_SECONDS = 7 * 24 * 3600;

function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
}

function isNotFound(err: unknown): boolean {
  const name = (err as { name?: string } | null)?.name;
  return statusOf(err) === 404 || name === 'NotFound' || name === 'NoSuchKey' || name === 'NoSuchBucket';
}

function clientConfig(opts: S3StoreOptions, endpoint: string | undefined): S3ClientConfig {
  return {
    region: opts.region,
    endpoint,
    forcePathStyle: opts.forcePathStyle,
    credentials:
      opts.accessKeyId && opts.secretAccessKey
        ? { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey }
        : undefined, // default provider chain (env, instance role, ...)
    // Only send/validate flexible checksums where S3 requires them: keeps S3-compatible stores
    // working and keeps presigned GET URLs free of signed checksum headers a browser would not send.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  };
}

export function createS3Store(opts: S3StoreOptions): S3BlobStore {
  const { bucket } = opts;
  if (!bucket || bucket.length < 3) throw new TypeError('S3 bucket name must have at least 3 characters');
  const client = new S3Client(clientConfig(opts, opts.endpoint));
  const publicClient = opts.publicUrl ? new S3Client(clientConfig(opts, opts.publicUrl)) : client;

  async function deleteQuietly(key: string): Promise<void> {
    await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key })).catch(() => undefined);
  }

  async function head(key: string): Promise<{ size: number } | null> {
    assertKey(key);
    try {
      const res = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
      return { size: res.ContentLength ?? 0 };
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  async function stage(source: NodeJS.ReadableStream | Readable, { maxBytes }: { maxBytes: number }): Promise<StagedBlob> {
    const meter = createHashMeter(maxBytes);
    const tmpKey = `${TMP_PREFIX}${randomUUID()}`;
    const upload = new Upload({
      client,
      params: { Bucket: bucket, Key: tmpKey, Body: meter.transform },
      partSize: PART_SIZE,
      queueSize: QUEUE_SIZE,
      leavePartsOnError: false, // failed multipart uploads are aborted
    });
    // Wait for both sides to settle, so no request is still writing the temp object when we clean up.
    const [piped, uploaded] = await Promise.allSettled([
      pipeline(source, meter.transform),
      upload.done().catch((err: unknown) => {
        meter.transform.destroy(); // stop reading the source if the upload itself failed
        throw err;
      }),
    ]);
    if (piped.status === 'rejected' || uploaded.status === 'rejected') {
      await deleteQuietly(tmpKey);
      throw pickError(piped, uploaded);
    }

    const { size, sha256, md5 } = meter.digest();
    let state: 'staged' | 'committed' | 'discarded' = 'staged';
    return {
      size,
      sha256,
      md5,
      async commit(key) {
        if (state !== 'staged') throw new Error(`staged blob already ${state}`);
        assertKey(key);
        let stored = false;
        // Content-addressed keys: if two identical commits race, both copy the same bytes.
        if (!(await head(key))) {
          // CopyObject handles objects up to 5 GB; larger staged files would need a
          // multipart copy (UploadPartCopy), which this store does not implement.
          await client.send(
            new CopyObjectCommand({ Bucket: bucket, Key: key, CopySource: `${encodeURIComponent(bucket)}/${tmpKey}` }),
          );
          stored = true;
        }
        state = 'committed';
        await deleteQuietly(tmpKey);
        return { stored };
      },
      async discard() {
        if (state !== 'staged') return;
        state = 'discarded';
        await deleteQuietly(tmpKey);
      },
    };
  }

  async function* list(prefix: string): AsyncGenerator<{ key: string; size: number }> {
    const skipTmp = !prefix.startsWith(TMP_PREFIX);
    for await (const page of paginateListObjectsV2({ client }, { Bucket: bucket, Prefix: prefix })) {
      for (const obj of page.Contents ?? []) {
        if (!obj.Key || (skipTmp && obj.Key.startsWith(TMP_PREFIX))) continue;
        yield { key: obj.Key, size: obj.Size ?? 0 };
      }
    }
  }

  async function purgeStaging(olderThan: Date, { dryRun = false }: { dryRun?: boolean } = {}) {
    const removed: string[] = [];
    let bytes = 0;
    for await (const page of paginateListObjectsV2({ client }, { Bucket: bucket, Prefix: TMP_PREFIX })) {
      for (const obj of page.Contents ?? []) {
        if (!obj.Key || !obj.LastModified || obj.LastModified >= olderThan) continue;
        if (!dryRun) await deleteQuietly(obj.Key);
        removed.push(obj.Key);
        bytes += obj.Size ?? 0;
      }
    }
    return { removed, bytes };
  }

  return {
    kind: 's3',
    bucket,
    client,
    stage,
    head,
    list,
    purgeStaging,

    async get(key, range) {
      assertKey(key);
      const Range = range ? `bytes=${assertRange(range).start}-${range.end}` : undefined;
      try {
        const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key, Range }));
        return res.Body as Readable;
      } catch (err) {
        if (isNotFound(err)) throw new BlobNotFoundError(key);
        throw err;
      }
    },

    async delete(key) {
      assertKey(key);
      await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
    },

    async presignGet(key, { expiresIn, filename, contentType }) {
      assertKey(key);
      if (!Number.isInteger(expiresIn) || expiresIn < 1 || expiresIn > MAX_PRESIGN_SECONDS) {
        throw new RangeError(`expiresIn must be an integer between 1 and ${MAX_PRESIGN_SECONDS}`);
      }
      const command = new GetObjectCommand({
        Bucket: bucket,
        Key: key,
        ResponseContentDisposition: contentDisposition(filename),
        ResponseContentType: contentType,
      });
      return getSignedUrl(publicClient, command, { expiresIn });
    },

    async ping() {
      await client.send(new HeadBucketCommand({ Bucket: bucket }));
    },

    async ensureBucket() {
      try {
        await client.send(new HeadBucketCommand({ Bucket: bucket }));
        return;
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
      try {
        await client.send(
          new CreateBucketCommand({
            Bucket: bucket,
            CreateBucketConfiguration:
              opts.region === 'us-east-1'
                ? undefined
                : { LocationConstraint: opts.region as BucketLocationConstraint },
          }),
        );
      } catch (err) {
        const name = (err as { name?: string }).name;
        if (name !== 'BucketAlreadyOwnedByYou' && name !== 'BucketAlreadyExists') throw err;
      }
    },

    async close() {
      client.destroy();
      if (publicClient !== client) publicClient.destroy();
    },
  };
}

/** The error that explains a failed stage: the size limit or the source's own error first. */
function pickError(piped: PromiseSettledResult<unknown>, uploaded: PromiseSettledResult<unknown>): unknown {
  const pipeErr = piped.status === 'rejected' ? piped.reason : undefined;
  const uploadErr = uploaded.status === 'rejected' ? uploaded.reason : undefined;
  if (pipeErr instanceof FileTooLargeError || uploadErr instanceof FileTooLargeError) {
    return pipeErr instanceof FileTooLargeError ? pipeErr : uploadErr;
  }
  // A premature close of the pipeline is only the echo of the upload failing.
  if (pipeErr && (pipeErr as { code?: string }).code !== 'ERR_STREAM_PREMATURE_CLOSE') return pipeErr;
  return uploadErr ?? pipeErr;
}
