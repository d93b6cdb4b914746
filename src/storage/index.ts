import type { BlobStore } from './blob-store.js';
import { createLocalStore } from './local.js';
import { createS3Store, type S3StoreOptions } from './s3.js';

export * from './blob-store.js';
export { createLocalStore } from './local.js';
export { createS3Store, type S3BlobStore, type S3StoreOptions } from './s3.js';
export { signDownload, verifyDownload, type DownloadTokenStatus } from './signed-url.js';
export { sanitizeFilename, contentDisposition } from './filename.js';

/** S3 storage when `s3` options are given, else files under `localRoot`. */
export function createBlobStore(opts: { s3?: S3StoreOptions | null; localRoot: string }): BlobStore {
  return opts.s3 ? createS3Store(opts.s3) : createLocalStore({ root: opts.localRoot });
}
