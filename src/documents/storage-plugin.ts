/**
 * `app.storage`: the blob store of this deployment — S3-compatible when S3_BUCKET
 * is set (config.s3), else local disk under UPLOAD_FOLDER — with a readiness
 * check. Outside production a missing S3 bucket is created at start-up.
 */
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { BlobStore } from '../storage/blob-store.js';
import { createLocalStore } from '../storage/local.js';

declare module 'fastify' {
  interface FastifyInstance {
    storage: BlobStore;
  }
}

export const storagePlugin = fp(
  async (app: FastifyInstance, opts: { storage?: BlobStore }) => {
    const { config } = app;
    // The S3 client (AWS SDK, ~20 MB of memory) is only loaded when S3 is configured.
    const storage =
      opts.storage ??
      (config.s3
        ? (await import('../storage/s3.js')).createS3Store(config.s3)
        : createLocalStore({ root: config.uploadFolder }));
    app.decorate('storage', storage);
    app.readiness.push({ name: 'storage', check: () => storage.ping() });

    if (storage.kind === 's3' && !config.isProduction) {
      app.addHook('onReady', async () => {
        await (storage as import('../storage/s3.js').S3BlobStore).ensureBucket().catch((err: unknown) => {
          app.log.warn({ err }, 'could not create the S3 bucket; /ready reports storage as failing');
        });
      });
    }
    if (!opts.storage) app.addHook('onClose', async () => { await storage.close?.(); });
  },
  { name: 'storage', dependencies: ['core', 'health'] },
);
