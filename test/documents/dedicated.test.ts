/**
 * Documents of a dedicated tenant (its own database; quota counter in the main
 * one): upload, dedup, quota, download, delete with orphan cleanup, gc — PostgreSQL only.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import { buildTestApp, signUp, type Session, type TestApp } from '../helpers/app.js';
import { HAS_PG, requirePg } from '../helpers/env.js';
import { closeWithTenantDatabases } from '../tenants/helpers.js';
import { fileKey } from '../../src/storage/index.js';
import { runFilesGc } from '../../src/documents/gc.js';
import { countRows, markReady, quietJobs, setQuotaMb, sha256, upload, usedBytes } from './helpers.js';

if (!HAS_PG) console.warn('[tests] documents of dedicated tenants not run: they need PostgreSQL (set TEST_DATABASE_URL)');

describe.skipIf(!HAS_PG)('documents of a dedicated tenant on postgres', () => {
  let t: TestApp;
  let app: FastifyInstance;
  let admin: Session;
  let tid: string;

  beforeAll(async () => {
    requirePg();
    t = await buildTestApp({ mode: 'postgres' });
    app = t.app;
    await quietJobs(app);
    admin = await signUp(app);
    const res = await app.inject({
      method: 'POST', url: '/api/tenants', headers: admin.auth, payload: { name: `Dedicated docs ${Date.now()}`, isolation: 'dedicated' },
    });
    expect(res.statusCode, res.body).toBe(201);
    tid = res.json().id;
  });
  afterAll(async () => closeWithTenantDatabases(t));

  it('stores, deduplicates, counts quota in the main database, serves and cleans up in the tenant database', async () => {
    await setQuotaMb(app, tid, 1);
    const bytes = randomBytes(600_000);
    const a = await upload(app, admin, tid, bytes, { filename: 'a.bin' });
    expect(a.statusCode, a.body).toBe(201);
    const b = await upload(app, admin, tid, bytes, { filename: 'b.bin' });
    expect(b.json().file_id).toBe(a.json().file_id);
    expect(await usedBytes(app, tid)).toBe(bytes.length);
    expect((await upload(app, admin, tid, randomBytes(600_000))).json().code).toBe('quota_exceeded');
    // Nothing of it in the main database.
    expect(await app.db.selectFrom('documents').select('id').where('tenant_id', '=', tid).execute()).toEqual([]);
    expect(await countRows(app, tid)).toEqual({ files: 1, documents: 2 });
    // The list total is the document counter of the tenant's own database.
    expect((await listTotal()).total).toBe(2);
    expect(Number((await sql<{ n: unknown }>`SELECT coalesce(sum(n), 0) AS n FROM document_counts WHERE tenant_id = ${tid}`.execute(app.db)).rows[0].n)).toBe(0);

    await markReady(app, tid, a.json().id);
    const dl = await app.inject({ method: 'GET', url: `/api/tenants/${tid}/documents/${a.json().id}/download`, headers: admin.auth });
    expect(dl.statusCode).toBe(200);
    expect(dl.rawPayload.equals(bytes)).toBe(true);

    // Drift the counter, then gc repairs it from the tenant database's files table.
    await app.db.updateTable('tenants').set({ storage_used_bytes: 5 }).where('id', '=', tid).execute();
    const report = await runFilesGc({ db: app.db, tenantDbs: app.tenantDbs, storage: app.storage });
    expect(report.tenants.find((x) => x.tenantId === tid)).toMatchObject({
      storageUsedBefore: 5, storageUsedAfter: bytes.length, documentCountBefore: 2, documentCountAfter: 2,
    });
    expect(await usedBytes(app, tid)).toBe(bytes.length);

    for (const r of [a, b]) {
      const del = await app.inject({ method: 'DELETE', url: `/api/tenants/${tid}/documents/${r.json().id}`, headers: admin.auth });
      expect(del.statusCode).toBe(204);
    }
    expect(fs.existsSync(path.join(t.config.uploadFolder, fileKey(tid, sha256(bytes))))).toBe(false);
    expect(await usedBytes(app, tid)).toBe(0);
    expect(await countRows(app, tid)).toEqual({ files: 0, documents: 0 });
    expect((await listTotal()).total).toBe(0);
  });

  const listTotal = async () => {
    const res = await app.inject({ method: 'GET', url: `/api/tenants/${tid}/documents?per_page=1&page=2`, headers: admin.auth });
    expect(res.statusCode, res.body).toBe(200);
    return res.json() as { total: number };
  };
});
