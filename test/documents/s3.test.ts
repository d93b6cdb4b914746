/**
 * The upload / download / presigned-URL flow on S3-compatible storage (s3rver
 * on 127.0.0.1, random port, temp dir), on every database mode.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import S3rver from 's3rver';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildTestApp, dbModes, type TestApp } from '../helpers/app.js';
import { fileKey, type S3BlobStore } from '../../src/storage/index.js';
import { runFilesGc } from '../../src/documents/gc.js';
import { countRows, markReady, newOrg, quietJobs, sha256, upload, usedBytes } from './helpers.js';

const MAX_MB = 1;

describe.each(dbModes())('documents on S3 storage (s3rver) with %s', (mode) => {
  let server: S3rver;
  let dir: string;
  let t: TestApp;
  let app: FastifyInstance;
  let store: S3BlobStore;

  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'docs-s3rver-'));
    server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: dir });
    const { port } = await server.run();
    t = await buildTestApp({
      mode,
      env: { MAX_FILE_SIZE_MB: String(MAX_MB) },
      config: {
        s3: {
          endpoint: `http://127.0.0.1:${port}`,
          publicUrl: `http://localhost:${port}`,
          bucket: 'docs-test',
          region: 'us-east-1',
          accessKeyId: 'S3RVER',
          secretAccessKey: 'S3RVER',
          forcePathStyle: true,
        },
      },
    });
    app = t.app;
    await quietJobs(app);
    store = app.storage as S3BlobStore;
    expect(store.kind).toBe('s3');
    await store.ensureBucket();
  });
  afterAll(async () => {
    await t?.close();
    await server?.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  async function keys(prefix: string): Promise<string[]> {
    const out: string[] = [];
    for await (const o of store.list(prefix)) out.push(o.key);
    return out;
  }

  it('reports storage in /ready', async () => {
    const res = await app.inject({ method: 'GET', url: '/ready' });
    expect(res.json().checks.storage).toBe('ok');
  });

  it('uploads to the content-addressed key, deduplicates, downloads with ranges and presigns a working URL', async () => {
    const o = await newOrg(app, 'S3');
    const bytes = randomBytes(200_000);
    const res = await upload(app, o.admin, o.tid, bytes, { filename: 'Bericht für Q1.csv', contentType: 'text/csv' });
    expect(res.statusCode).toBe(201);
    const doc = res.json();
    expect(await keys(`tenants/${o.tid}/`)).toEqual([fileKey(o.tid, sha256(bytes))]);
    expect(await keys('tmp/')).toEqual([]);

    const dup = (await upload(app, o.admin, o.tid, bytes, { filename: 'copy.csv' })).json();
    expect(dup.file_id).toBe(doc.file_id);
    expect(await keys(`tenants/${o.tid}/`)).toHaveLength(1);
    expect(await usedBytes(app, o.tid)).toBe(bytes.length);

    await markReady(app, o.tid, doc.id);
    const dl = await app.inject({ method: 'GET', url: `/api/tenants/${o.tid}/documents/${doc.id}/download`, headers: o.admin.auth });
    expect(dl.statusCode).toBe(200);
    expect(dl.rawPayload.equals(bytes)).toBe(true);
    expect(dl.headers['content-length']).toBe(String(bytes.length));
    const part = await app.inject({
      method: 'GET', url: `/api/tenants/${o.tid}/documents/${doc.id}/download`, headers: { ...o.admin.auth, range: 'bytes=100-199' },
    });
    expect(part.statusCode).toBe(206);
    expect(part.rawPayload.equals(bytes.subarray(100, 200))).toBe(true);

    const signed = await app.inject({
      method: 'GET', url: `/api/tenants/${o.tid}/documents/${doc.id}/download-url?expires_in=300`, headers: o.admin.auth,
    });
    expect(signed.statusCode).toBe(200);
    const { url, expires_at } = signed.json();
    expect(new URL(url).host).toBe(`localhost:${new URL(t.config.s3!.publicUrl!).port}`);
    expect(url).toContain('X-Amz-Signature=');
    expect(new Date(expires_at).getTime()).toBeGreaterThan(Date.now());
    const fetched = await fetch(url); // no credentials
    expect(fetched.status).toBe(200);
    expect(Buffer.from(await fetched.arrayBuffer()).equals(bytes)).toBe(true);
    expect(fetched.headers.get('content-disposition')).toContain("filename*=UTF-8''Bericht%20f%C3%BCr%20Q1.csv");

    // Deleting both documents removes the object and gives the quota back.
    for (const id of [doc.id, dup.id]) {
      expect((await app.inject({ method: 'DELETE', url: `/api/tenants/${o.tid}/documents/${id}`, headers: o.admin.auth })).statusCode).toBe(204);
    }
    expect(await keys(`tenants/${o.tid}/`)).toEqual([]);
    expect(await usedBytes(app, o.tid)).toBe(0);
  });

  it('leaves no object (staged or final) and no row after an over-limit or truncated upload', async () => {
    const o = await newOrg(app);
    const over = await upload(app, o.admin, o.tid, randomBytes(MAX_MB * 1024 * 1024 + 1));
    expect(over.statusCode).toBe(413);
    expect(over.json().code).toBe('file_too_large');
    const exact = await upload(app, o.admin, o.tid, randomBytes(MAX_MB * 1024 * 1024));
    expect(exact.statusCode).toBe(201);
    expect(await keys('tmp/')).toEqual([]);
    expect(await keys(`tenants/${o.tid}/`)).toHaveLength(1);
    expect(await countRows(app, o.tid)).toEqual({ files: 1, documents: 1 });
  });

  it('garbage-collects orphans on S3 too', async () => {
    const o = await newOrg(app);
    const doc = (await upload(app, o.admin, o.tid, randomBytes(1000))).json();
    const stray = randomBytes(10);
    const staged = await store.stage((await import('node:stream')).Readable.from([stray]), { maxBytes: 10 });
    await staged.commit(fileKey(o.tid, staged.sha256));
    const report = await runFilesGc({ db: app.db, tenantDbs: app.tenantDbs, storage: store });
    expect(report.tenants.find((x) => x.tenantId === o.tid)!.bytesWithoutRows).toEqual([fileKey(o.tid, sha256(stray))]);
    expect(await keys(`tenants/${o.tid}/`)).toHaveLength(1);
    expect((await app.inject({ method: 'GET', url: `/api/tenants/${o.tid}/documents/${doc.id}`, headers: o.admin.auth })).statusCode).toBe(200);
  });
});
