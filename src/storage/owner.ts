/**
 * Which deployment a storage root (a local folder or an S3 bucket) belongs to.
 *
 * Each database has a random identity (control/0005 `deployment`). The first
 * server (or worker) of a deployment to use a storage root writes the marker
 * object `.tenantbase-deployment` there, naming that identity and the database;
 * from then on a server of another deployment refuses to start on that root,
 * and `files:gc` refuses to run on a root that is not its deployment's (or that
 * no server of its deployment has used: a wrong UPLOAD_FOLDER would make every
 * file row look like one whose bytes are missing). The embedded database and a
 * PostgreSQL database on one machine, two databases given one UPLOAD_FOLDER, or
 * a database recreated next to its old files are different deployments; a
 * database restored from a backup is the same one.
 *
 * The marker is written with the store's own create-unless-it-exists (stage,
 * then commit), so two processes that claim a new root at once end up with one
 * marker, and the loser reads the winner's.
 */
import { Readable } from 'node:stream';
import { sql, type Kysely } from 'kysely';
import type { ControlSchema } from '../db/schema.js';
import { BlobNotFoundError, type BlobStore } from './blob-store.js';

export const MARKER_KEY = '.tenantbase-deployment';
const MARKER_MAX_BYTES = 64 * 1024;

export interface Deployment {
  id: string;
  /** The database, for people reading the marker or an error ("PostgreSQL host:5432/db", "embedded PGlite at ..."). */
  database: string;
}

export interface DeploymentMarker {
  deployment_id: string;
  database: string;
  created_at: string;
}

export class StorageOwnerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StorageOwnerError';
  }
}

/** Where a store keeps its bytes and the setting that chooses it, for messages. */
export function storageRoot(storage: BlobStore, uploadFolder: string): { where: string; setting: string } {
  const bucket = (storage as BlobStore & { bucket?: string }).bucket;
  return storage.kind === 's3' ? { where: `s3://${bucket}`, setting: 'S3_BUCKET' } : { where: uploadFolder, setting: 'UPLOAD_FOLDER' };
}

/** This database's deployment id; null when control/0005 is not applied yet. */
export async function readDeploymentId(db: Kysely<ControlSchema>): Promise<string | null> {
  const exists = await sql<{ t: string | null }>`SELECT to_regclass('deployment')::text AS t`.execute(db);
  if (!exists.rows[0]?.t) return null;
  const row = await db.selectFrom('deployment').select('id').executeTakeFirst();
  return row?.id ?? null;
}

export async function readMarker(storage: BlobStore): Promise<DeploymentMarker | null> {
  let stream: Readable;
  try {
    stream = await storage.get(MARKER_KEY);
  } catch (err) {
    if (err instanceof BlobNotFoundError) return null;
    throw err;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    size += (chunk as Buffer).length;
    if (size > MARKER_MAX_BYTES) {
      stream.destroy();
      throw new StorageOwnerError(`the storage marker ${MARKER_KEY} is not one of ours (over ${MARKER_MAX_BYTES} bytes)`);
    }
    chunks.push(chunk as Buffer);
  }
  try {
    const marker = JSON.parse(Buffer.concat(chunks).toString('utf8')) as DeploymentMarker;
    if (typeof marker.deployment_id === 'string') return marker;
  } catch {
    // reported below
  }
  throw new StorageOwnerError(`the storage marker ${MARKER_KEY} cannot be read (not the JSON this deployment writes)`);
}

/** Writes the marker unless there is one; true when this call wrote it. */
async function writeMarker(storage: BlobStore, deployment: Deployment): Promise<boolean> {
  const marker: DeploymentMarker = { deployment_id: deployment.id, database: deployment.database, created_at: new Date().toISOString() };
  const staged = await storage.stage(Readable.from([Buffer.from(`${JSON.stringify(marker, null, 2)}\n`)]), { maxBytes: MARKER_MAX_BYTES });
  try {
    return (await staged.commit(MARKER_KEY)).stored;
  } finally {
    await staged.discard();
  }
}

export interface OwnerCheck {
  /** The storage root, for messages: a folder, or s3://bucket. */
  where: string;
  /** The setting that chooses it (UPLOAD_FOLDER, S3_BUCKET). */
  setting: string;
  /** Write the marker when there is none (servers and workers; never files:gc). */
  claim: boolean;
  /** Before claiming a root that has no marker (see storagePlugin): throws to refuse. */
  beforeClaim?: () => Promise<void>;
}

/**
 * Make sure `storage` belongs to `deployment`: returns 'ours' or 'claimed' (the marker was
 * written now), or throws StorageOwnerError saying what to do.
 */
export async function checkStorageOwner(storage: BlobStore, deployment: Deployment, check: OwnerCheck): Promise<'ours' | 'claimed'> {
  let marker = await readMarker(storage);
  if (!marker) {
    if (!check.claim) {
      throw new StorageOwnerError(
        `the storage root ${check.where} has no ${MARKER_KEY} marker: no server of this deployment (${deployment.database}) has used it. ` +
          `Check ${check.setting}; start the server once on this storage first.`,
      );
    }
    await check.beforeClaim?.();
    if (await writeMarker(storage, deployment)) return 'claimed';
    marker = await readMarker(storage); // another process claimed it meanwhile
    if (!marker) throw new StorageOwnerError(`the storage marker ${MARKER_KEY} in ${check.where} could not be written`);
  }
  if (marker.deployment_id === deployment.id) return 'ours';
  throw new StorageOwnerError(
    `the storage root ${check.where} belongs to another deployment (${marker.database}, deployment ${marker.deployment_id}); ` +
      `this database (${deployment.database}) is deployment ${deployment.id}. Set ${check.setting} to storage of this deployment's own. ` +
      `If this database was recreated and the files there are no longer needed, remove them (or the ${MARKER_KEY} marker).`,
  );
}
