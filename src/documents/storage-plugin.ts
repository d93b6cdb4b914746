/**
 * `app.storage`: the blob store of this deployment — S3-compatible when S3_BUCKET
 * is set (config.s3), else local disk under UPLOAD_FOLDER — with a readiness
 * check (reachable and writable; local disk: at least STORAGE_MIN_FREE_MB free).
 * Outside production a missing S3 bucket is created at start-up.
 */
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { BlobStore } from '../storage/blob-store.js';
import { createLocalStore } from '../storage/local.js';

const MB = 1024 * 1024;

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
    const minFree = config.storageMinFreeMb * MB;
    app.readiness.push({
      name: 'storage',
      check: async () => {
        await storage.ping();
        // A disk about to fill up: uploads would soon fail with 507, so say so before they do.
        if (minFree > 0 && storage.freeBytes) {
          const free = await storage.freeBytes();
          if (free < minFree) {
            throw new Error(`${(free / MB).toFixed(1)} MB free, below STORAGE_MIN_FREE_MB=${config.storageMinFreeMb}`);
          }
        }
      },
    });

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
