/**
 * `app.storage`: the blob store of this deployment — S3-compatible when S3_BUCKET
 * is set (config.s3), else local disk under UPLOAD_FOLDER — with a readiness
 * check (reachable and writable; local disk: at least STORAGE_MIN_FREE_MB free).
 * Outside production a missing S3 bucket is created at start-up.
 *
 * Before the app is ready:
 *  - the storage root must be this deployment's (src/storage/owner.ts): a root
 *    without a marker is claimed, one of another deployment refuses the start;
 *  - staging leftovers of uploads cut off by a crash are removed. On the
 *    embedded database this process owns the store (the database's lock keeps
 *    every other process out, the marker every other deployment), and no upload
 *    has started yet, so every staged file is a leftover. On PostgreSQL other
 *    API processes (other hosts, WEB_CONCURRENCY) may be uploading into the same
 *    root right now, so only staged files untouched for STAGING_MAX_AGE_MS go,
 *    as `files:gc` does.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { describeDatabase } from '../db/index.js';
import { UUID_RE } from '../http/ids.js';
import type { BlobStore } from '../storage/blob-store.js';
import { createLocalStore } from '../storage/local.js';
import { checkStorageOwner, readDeploymentId, readMarker, storageRoot, StorageOwnerError } from '../storage/owner.js';
import { STAGING_MAX_AGE_MS } from './gc.js';

const MB = 1024 * 1024;

declare module 'fastify' {
  interface FastifyInstance {
    storage: BlobStore;
  }
}

/**
 * PostgreSQL on its default folder, about to claim it: if this database's files are in the
 * embedded mode's folder (DATA_DIR/uploads), where they went when both modes had that default,
 * refuse rather than start on an empty folder (every download would fail, and files:gc would
 * take every file row for one whose bytes are gone).
 */
async function refuseIfFilesElsewhere(app: FastifyInstance, deploymentId: string): Promise<void> {
  const folder = app.config.embeddedUploadFolder;
  if (!folder) return;
  const marker = await readMarker(createLocalStore({ root: folder })).catch(() => null);
  let ours = marker?.deployment_id === deploymentId;
  if (!marker) {
    const names = await fs.readdir(path.join(folder, 'tenants')).catch(() => [] as string[]);
    const ids = names.filter((n) => UUID_RE.test(n)).slice(0, 1000);
    ours = ids.length > 0 && (await app.db.selectFrom('tenants').select('id').where('id', 'in', ids).executeTakeFirst()) !== undefined;
  }
  if (ours) {
    throw new StorageOwnerError(
      `this database's files are in ${folder} (the embedded database's default folder), not in ${app.config.uploadFolder}: ` +
        `set UPLOAD_FOLDER=${folder} to keep using them there, or move them to ${app.config.uploadFolder}.`,
    );
  }
}

async function prepareStorage(app: FastifyInstance, storage: BlobStore): Promise<void> {
  const { config } = app;
  const deploymentId = await readDeploymentId(app.db);
  if (!deploymentId) {
    app.log.warn('the database is not migrated (no deployment identity): the storage root is not checked');
  } else {
    const root = storageRoot(storage, config.uploadFolder);
    const outcome = await checkStorageOwner(storage, { id: deploymentId, database: describeDatabase(config) }, {
      ...root,
      claim: true,
      beforeClaim: () => refuseIfFilesElsewhere(app, deploymentId),
    });
    if (outcome === 'claimed') app.log.info({ storage: root.where, deployment: deploymentId }, 'storage root claimed for this deployment');
  }

  const ownsStore = app.database.kind === 'pglite' && !config.pgliteDir.startsWith('memory://');
  const cutoff = new Date(ownsStore ? Date.now() : Date.now() - STAGING_MAX_AGE_MS);
  const purged = await storage.purgeStaging(cutoff);
  if (purged.removed.length) {
    app.log.info({ files: purged.removed.length, bytes: purged.bytes }, 'removed staging leftovers of interrupted uploads');
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
    app.addHook('onReady', async () => {
      try {
        await prepareStorage(app, storage);
      } catch (err) {
        if (err instanceof StorageOwnerError) throw err;
        // Storage unreachable: the process starts (/ready says storage is failing); nothing is purged.
        app.log.error({ err }, 'could not check the storage root at start-up; staging leftovers are left to files:gc');
      }
    });
    if (!opts.storage) app.addHook('onClose', async () => { await storage.close?.(); });
  },
  { name: 'storage', dependencies: ['core', 'health'] },
);
