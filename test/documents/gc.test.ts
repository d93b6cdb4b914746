/** files:gc — orphans in both directions and the quota counter, dry run and real. */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildTestApp, dbModes, type TestApp } from '../helpers/app.js';
import { fileKey } from '../../src/storage/index.js';
import { runFilesGc } from '../../src/documents/gc.js';
import { removeFileIfOrphaned } from '../../src/documents/service.js';
import { countRows, newOrg, outboxTopics, quietJobs, sha256, tenantRef, upload, usedBytes } from './helpers.js';

describe.each(dbModes())('files:gc on %s', (mode) => {
  let t: TestApp;
  let app: FastifyInstance;

  beforeAll(async () => {
    t = await buildTestApp({ mode });
    app = t.app;
    await quietJobs(app);
  });
  afterAll(async () => t?.close());

  async function putBlob(tid: string, bytes: Buffer): Promise<string> {
    const staged = await app.storage.stage(Readable.from([bytes]), { maxBytes: bytes.length });
    const key = fileKey(tid, staged.sha256);
    await staged.commit(key);
    return key;
  }
  const exists = (key: string) => fs.existsSync(path.join(t.config.uploadFolder, key));

  it('finds and removes blobs without rows, rows without blobs, unreferenced files, and recomputes storage_used_bytes', async () => {
    const o = await newOrg(app, 'Gc');
    const keep = randomBytes(1000);
    const lost = randomBytes(2000);
    const lonely = randomBytes(3000);
    const kept = (await upload(app, o.admin, o.tid, keep)).json();
    const lostDoc = (await upload(app, o.admin, o.tid, lost)).json();
    const lonelyDoc = (await upload(app, o.admin, o.tid, lonely)).json();
    expect(await usedBytes(app, o.tid)).toBe(6000);

    // 1. bytes without a row; 2. a row whose bytes vanished; 3. a file no document references; 4. a drifted counter.
    const strayKey = await putBlob(o.tid, randomBytes(500));
    fs.rmSync(path.join(t.config.uploadFolder, fileKey(o.tid, sha256(lost))));
    const ref = await tenantRef(app, o.tid);
    await app.tenantDbs.withTenant(ref, (trx) => trx.deleteFrom('documents').where('id', '=', lonelyDoc.id).execute());
    // A failed upload whose bytes were removed on purpose (DELETE_FAILED_UPLOADS): kept.
    const failedBytes = randomBytes(400);
    const failedDoc = (await upload(app, o.admin, o.tid, failedBytes)).json();
    await app.tenantDbs.withTenant(ref, (trx) => trx.updateTable('documents').set({ status: 'failed' }).where('id', '=', failedDoc.id).execute());
    fs.rmSync(path.join(t.config.uploadFolder, fileKey(o.tid, sha256(failedBytes))));
    await app.db.updateTable('tenants').set({ storage_used_bytes: 123_456 }).where('id', '=', o.tid).execute();
    // Bytes of a tenant this database does not know (another database's): reported, never removed.
    const ghostTenant = randomUUID();
    const ghostKey = await putBlob(ghostTenant, randomBytes(10));

    const lines: string[] = [];
    const dry = await runFilesGc({ db: app.db, tenantDbs: app.tenantDbs, storage: app.storage, dryRun: true, log: (l) => lines.push(l) });
    const mine = dry.tenants.find((x) => x.tenantId === o.tid)!;
    expect(mine).toMatchObject({
      bytesWithoutRows: [strayKey],
      filesWithoutBytes: [lostDoc.file_id],
      unreferencedFiles: [lonelyDoc.file_id],
      failedWithoutBytes: [failedDoc.file_id],
      storageUsedBefore: 123_456,
      storageUsedAfter: 1400,
    });
    expect(dry.unknownTenantBytes).toEqual([ghostKey]);
    expect(dry.unknownTenants).toEqual([{ tenantId: ghostTenant, blobs: 1, bytes: 10 }]);
    expect(dry.totals).toMatchObject({ unknownTenantBlobs: 1, unknownTenantBlobsSize: 10, bytesWithoutRows: 1, bytesWithoutRowsSize: 500 });
    expect(lines.some((l) => l.includes('would remove'))).toBe(true);
    // Nothing changed.
    expect(exists(strayKey)).toBe(true);
    expect(exists(ghostKey)).toBe(true);
    expect(await countRows(app, o.tid)).toEqual({ files: 4, documents: 3 });
    expect(await usedBytes(app, o.tid)).toBe(123_456);

    const real = await runFilesGc({ db: app.db, tenantDbs: app.tenantDbs, storage: app.storage });
    expect(real.totals.errors).toBe(0);
    expect(exists(strayKey)).toBe(false);
    expect(exists(ghostKey)).toBe(true);
    expect(real.unknownTenantBytes).toEqual([ghostKey]);
    expect(exists(fileKey(o.tid, sha256(lonely)))).toBe(false);
    expect(exists(fileKey(o.tid, sha256(keep)))).toBe(true);
    expect(await countRows(app, o.tid)).toEqual({ files: 2, documents: 2 });
    expect(await usedBytes(app, o.tid)).toBe(1400);
    const topics = await outboxTopics(app, o.tid);
    expect(topics.filter((x) => x === 'file.deleted').length).toBe(2);
    expect(topics).toContain('document.deleted');

    // The survivor still downloads; a second run finds nothing.
    expect((await app.inject({ method: 'GET', url: `/api/tenants/${o.tid}/documents/${kept.id}`, headers: o.admin.auth })).statusCode).toBe(200);
    const again = await runFilesGc({ db: app.db, tenantDbs: app.tenantDbs, storage: app.storage });
    expect(again.totals).toMatchObject({ unreferencedFiles: 0, filesWithoutBytes: 0, bytesWithoutRows: 0, quotaCorrections: 0 });
  });

  it('removes staging leftovers older than the cutoff (an upload killed mid-way), not fresh ones, and not on a dry run', async () => {
    const stale = await app.storage.stage(Readable.from([randomBytes(4096)]), { maxBytes: 10_000 }); // never committed
    const fresh = await app.storage.stage(Readable.from([randomBytes(100)]), { maxBytes: 10_000 });
    const tmpDir = path.join(t.config.uploadFolder, '.tmp');
    const bySize = async () => new Map(await Promise.all(fs.readdirSync(tmpDir).map(async (f) => [fs.statSync(path.join(tmpDir, f)).size, f] as const)));
    const staleName = (await bySize()).get(4096)!;
    const longAgo = new Date(Date.now() - 2 * 3_600_000);
    fs.utimesSync(path.join(tmpDir, staleName), longAgo, longAgo);

    const lines: string[] = [];
    const dry = await runFilesGc({ db: app.db, tenantDbs: app.tenantDbs, storage: app.storage, dryRun: true, log: (l) => lines.push(l) });
    expect(dry.staging).toEqual({ removed: [`.tmp/${staleName}`], bytes: 4096 });
    expect(lines.some((l) => l.includes(`would remove staging leftover: .tmp/${staleName}`))).toBe(true);
    expect(fs.existsSync(path.join(tmpDir, staleName))).toBe(true);

    const real = await runFilesGc({ db: app.db, tenantDbs: app.tenantDbs, storage: app.storage });
    expect(real.staging.removed).toEqual([`.tmp/${staleName}`]);
    expect(real.totals.bytesFreed).toBeGreaterThanOrEqual(4096);
    expect(fs.existsSync(path.join(tmpDir, staleName))).toBe(false);
    expect((await bySize()).has(100)).toBe(true); // the fresh one is an upload still in flight
    await stale.discard();
    await fresh.discard();
  });

  it('removeFileIfOrphaned (for background cleanup) removes an unreferenced file with its bytes and quota, and nothing else', async () => {
    const o = await newOrg(app);
    const a = randomBytes(700);
    const b = randomBytes(300);
    const da = (await upload(app, o.admin, o.tid, a)).json();
    const db = (await upload(app, o.admin, o.tid, b)).json();
    const ref = await tenantRef(app, o.tid);
    const deps = { db: app.db, tenantDbs: app.tenantDbs, storage: app.storage };
    expect(await removeFileIfOrphaned(deps, ref, da.file_id)).toBe(false); // still referenced
    await app.tenantDbs.withTenant(ref, (trx) => trx.deleteFrom('documents').where('id', '=', da.id).execute());
    expect(await removeFileIfOrphaned(deps, ref, da.file_id, { reason: 'orphan_cleanup' })).toBe(true);
    expect(await removeFileIfOrphaned(deps, ref, da.file_id)).toBe(false); // idempotent
    expect(await removeFileIfOrphaned(deps, ref, 'not-a-uuid')).toBe(false);
    expect(exists(fileKey(o.tid, sha256(a)))).toBe(false);
    expect(exists(fileKey(o.tid, sha256(b)))).toBe(true);
    expect(await usedBytes(app, o.tid)).toBe(300);
    expect(await countRows(app, o.tid)).toEqual({ files: 1, documents: 1 });
    expect(db.file_id).not.toBe(da.file_id);
  });
});
