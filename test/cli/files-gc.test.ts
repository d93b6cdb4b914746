/** `cli files:gc`: orphans in both directions are found (dry run) and removed, quotas recomputed. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createTestDatabase, HAS_PG } from '../helpers/env.js';
import { buildTestApp, signUp, type TestApp } from '../helpers/app.js';
import { fileKey } from '../../src/storage/blob-store.js';
import { openDatabase, type Database } from '../../src/db/index.js';
import { createLocalStore } from '../../src/storage/local.js';
import { checkStorageOwner, readDeploymentId } from '../../src/storage/owner.js';
import { listenForOutbox } from '../../src/events/listen.js';
import { sql } from 'kysely';

/** Write the storage marker of the database's deployment in `root`, as a server's first start does. */
async function claimRoot(database: Database, root: string): Promise<void> {
  const id = (await readDeploymentId(database.db))!;
  await checkStorageOwner(createLocalStore({ root }), { id, database: 'test' }, { where: root, setting: 'UPLOAD_FOLDER', claim: true });
}

async function cli(argv: string[], config: Config) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(argv, { config, out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

describe.skipIf(!HAS_PG)('cli files:gc (PostgreSQL: the CLI and the app share one database)', () => {
  let t: TestApp;
  let config: Config;
  let drop: () => Promise<void>;
  const uploads = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-gc-'));

  beforeAll(async () => {
    const db = await createTestDatabase();
    drop = db.drop;
    config = { ...loadConfig({ NODE_ENV: 'test', DATA_DIR: uploads, UPLOAD_FOLDER: uploads }), databaseUrl: db.url, tenantDbServers: [db.url] };
    t = await buildTestApp({ config: { databaseUrl: db.url, tenantDbServers: [db.url], uploadFolder: uploads } });
  });
  afterAll(async () => {
    await t?.close();
    await drop?.();
    fs.rmSync(uploads, { recursive: true, force: true });
  });

  it('reports orphans on --dry-run without touching them, then removes them and fixes the quota counter', async () => {
    const s = await signUp(t.app, { organization_name: `GC ${Date.now()}` });
    const tid = s.organizationId!;
    // Bytes without a row: a blob written under the tenant's prefix by a crashed upload.
    const orphanSha = 'a'.repeat(64);
    const orphanPath = path.join(uploads, fileKey(tid, orphanSha));
    fs.mkdirSync(path.dirname(orphanPath), { recursive: true });
    fs.writeFileSync(orphanPath, 'left behind');
    // A wrong quota counter.
    await t.app.db.updateTable('tenants').set({ storage_used_bytes: 12345 }).where('id', '=', tid).execute();

    const dry = await cli(['files:gc', '--dry-run'], config);
    expect(dry.code, dry.err).toBe(0);
    expect(dry.out).toMatch(/Would remove: .*1 blobs without rows/);
    expect(fs.existsSync(orphanPath)).toBe(true);
    expect((await t.app.db.selectFrom('tenants').select('storage_used_bytes').where('id', '=', tid).executeTakeFirstOrThrow()).storage_used_bytes).toBe(12345);

    const real = await cli(['files:gc'], config);
    expect(real.code, real.err).toBe(0);
    expect(real.out).toMatch(/Removed: .*1 blobs without rows/);
    expect(fs.existsSync(orphanPath)).toBe(false);
    expect((await t.app.db.selectFrom('tenants').select('storage_used_bytes').where('id', '=', tid).executeTakeFirstOrThrow()).storage_used_bytes).toBe(0);
  });
});

describe.skipIf(!HAS_PG)('cli files:gc: sizes, other tenants\' bytes, other deployments\' storage (PostgreSQL)', () => {
  let t: TestApp;
  let config: Config;
  const uploads = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-gc-sizes-'));

  beforeAll(async () => {
    t = await buildTestApp({ mode: 'postgres', config: { uploadFolder: uploads } });
    config = { ...loadConfig({ NODE_ENV: 'test', DATA_DIR: uploads, UPLOAD_FOLDER: uploads }), databaseUrl: t.config.databaseUrl, tenantDbServers: t.config.tenantDbServers };
  });
  afterAll(async () => {
    await t?.close();
    fs.rmSync(uploads, { recursive: true, force: true });
  });

  function putFile(tenantId: string, sha: string, bytes: number): string {
    const file = path.join(uploads, fileKey(tenantId, sha));
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, Buffer.alloc(bytes, 7));
    return file;
  }

  it('counts the bytes of blobs without rows, on a dry run too', async () => {
    const tid = (await signUp(t.app, { organization_name: `Sizes ${Date.now()}` })).organizationId!;
    const a = putFile(tid, 'c'.repeat(64), 24);
    const b = putFile(tid, 'd'.repeat(64), 461);
    const dry = await cli(['files:gc', '--dry-run'], config);
    expect(dry.code, dry.err).toBe(0);
    expect(dry.out).toMatch(/Would remove: .*2 blobs without rows \(485 bytes\).*; 485 bytes in all;/);
    const real = await cli(['files:gc'], config);
    expect(real.out).toMatch(/Removed: .*2 blobs without rows \(485 bytes\).*; 485 bytes in all;/);
    expect(fs.existsSync(a) || fs.existsSync(b)).toBe(false);
  });

  it('keeps the bytes of a tenant this database does not know, and says so', async () => {
    const stranger = '0d0d0d0d-0000-4000-8000-00000000000d';
    const file = putFile(stranger, 'e'.repeat(64), 300);
    for (const args of [['files:gc', '--dry-run'], ['files:gc']]) {
      const r = await cli(args, config);
      expect(r.code, r.err).toBe(0);
      expect(r.out).toMatch(/0 blobs without rows \(0 bytes\)/);
      expect(r.out).toContain(`Kept: 1 blobs (300 bytes) of 1 tenant(s) this database does not know (${stranger})`);
    }
    expect(fs.existsSync(file)).toBe(true);
  });

  it('refuses to run on a storage root of another deployment', async () => {
    const foreign = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-gc-foreign-'));
    try {
      const other = await createTestDatabase();
      try {
        const database = await openDatabase({ databaseUrl: other.url, pgliteDir: '', poolMax: 2 });
        try {
          const otherConfig = { ...config, databaseUrl: other.url, tenantDbServers: [other.url], uploadFolder: foreign };
          expect((await cli(['migrate'], otherConfig)).code).toBe(0);
          await claimRoot(database, foreign);
        } finally {
          await database.close();
        }
      } finally {
        await other.drop();
      }
      const r = await cli(['files:gc', '--dry-run'], { ...config, uploadFolder: foreign });
      expect(r.code).toBe(1);
      expect(r.err).toMatch(new RegExp(`the storage root ${foreign} belongs to another deployment`));
    } finally {
      fs.rmSync(foreign, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!HAS_PG)('cli files:gc wakes a worker (PostgreSQL)', () => {
  it('sends NOTIFY outbox for the events it wrote before it exits (no trigger does it any more)', async () => {
    const scratch = await createTestDatabase();
    const uploads = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-gc-wake-'));
    const config = { ...loadConfig({ NODE_ENV: 'test', DATA_DIR: uploads, UPLOAD_FOLDER: uploads }), databaseUrl: scratch.url };
    const database = await openDatabase({ databaseUrl: scratch.url, pgliteDir: '', poolMax: 2 });
    let heard = 0;
    const listener = listenForOutbox(scratch.url, () => { heard += 1; });
    try {
      expect((await cli(['migrate'], config)).code).toBe(0);
      // The storage root is this deployment's, as a server's first start would make it.
      await claimRoot(database, uploads);
      // A file row whose bytes are gone and that no document uses: gc removes it and records file.deleted.
      const tid = '0c0c0c0c-0000-4000-8000-00000000000c';
      await sql`INSERT INTO tenants (id, name, slug, storage_quota_mb) VALUES (${tid}, 'Wake', 'wake', 10)`.execute(database.db);
      await sql`INSERT INTO files (tenant_id, sha256, md5, size, storage_key)
                VALUES (${tid}, ${'b'.repeat(64)}, ${'0'.repeat(32)}, 1, ${fileKey(tid, 'b'.repeat(64))})`.execute(database.db);
      const deadline = Date.now() + 3_000;
      while (heard === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10)); // listening
      await new Promise((r) => setTimeout(r, 50));
      heard = 0;
      const run = await cli(['files:gc'], config);
      expect(run.code, run.err).toBe(0);
      expect(run.out).toMatch(/1 rows without bytes/);
      const until = Date.now() + 3_000;
      while (heard === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
      expect(heard).toBeGreaterThan(0);
    } finally {
      await listener.close();
      await database.close();
      await scratch.drop();
      fs.rmSync(uploads, { recursive: true, force: true });
    }
  });
});
