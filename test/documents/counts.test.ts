/**
 * The documents list total without counting rows: the per-tenant counter of
 * tenant migration 0005 (`document_counts`, kept by triggers) stays exact
 * through uploads, duplicates, deletes, bulk inserts, concurrent uploads and
 * deletes, files:gc, and is backfilled by the migration; filtered totals are
 * exact counts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { sql, type Kysely } from 'kysely';
import { buildTestApp, dbModes, type TestApp } from '../helpers/app.js';
import { createTestDatabase } from '../helpers/env.js';
import { openDatabase, type Database } from '../../src/db/index.js';
import { migrateDown, migrateToLatest, migrateMain, migrationStatus } from '../../src/db/migrate.js';
import { runFilesGc } from '../../src/documents/gc.js';
import { readDocumentCount } from '../../src/documents/counts.js';
import { fileKey } from '../../src/storage/index.js';
import { countRows, markReady, newOrg, quietJobs, sha256, tenantRef, upload, type Org } from './helpers.js';

describe.each(dbModes())('document counts on %s', (mode) => {
  let t: TestApp;
  let app: FastifyInstance;

  beforeAll(async () => {
    t = await buildTestApp({ mode });
    app = t.app;
    await quietJobs(app);
  });
  afterAll(async () => t?.close());

  const list = async (o: Org, query: string) => {
    const res = await app.inject({ method: 'GET', url: `/api/tenants/${o.tid}/documents?${query}`, headers: o.admin.auth });
    expect(res.statusCode, res.body).toBe(200);
    return res.json() as { total: number; pages: number; documents: Array<{ id: string }> };
  };
  const counter = async (tid: string) => app.tenantDbs.withTenant(await tenantRef(app, tid), (trx) => readDocumentCount(trx, tid));
  /** The counter, the exact count, and the list total from a full first page (so not from the page itself). */
  const totals = async (o: Org) => ({
    counter: await counter(o.tid),
    exact: (await countRows(app, o.tid)).documents,
    listed: (await list(o, 'per_page=1')).total,
  });
  const same = (n: number) => ({ counter: n, exact: n, listed: n });
  const gc = (dryRun = false) => runFilesGc({ db: app.db, tenantDbs: app.tenantDbs, storage: app.storage, dryRun });
  /** Change the counter behind the triggers' back. */
  const drift = async (tid: string, by: number) => {
    await app.tenantDbs.withTenant(await tenantRef(app, tid), (trx) =>
      sql`INSERT INTO document_counts AS c (tenant_id, slot, n) VALUES (${tid}, 0, ${by})
          ON CONFLICT (tenant_id, slot) DO UPDATE SET n = c.n + excluded.n`.execute(trx),
    );
  };

  it('counts uploads, duplicates, deletes and bulk inserts; the unfiltered total is the counter, filtered totals are counted', async () => {
    const o = await newOrg(app, 'Counts');
    const other = await newOrg(app, 'Counts other');
    expect(await totals(o)).toEqual(same(0));
    const docs: Array<{ id: string }> = [];
    for (let i = 0; i < 5; i++) docs.push((await upload(app, o.admin, o.tid, `distinct ${i} ${randomBytes(8).toString('hex')}`, { filename: `note-${i}.txt` })).json());
    const dup = await upload(app, o.admin, o.tid, `distinct 0 is not this`, { filename: 'again.txt' });
    const dup2 = await upload(app, o.admin, o.tid, `distinct 0 is not this`, { filename: 'again2.txt' });
    expect(dup2.json().file_id).toBe(dup.json().file_id); // a duplicate is a document of its own
    await upload(app, other.admin, other.tid, 'another tenant');
    expect(await totals(o)).toEqual(same(7));
    expect(await totals(other)).toEqual(same(1));
    expect((await list(o, 'per_page=2&page=4')).total).toBe(7); // short last page
    expect((await list(o, 'per_page=2&page=9')).total).toBe(7); // past the end: from the counter
    expect((await list(o, 'per_page=2')).pages).toBe(4);

    // Filtered totals are exact counts (per_page=1: the page never gives them).
    await markReady(app, o.tid, docs[1].id);
    await markReady(app, o.tid, docs[2].id);
    expect((await list(o, 'per_page=1&status=ready')).total).toBe(2);
    expect((await list(o, 'per_page=1&status=pending')).total).toBe(5);
    expect((await list(o, 'per_page=1&filename=note-')).total).toBe(5);
    expect((await list(o, 'per_page=1&filename=again')).total).toBe(2);

    for (const d of [docs[0], docs[3]]) {
      const del = await app.inject({ method: 'DELETE', url: `/api/tenants/${o.tid}/documents/${d.id}`, headers: o.admin.auth });
      expect(del.statusCode).toBe(204);
    }
    expect(await totals(o)).toEqual(same(5));

    // Rows inserted in bulk outside the application (one statement, as the benchmark seeds them).
    await app.tenantDbs.withTenant(await tenantRef(app, o.tid), (trx) =>
      sql`INSERT INTO documents (tenant_id, file_id, filename, mime_type, size, user_id, uploaded_by_email)
          SELECT d.tenant_id, d.file_id, 'bulk-' || g, d.mime_type, d.size, d.user_id, d.uploaded_by_email
          FROM documents d, generate_series(1, 50) g WHERE d.id = ${docs[4].id}`.execute(trx),
    );
    expect(await totals(o)).toEqual(same(55));
    expect(await totals(other)).toEqual(same(1));
  });

  it('stays exact under concurrent uploads and deletes', async () => {
    const o = await newOrg(app, 'Counts concurrent');
    const uploads = await Promise.all(
      Array.from({ length: 24 }, (_, i) => upload(app, o.admin, o.tid, i % 6 === 0 ? 'the same bytes' : `concurrent ${i} ${randomBytes(8).toString('hex')}`)),
    );
    expect(uploads.map((r) => r.statusCode)).toEqual(uploads.map(() => 201));
    expect(await totals(o)).toEqual(same(24));
    const gone = uploads.slice(0, 10).map((r) => r.json().id as string);
    const dels = await Promise.all(
      gone.map((id) => app.inject({ method: 'DELETE', url: `/api/tenants/${o.tid}/documents/${id}`, headers: o.admin.auth })),
    );
    expect(dels.map((r) => r.statusCode)).toEqual(dels.map(() => 204));
    const more = await Promise.all(Array.from({ length: 6 }, (_, i) => upload(app, o.admin, o.tid, `after ${i} ${randomBytes(8).toString('hex')}`)));
    expect(more.every((r) => r.statusCode === 201)).toBe(true);
    expect(await totals(o)).toEqual(same(20));
    // Nothing for gc to correct.
    const report = await gc(true);
    expect(report.tenants.find((x) => x.tenantId === o.tid)).toMatchObject({ documentCountBefore: 20, documentCountAfter: 20 });
  });

  it('files:gc follows documents it removes and corrects a counter that drifted (dry run: reports only)', async () => {
    const o = await newOrg(app, 'Counts gc');
    const lost = randomBytes(300);
    await upload(app, o.admin, o.tid, lost);
    await upload(app, o.admin, o.tid, lost); // two documents on the file whose bytes go missing
    await upload(app, o.admin, o.tid, randomBytes(200));
    await upload(app, o.admin, o.tid, randomBytes(100));
    fs.rmSync(path.join(t.config.uploadFolder, fileKey(o.tid, sha256(lost))));
    await drift(o.tid, 40);
    expect(await totals(o)).toEqual({ counter: 44, exact: 4, listed: 44 });

    const dry = await gc(true);
    expect(dry.tenants.find((x) => x.tenantId === o.tid)).toMatchObject({ documentCountBefore: 44, documentCountAfter: 2 });
    expect(dry.totals.documentCountCorrections).toBeGreaterThanOrEqual(1);
    expect(await totals(o)).toEqual({ counter: 44, exact: 4, listed: 44 });

    const real = await gc();
    expect(real.totals.errors).toBe(0);
    // The two documents without bytes were removed (the trigger counted that), then the drift corrected.
    expect(real.tenants.find((x) => x.tenantId === o.tid)).toMatchObject({ filesWithoutBytes: [expect.any(String)], documentCountBefore: 42, documentCountAfter: 2 });
    expect(await totals(o)).toEqual(same(2));
    const again = await gc();
    expect(again.tenants.find((x) => x.tenantId === o.tid)).toMatchObject({ documentCountBefore: 2, documentCountAfter: 2 });

    await drift(o.tid, -5); // below the truth too
    await gc();
    expect(await totals(o)).toEqual(same(2));
  });
});

describe.each(dbModes())('tenant migration 0005 on %s', (mode) => {
  let database: Database;
  let drop: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    if (mode === 'postgres') {
      const scratch = await createTestDatabase();
      drop = scratch.drop;
      database = await openDatabase({ databaseUrl: scratch.url, pgliteDir: '', poolMax: 2 });
    } else {
      database = await openDatabase({ pgliteDir: 'memory://', poolMax: 1 });
    }
  });
  afterAll(async () => {
    await database?.close();
    await drop?.();
  });

  it('counts the documents that exist when it runs, and drops the outbox NOTIFY trigger (back on the way down)', async () => {
    const db = database.db as Kysely<any>;
    await migrateMain(db);
    // Down to just before 0005 (later migrations first).
    const applied0005 = async () => (await migrationStatus(db, 'tenant')).find((m) => m.name === '0005_documents_throughput')?.executedAt;
    while (await applied0005()) await migrateDown(db, 'tenant');
    const triggers = async () =>
      (await sql<{ tgname: string }>`SELECT tgname FROM pg_trigger WHERE tgrelid = 'outbox'::regclass AND NOT tgisinternal`.execute(db)).rows.map((r) => r.tgname);
    expect(await triggers()).toEqual(['outbox_notify']);
    const tenants = ['0a0a0a0a-0000-4000-8000-00000000000a', '0b0b0b0b-0000-4000-8000-00000000000b'];
    for (const [i, tid] of tenants.entries()) {
      await sql`
        WITH f AS (
          INSERT INTO files (tenant_id, sha256, md5, size, storage_key)
          SELECT ${tid}::uuid, repeat(to_hex(g % 16), 64), repeat('0', 32), 1, 'k' || g FROM generate_series(1, ${3 + i}) g
          RETURNING id, tenant_id
        )
        INSERT INTO documents (tenant_id, file_id, filename, mime_type, size, user_id, uploaded_by_email)
        SELECT tenant_id, id, 'x', 'text/plain', 1, gen_random_uuid(), 'a@example.com' FROM f`.execute(db);
    }
    await migrateToLatest(db, 'tenant');
    expect(await triggers()).toEqual([]);
    const counts = await sql<{ tenant_id: string; n: unknown }>`
      SELECT tenant_id, sum(n) AS n FROM document_counts GROUP BY tenant_id ORDER BY tenant_id`.execute(db);
    expect(counts.rows.map((r) => [r.tenant_id, Number(r.n)])).toEqual([[tenants[0], 3], [tenants[1], 4]]);
    // RLS is forced again on documents after the backfill, and on the new table.
    const rls = await sql<{ relname: string; relforcerowsecurity: boolean }>`
      SELECT relname, relforcerowsecurity FROM pg_class WHERE relname IN ('documents', 'document_counts') ORDER BY relname`.execute(db);
    expect(rls.rows).toEqual([
      { relname: 'document_counts', relforcerowsecurity: true },
      { relname: 'documents', relforcerowsecurity: true },
    ]);
    await sql`TRUNCATE documents`.execute(db);
    expect(Number((await sql<{ n: unknown }>`SELECT count(*) AS n FROM document_counts`.execute(db)).rows[0].n)).toBe(0);
  });
});
