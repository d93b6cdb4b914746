/**
 * A storage root belongs to one deployment (src/storage/owner.ts): the first
 * start claims it, another deployment's server refuses to start on it and
 * files:gc refuses to run on it; PostgreSQL's default folder is not the
 * embedded one's, and a PostgreSQL database whose files are in the embedded
 * folder is told so instead of starting on an empty one; staging leftovers
 * are removed at start-up.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import S3rver from 's3rver';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/config.js';
import { runFilesGc } from '../../src/documents/gc.js';
import { createLocalStore } from '../../src/storage/local.js';
import { MARKER_KEY, readDeploymentId, StorageOwnerError } from '../../src/storage/owner.js';
import type { S3StoreOptions } from '../../src/storage/s3.js';
import { buildTestApp, dbModes, signUp, type DbMode, type TestApp } from '../helpers/app.js';
import { createTestDatabase, HAS_PG } from '../helpers/env.js';

const SCRATCH = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();

function marker(root: string): { deployment_id: string; database: string } {
  return JSON.parse(fs.readFileSync(path.join(root, MARKER_KEY), 'utf8'));
}

/** An app of another database (a fresh one) on the given storage; not ready yet. */
async function otherDeployment(mode: DbMode, storage: Partial<Config>): Promise<{ start(): Promise<void>; close(): Promise<void> }> {
  const db = mode === 'postgres' ? await createTestDatabase() : null;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-other-'));
  const config: Config = {
    ...loadConfig({ NODE_ENV: 'test', DATA_DIR: dataDir }),
    databaseUrl: db?.url, tenantDbServers: db ? [db.url] : [], pgliteDir: 'memory://', ...storage,
  };
  const app = await buildApp(config, { logger: false });
  return {
    async start() {
      await app.ready();
    },
    async close() {
      await app.close();
      await db?.drop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

describe.each(dbModes())('storage root ownership on %s', (mode) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp({ mode });
  });
  afterAll(async () => t?.close());

  it('the first start claims the root for this database\'s deployment', async () => {
    const id = await readDeploymentId(t.app.db);
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(marker(t.config.uploadFolder)).toMatchObject({ deployment_id: id });
  });

  it('a server of another database refuses to start on it, and leaves it alone', async () => {
    const before = fs.readFileSync(path.join(t.config.uploadFolder, MARKER_KEY), 'utf8');
    const other = await otherDeployment(mode, { uploadFolder: t.config.uploadFolder });
    try {
      const err = await other.start().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StorageOwnerError);
      expect((err as Error).message).toMatch(
        new RegExp(`the storage root ${t.config.uploadFolder} belongs to another deployment .*Set UPLOAD_FOLDER to storage of this deployment's own`),
      );
    } finally {
      await other.close();
    }
    expect(fs.readFileSync(path.join(t.config.uploadFolder, MARKER_KEY), 'utf8')).toBe(before);
  });

  it('files:gc refuses a root of another deployment, or one no server of this deployment used, and touches nothing there', async () => {
    const foreign = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-foreign-'));
    try {
      const store = createLocalStore({ root: foreign, durable: false });
      const stray = path.join(foreign, 'tenants', randomUUID(), 'files', 'aa', 'bb', 'a'.repeat(64));
      fs.mkdirSync(path.dirname(stray), { recursive: true });
      fs.writeFileSync(stray, 'not yours');
      const gc = () => runFilesGc({ db: t.app.db, tenantDbs: t.app.tenantDbs, storage: store });
      await expect(gc()).rejects.toThrow(new RegExp(`has no ${MARKER_KEY.replace('.', '\\.')} marker: no server of this deployment`));
      fs.writeFileSync(path.join(foreign, MARKER_KEY), JSON.stringify({ deployment_id: randomUUID(), database: 'elsewhere', created_at: '' }));
      await expect(gc()).rejects.toThrow(/belongs to another deployment \(elsewhere/);
      expect(fs.readFileSync(stray, 'utf8')).toBe('not yours');
    } finally {
      fs.rmSync(foreign, { recursive: true, force: true });
    }
  });
});

describe('storage root ownership on S3 (s3rver)', () => {
  let server: S3rver;
  let dir: string;
  let s3: S3StoreOptions;
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-owner-s3-'));
    server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: dir });
    const { port } = await server.run();
    s3 = { endpoint: `http://127.0.0.1:${port}`, bucket: 'owner-test', region: 'us-east-1', accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', forcePathStyle: true };
  });
  afterAll(async () => {
    await server?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the bucket is claimed by the first deployment and refused to a second', async () => {
    const first = await buildTestApp({ mode: 'pglite', config: { s3 } });
    try {
      const id = await readDeploymentId(first.app.db);
      const got = await first.app.storage.get(MARKER_KEY);
      const chunks: Buffer[] = [];
      for await (const c of got) chunks.push(c as Buffer);
      expect(JSON.parse(Buffer.concat(chunks).toString())).toMatchObject({ deployment_id: id });
      const other = await otherDeployment('pglite', { s3 });
      try {
        await expect(other.start()).rejects.toThrow(/the storage root s3:\/\/owner-test belongs to another deployment .*Set S3_BUCKET/);
      } finally {
        await other.close();
      }
    } finally {
      await first.close();
    }
  });
});

describe('default upload folders', () => {
  it('differ between the embedded database and PostgreSQL (per database name); UPLOAD_FOLDER wins', () => {
    const embedded = loadConfig({ DATA_DIR: '/srv/tb' });
    const pg = loadConfig({ DATA_DIR: '/srv/tb', DATABASE_URL: 'postgres://u:secret@db:5432/saas platform' });
    expect(embedded.uploadFolder).toBe('/srv/tb/uploads');
    expect(embedded.embeddedUploadFolder).toBeUndefined();
    expect(pg.uploadFolder).toBe('/srv/tb/uploads-saas_platform');
    expect(pg.embeddedUploadFolder).toBe('/srv/tb/uploads');
    const chosen = loadConfig({ DATA_DIR: '/srv/tb', DATABASE_URL: 'postgres://db/x', UPLOAD_FOLDER: '/srv/files' });
    expect(chosen.uploadFolder).toBe('/srv/files');
    expect(chosen.embeddedUploadFolder).toBeUndefined();
  });
});

describe.skipIf(!HAS_PG)('PostgreSQL on its default folder with its files in the embedded folder', () => {
  it('refuses to start, naming the folder to set, whether that folder has this deployment\'s marker or none; another database\'s files there do not matter', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-legacy-'));
    const db = await createTestDatabase();
    const shared = path.join(dataDir, 'uploads');
    try {
      const config = { ...loadConfig({ NODE_ENV: 'test', DATA_DIR: dataDir, DATABASE_URL: db.url }), tenantDbServers: [db.url] };
      expect(config.uploadFolder).toBe(path.join(dataDir, `uploads-${db.name}`));
      // This database ran with the embedded folder and uploaded a file there.
      const before = await buildTestApp({ mode: 'postgres', config: { ...config, uploadFolder: shared } });
      const s = await signUp(before.app, { organization_name: 'Legacy' });
      const form = { method: 'POST' as const, url: `/api/tenants/${s.organizationId}/documents`, headers: { ...s.auth, 'content-type': 'multipart/form-data; boundary=x' },
        payload: '--x\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--x--\r\n' };
      expect((await before.app.inject(form)).statusCode).toBe(201);
      await before.app.close();

      const start = async () => {
        const app = await buildApp(config, { logger: false });
        try {
          await app.ready();
        } finally {
          await app.close();
        }
      };
      const told = new RegExp(`this database's files are in ${shared} .*set UPLOAD_FOLDER=${shared} to keep using them there`);
      await expect(start()).rejects.toThrow(told); // the folder carries this deployment's marker
      fs.rmSync(path.join(shared, MARKER_KEY));
      await expect(start()).rejects.toThrow(told); // no marker: its tenants are this database's
      expect(fs.existsSync(path.join(config.uploadFolder, MARKER_KEY))).toBe(false);

      // Only another database's tenants in the embedded folder: the default folder is claimed.
      fs.renameSync(path.join(shared, 'tenants', s.organizationId!), path.join(shared, 'tenants', randomUUID()));
      await start();
      expect(fs.existsSync(path.join(config.uploadFolder, MARKER_KEY))).toBe(true);
    } finally {
      await db.drop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 60_000);
});

describe('staging leftovers at start-up', () => {
  function tmpFiles(root: string): Map<number, string> {
    const dir = path.join(root, '.tmp');
    return new Map((fs.existsSync(dir) ? fs.readdirSync(dir) : []).map((f) => [fs.statSync(path.join(dir, f)).size, f] as const));
  }

  it('the embedded server owns its store: every staged file is a leftover, however fresh', async () => {
    const dir = fs.mkdtempSync(path.join(SCRATCH, 'tb-staging-'));
    const config = { pgliteDir: path.join(dir, 'pglite'), uploadFolder: path.join(dir, 'uploads') };
    try {
      const first = await buildTestApp({ mode: 'pglite', config });
      await first.app.storage.stage(Readable.from([randomBytes(1234)]), { maxBytes: 10_000 }); // cut off by a crash
      await first.app.close();
      expect(tmpFiles(config.uploadFolder).has(1234)).toBe(true);
      const second = await buildTestApp({ mode: 'pglite', config });
      try {
        expect(tmpFiles(config.uploadFolder).size).toBe(0);
      } finally {
        await second.close();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);

  it.skipIf(!HAS_PG)('on PostgreSQL other processes share the store: only staged files untouched for an hour go', async () => {
    const first = await buildTestApp({ mode: 'postgres' });
    try {
      await first.app.storage.stage(Readable.from([randomBytes(1111)]), { maxBytes: 10_000 });
      await first.app.storage.stage(Readable.from([randomBytes(2222)]), { maxBytes: 10_000 });
      const old = tmpFiles(first.config.uploadFolder).get(2222)!;
      const longAgo = new Date(Date.now() - 2 * 3_600_000);
      fs.utimesSync(path.join(first.config.uploadFolder, '.tmp', old), longAgo, longAgo);
      // Another API process of the same deployment starts.
      const second = await buildTestApp({ mode: 'postgres', config: { databaseUrl: first.config.databaseUrl, uploadFolder: first.config.uploadFolder } });
      await second.close();
      const left = tmpFiles(first.config.uploadFolder);
      expect(left.has(1111)).toBe(true); // may be an upload in flight in another process
      expect(left.has(2222)).toBe(false);
    } finally {
      await first.close();
    }
  });
});
