import type { BlobStore } from './blob-store.js';
import { createLocalStore } from './local.js';
import type { S3StoreOptions } from './s3.js';

export * from './blob-store.js';
export { createLocalStore } from './local.js';
// Types only: the S3 store (AWS SDK, ~20 MB of memory) is loaded on demand by createBlobStore,
// or imported from './s3.js' directly.
export type { S3BlobStore, S3StoreOptions } from './s3.js';
export { signDownload, verifyDownload, type DownloadTokenStatus } from './signed-url.js';
export { sanitizeFilename, contentDisposition } from './filename.js';

/** S3 storage when `s3` options are given (the AWS SDK is only loaded then), else files under `localRoot`. */
export async function createBlobStore(opts: { s3?: S3StoreOptions | null; localRoot: string }): Promise<BlobStore> {
  if (!opts.s3) return createLocalStore({ root: opts.localRoot });
  const { createS3Store } = await import('./s3.js');
  return createS3Store(opts.s3);
}
