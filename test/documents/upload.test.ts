/**
 * Uploads: streaming into storage, dedup, quota, limits, bad input, roles,
 * outbox — on every database mode, local-disk storage.
 */
import fs from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildTestApp, dbModes, signUp, type TestApp } from '../helpers/app.js';
import { fileKey } from '../../src/storage/index.js';
import {
  countRows, md5, member, multipart, newOrg, outboxTopics, quietJobs, setQuotaMb, sha256, tenantRef, upload, usedBytes, type Org,
} from './helpers.js';

const MAX_MB = 2;
const MAX = MAX_MB * 1024 * 1024;
const QUOTA_MB = 3;

/** Every file under the upload folder (blobs and staging leftovers), relative. */
function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true, withFileTypes: true }) as fs.Dirent[])
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath ?? (e as any).path, e.name)));
}

describe.each(dbModes())('document uploads on %s', (mode) => {
  let t: TestApp;
  let app: FastifyInstance;
  let org: Org;
  let uploadDir: string;

  beforeAll(async () => {
    t = await buildTestApp({ mode, env: { MAX_FILE_SIZE_MB: String(MAX_MB), STORAGE_QUOTA_MB: String(QUOTA_MB) } });
    app = t.app;
    await quietJobs(app);
    uploadDir = t.config.uploadFolder;
    org = await newOrg(app, 'Uploads');
  });
  afterAll(async () => t?.close());

  /** Blobs and staging files of one tenant (a fresh org per test keeps counts exact). */
  const tenantFiles = (tid: string) => filesUnder(path.join(uploadDir, 'tenants', tid));
  const stagingFiles = () => filesUnder(path.join(uploadDir, '.tmp'));

  it('streams the file to storage and answers the document (201, pending), with the job and event in the outbox', async () => {
    const o = await newOrg(app);
    const bytes = randomBytes(300_000);
    const res = await upload(app, o.admin, o.tid, bytes, { filename: 'report.pdf', contentType: 'application/pdf' });
    expect(res.statusCode).toBe(201);
    const doc = res.json();
    expect(doc).toMatchObject({
      filename: 'report.pdf', mime_type: 'application/pdf', size: bytes.length, status: 'pending',
      sha256: sha256(bytes), user_id: o.admin.userId, uploaded_by_email: o.admin.email, error_message: null, processed_at: null,
    });
    expect(doc.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(doc.file_id).toMatch(/^[0-9a-f-]{36}$/);

    // Content-addressed key, no user-supplied name anywhere in the path.
    const key = fileKey(o.tid, sha256(bytes));
    expect(tenantFiles(o.tid)).toEqual([path.relative(`tenants/${o.tid}`, key)]);
    expect(fs.readFileSync(path.join(uploadDir, key)).equals(bytes)).toBe(true);
    expect(stagingFiles()).toEqual([]);

    const ref = await tenantRef(app, o.tid);
    const file = await app.tenantDbs.withTenant(ref, (trx) => trx.selectFrom('files').selectAll().executeTakeFirstOrThrow());
    expect(file).toMatchObject({ id: doc.file_id, sha256: sha256(bytes), md5: md5(bytes), size: bytes.length, storage_key: key });
    expect(await usedBytes(app, o.tid)).toBe(bytes.length);

    const outbox = await app.tenantDbs.withTenant(ref, (trx) => trx.selectFrom('outbox').selectAll().orderBy('id').execute());
    const job = outbox.find((r) => r.kind === 'job');
    expect(job).toMatchObject({ topic: 'validate_document', tenant_id: o.tid });
    expect(job!.payload).toEqual({ document_id: doc.id });
    const ev = outbox.find((r) => r.kind === 'event' && r.topic === 'document.uploaded');
    expect(ev!.payload).toMatchObject({ event_type: 'document.uploaded', tenant_id: o.tid, user_id: o.admin.userId });
    expect((ev!.payload as any).data).toMatchObject({ document_id: doc.id, file_id: doc.file_id, deduplicated: false });
  });

  it('deduplicates identical uploads in a tenant: a new document on the same file, no new bytes, no quota', async () => {
    const o = await newOrg(app);
    const bytes = randomBytes(50_000);
    const a = (await upload(app, o.admin, o.tid, bytes, { filename: 'a.bin' })).json();
    const used = await usedBytes(app, o.tid);
    const mtime = fs.statSync(path.join(uploadDir, fileKey(o.tid, sha256(bytes)))).mtimeMs;
    const res = await upload(app, o.admin, o.tid, bytes, { filename: 'b.bin' });
    expect(res.statusCode).toBe(201);
    const b = res.json();
    expect(b.id).not.toBe(a.id);
    expect(b.file_id).toBe(a.file_id);
    expect(b.filename).toBe('b.bin');
    expect(await countRows(app, o.tid)).toEqual({ files: 1, documents: 2 });
    expect(tenantFiles(o.tid)).toHaveLength(1);
    expect(fs.statSync(path.join(uploadDir, fileKey(o.tid, sha256(bytes)))).mtimeMs).toBe(mtime);
    expect(stagingFiles()).toEqual([]);
    expect(await usedBytes(app, o.tid)).toBe(used);
  });

  it('restores the bytes of a deduplicated file whose bytes were removed (e.g. DELETE_FAILED_UPLOADS)', async () => {
    const o = await newOrg(app);
    const bytes = randomBytes(20_000);
    const a = (await upload(app, o.admin, o.tid, bytes, { filename: 'a.bin' })).json();
    const blob = path.join(uploadDir, fileKey(o.tid, sha256(bytes)));
    fs.rmSync(blob);
    const ref = await tenantRef(app, o.tid);
    await app.tenantDbs.withTenant(ref, (trx) => trx.updateTable('documents').set({ status: 'failed' }).where('id', '=', a.id).execute());
    const b = (await upload(app, o.admin, o.tid, bytes, { filename: 'b.bin' })).json();
    expect(b.file_id).toBe(a.file_id);
    expect(fs.readFileSync(blob).equals(bytes)).toBe(true);
    expect(await usedBytes(app, o.tid)).toBe(bytes.length);
    expect(stagingFiles()).toEqual([]);
  });

  it('never deduplicates across tenants', async () => {
    const o1 = await newOrg(app);
    const o2 = await newOrg(app);
    const bytes = randomBytes(10_000);
    const a = (await upload(app, o1.admin, o1.tid, bytes)).json();
    const b = (await upload(app, o2.admin, o2.tid, bytes)).json();
    expect(b.file_id).not.toBe(a.file_id);
    expect(tenantFiles(o1.tid)).toHaveLength(1);
    expect(tenantFiles(o2.tid)).toHaveLength(1);
    expect(await usedBytes(app, o2.tid)).toBe(bytes.length);
  });

  it('handles identical concurrent uploads: one file row, one blob, every document on it, quota counted once', async () => {
    const o = await newOrg(app);
    const bytes = randomBytes(120_000);
    const results = await Promise.all(Array.from({ length: 6 }, (_, i) => upload(app, o.admin, o.tid, bytes, { filename: `c${i}.bin` })));
    expect(results.map((r) => r.statusCode)).toEqual(Array(6).fill(201));
    expect(new Set(results.map((r) => r.json().file_id)).size).toBe(1);
    expect(await countRows(app, o.tid)).toEqual({ files: 1, documents: 6 });
    expect(tenantFiles(o.tid)).toHaveLength(1);
    expect(stagingFiles()).toEqual([]);
    expect(await usedBytes(app, o.tid)).toBe(bytes.length);
  });

  describe('quota', () => {
    it('reads STORAGE_QUOTA_MB for new organizations', async () => {
      const o = await newOrg(app);
      const row = await app.db.selectFrom('tenants').select('storage_quota_mb').where('id', '=', o.tid).executeTakeFirstOrThrow();
      expect(row.storage_quota_mb).toBe(QUOTA_MB);
    });

    it('accepts a 0.57 MB file under a 1 MB quota and counts it once (seed defect: quota counted twice)', async () => {
      const o = await newOrg(app);
      await setQuotaMb(app, o.tid, 1);
      const bytes = randomBytes(Math.round(0.57 * 1024 * 1024));
      const res = await upload(app, o.admin, o.tid, bytes);
      expect(res.statusCode).toBe(201);
      expect(await usedBytes(app, o.tid)).toBe(bytes.length);
      // Still accepted: the tenant's record shows it within quota, and a re-upload (dedup) is fine too.
      const again = await upload(app, o.admin, o.tid, bytes, { filename: 'again.bin' });
      expect(again.statusCode).toBe(201);
      expect(await usedBytes(app, o.tid)).toBe(bytes.length);
      // A different 0.57 MB file does not fit any more.
      const other = await upload(app, o.admin, o.tid, randomBytes(bytes.length));
      expect(other.statusCode).toBe(413);
      expect(other.json()).toMatchObject({ code: 'quota_exceeded', status: 413 });
      expect(await usedBytes(app, o.tid)).toBe(bytes.length);
      expect(await countRows(app, o.tid)).toEqual({ files: 1, documents: 2 });
      expect(tenantFiles(o.tid)).toHaveLength(1);
      expect(stagingFiles()).toEqual([]);
    });

    it('lets exactly one of two concurrent uploads that each reach the quota exactly succeed', async () => {
      const o = await newOrg(app);
      await setQuotaMb(app, o.tid, 1);
      const [a, b] = [randomBytes(1024 * 1024), randomBytes(1024 * 1024)];
      const results = await Promise.all([upload(app, o.admin, o.tid, a), upload(app, o.admin, o.tid, b)]);
      expect(results.map((r) => r.statusCode).sort()).toEqual([201, 413]);
      expect(results.find((r) => r.statusCode === 413)!.json().code).toBe('quota_exceeded');
      expect(await usedBytes(app, o.tid)).toBe(1024 * 1024);
      expect(await countRows(app, o.tid)).toEqual({ files: 1, documents: 1 });
      expect(tenantFiles(o.tid)).toHaveLength(1);
      expect(stagingFiles()).toEqual([]);
    });
  });

  describe('size limit (MAX_FILE_SIZE_MB)', () => {
    it('accepts a file of exactly the limit', async () => {
      const o = await newOrg(app);
      const res = await upload(app, o.admin, o.tid, randomBytes(MAX));
      expect(res.statusCode).toBe(201);
      expect(res.json().size).toBe(MAX);
    });

    it('refuses one byte over with 413 file_too_large and leaves no blob, row or reservation', async () => {
      const o = await newOrg(app);
      const res = await upload(app, o.admin, o.tid, randomBytes(MAX + 1));
      expect(res.statusCode).toBe(413);
      expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
      expect(res.json()).toMatchObject({ code: 'file_too_large', status: 413 });
      expect(await countRows(app, o.tid)).toEqual({ files: 0, documents: 0 });
      expect(tenantFiles(o.tid)).toEqual([]);
      expect(stagingFiles()).toEqual([]);
      expect(await usedBytes(app, o.tid)).toBe(0);
    });

    it('refuses a body whose declared length is far over the limit before reading it', async () => {
      const o = await newOrg(app);
      const res = await upload(app, o.admin, o.tid, randomBytes(MAX + 2 * 1024 * 1024));
      expect(res.statusCode).toBe(413);
      expect(res.json().code).toBe('file_too_large');
      // The answer keeps the connection so a client still sending reads it (test/http/rejected-body.test.ts).
      expect(res.headers.connection).not.toBe('close');
      expect(stagingFiles()).toEqual([]);
    });
  });

  describe('content types and file names', () => {
    it.each(['text/csv', 'application/octet-stream'])('accepts a .csv sent as %s (as curl does) and records the declared type', async (type) => {
      const o = await newOrg(app);
      const res = await upload(app, o.admin, o.tid, 'id,name\n1,Ada\n2,Grace\n', { filename: 'people.csv', contentType: type });
      expect(res.statusCode).toBe(201);
      expect(res.json()).toMatchObject({ filename: 'people.csv', mime_type: type, status: 'pending' });
    });

    it('records application/octet-stream for a malformed declared type, and lower-cases types without parameters', async () => {
      const o = await newOrg(app);
      expect((await upload(app, o.admin, o.tid, 'x', { contentType: 'not a type' })).json().mime_type).toBe('application/octet-stream');
      expect((await upload(app, o.admin, o.tid, 'y', { contentType: 'Text/CSV; charset=utf-8' })).json().mime_type).toBe('text/csv');
    });

    it.each([
      ['..', 'file'],
      ['___', 'file'],
      ['../../etc/passwd', 'passwd'],
      ['..\\..\\windows\\system.ini', 'system.ini'],
      ['a\u0000b.txt', 'ab.txt'],
      ['', 'file'],
    ])('sanitizes the filename %j to %j (201) and never uses it in a path', async (given, expected) => {
      const o = await newOrg(app);
      const bytes = randomBytes(100);
      const res = await upload(app, o.admin, o.tid, bytes, { filename: given });
      expect(res.statusCode).toBe(201);
      expect(res.json().filename).toBe(expected);
      expect(tenantFiles(o.tid)).toEqual([path.relative(`tenants/${o.tid}`, fileKey(o.tid, sha256(bytes)))]);
    });

    it('keeps a UTF-8 filename sent raw in the part header (browsers, curl)', async () => {
      const o = await newOrg(app);
      const res = await upload(app, o.admin, o.tid, 'x', { filename: 'Résumé 2024 – ünïcödé.txt' });
      expect(res.statusCode).toBe(201);
      expect(res.json().filename).toBe('Résumé 2024 – ünïcödé.txt');
    });

    it('shortens a 1000-character filename to 255 bytes, keeping the extension', async () => {
      const o = await newOrg(app);
      const res = await upload(app, o.admin, o.tid, 'x', { filename: `${'n'.repeat(1000)}.txt` });
      expect(res.statusCode).toBe(201);
      const name = res.json().filename as string;
      expect(Buffer.byteLength(name)).toBeLessThanOrEqual(255);
      expect(name.endsWith('.txt')).toBe(true);
    });

    it('takes the display name from the optional `filename` field, sanitized', async () => {
      const o = await newOrg(app);
      const res = await upload(app, o.admin, o.tid, 'x', {
        filename: 'upload.bin',
        extra: [{ name: 'filename', data: '../Quarterly report.txt' }],
      });
      expect(res.statusCode).toBe(201);
      expect(res.json().filename).toBe('Quarterly report.txt');
    });
  });

  describe('bad input', () => {
    const post = (o: Org, payload: Buffer | string, headers: Record<string, string>) =>
      app.inject({ method: 'POST', url: `/api/tenants/${o.tid}/documents`, headers: { ...o.admin.auth, ...headers }, payload });

    it('refuses an empty file with 400 empty_file and stores nothing', async () => {
      const o = await newOrg(app);
      const res = await upload(app, o.admin, o.tid, Buffer.alloc(0), { filename: 'empty.txt' });
      expect(res.statusCode).toBe(400);
      expect(res.json()).toMatchObject({ code: 'empty_file' });
      expect(await countRows(app, o.tid)).toEqual({ files: 0, documents: 0 });
      expect(stagingFiles()).toEqual([]);
    });

    it('refuses a body without a `file` part (400 no_file)', async () => {
      const o = await newOrg(app);
      const onlyField = multipart([{ name: 'filename', data: 'x.txt' }]);
      const r1 = await post(o, onlyField.payload, onlyField.headers);
      expect(r1.statusCode).toBe(400);
      expect(r1.json().code).toBe('no_file');
      const otherName = multipart([{ name: 'document', filename: 'x.txt', data: 'hello' }]);
      const r2 = await post(o, otherName.payload, otherName.headers);
      expect(r2.statusCode).toBe(400);
      expect(r2.json().code).toBe('no_file');
      const empty = multipart([]);
      const r3 = await post(o, empty.payload, empty.headers);
      expect(r3.statusCode).toBe(400);
      expect(r3.json().code).toBe('no_file');
      expect(stagingFiles()).toEqual([]);
    });

    it('refuses two files with 400 too_many_files and stores neither', async () => {
      const o = await newOrg(app);
      const body = multipart([
        { name: 'file', filename: 'one.txt', data: randomBytes(1000) },
        { name: 'file', filename: 'two.txt', data: randomBytes(1000) },
      ]);
      const res = await post(o, body.payload, body.headers);
      expect(res.statusCode).toBe(400);
      expect(res.json().code).toBe('too_many_files');
      expect(await countRows(app, o.tid)).toEqual({ files: 0, documents: 0 });
      expect(tenantFiles(o.tid)).toEqual([]);
      expect(stagingFiles()).toEqual([]);
      expect(await usedBytes(app, o.tid)).toBe(0);
    });

    it.each([
      ['application/json', JSON.stringify({ file: 'abc' })],
      ['text/plain', 'just text'],
      ['application/x-www-form-urlencoded', 'file=abc'],
    ])('refuses a %s body with 415 problem+json', async (type, body) => {
      const o = await newOrg(app);
      const res = await post(o, body, { 'content-type': type });
      expect(res.statusCode).toBe(415);
      expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
      expect(res.json().status).toBe(415);
    });

    it('refuses a truncated multipart body with 400 and stores nothing', async () => {
      const o = await newOrg(app);
      const body = multipart([{ name: 'file', filename: 'cut.bin', data: randomBytes(200_000) }]);
      const cut = body.payload.subarray(0, 150_000);
      const res = await post(o, cut, body.headers);
      expect(res.statusCode).toBe(400);
      expect(res.json().code).toBe('incomplete_upload');
      expect(await countRows(app, o.tid)).toEqual({ files: 0, documents: 0 });
      expect(tenantFiles(o.tid)).toEqual([]);
      expect(stagingFiles()).toEqual([]);
      expect(await usedBytes(app, o.tid)).toBe(0);
    });

    it('refuses a body cut right after the file (no closing boundary) with 400', async () => {
      const o = await newOrg(app);
      const body = multipart([{ name: 'file', filename: 'cut.bin', data: randomBytes(5000) }]);
      const cut = body.payload.subarray(0, body.payload.length - 10);
      const res = await post(o, cut, body.headers);
      expect(res.statusCode).toBe(400);
      expect(await countRows(app, o.tid)).toEqual({ files: 0, documents: 0 });
      expect(stagingFiles()).toEqual([]);
    });

    it('refuses multipart without a boundary with 400', async () => {
      const o = await newOrg(app);
      const res = await post(o, 'whatever', { 'content-type': 'multipart/form-data' });
      expect(res.statusCode).toBe(400);
      expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
    });

    it('leaves nothing behind when the client aborts mid-upload (real HTTP)', async () => {
      const o = await newOrg(app);
      await app.listen({ port: 0, host: '127.0.0.1' });
      const { port } = app.server.address() as AddressInfo;
      const boundary = 'abortboundary';
      await new Promise<void>((resolve) => {
        const req = http.request({
          host: '127.0.0.1', port, method: 'POST', path: `/api/tenants/${o.tid}/documents`,
          headers: { ...o.admin.auth, 'content-type': `multipart/form-data; boundary=${boundary}`, 'content-length': String(1024 * 1024) },
        });
        req.on('error', () => resolve());
        req.write(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`);
        req.write(randomBytes(300_000), () => setTimeout(() => { req.destroy(); resolve(); }, 200));
      });
      // Give the server a moment to notice and clean up.
      for (let i = 0; i < 50 && stagingFiles().length > 0; i++) await new Promise((r) => setTimeout(r, 50));
      expect(stagingFiles()).toEqual([]);
      expect(await countRows(app, o.tid)).toEqual({ files: 0, documents: 0 });
      expect(await usedBytes(app, o.tid)).toBe(0);
    });
  });

  describe('roles and tenants', () => {
    it('refuses an upload from a viewer (403) and accepts one from a user', async () => {
      const viewer = await member(app, org.tid, 'viewer');
      const res = await upload(app, viewer, org.tid, 'x');
      expect(res.statusCode).toBe(403);
      expect(res.json().code).toBe('insufficient_role');
      const user = await member(app, org.tid, 'user');
      expect((await upload(app, user, org.tid, 'y')).statusCode).toBe(201);
    });

    it('answers 404 for a tenant the caller is not a member of, and 401 without credentials', async () => {
      const outsider = await signUp(app, { organization_name: `Outsider ${Date.now()}` });
      const res = await upload(app, outsider, org.tid, 'x');
      expect(res.statusCode).toBe(404);
      const body = multipart([{ name: 'file', filename: 'a.txt', data: 'x' }]);
      const anon = await app.inject({ method: 'POST', url: `/api/tenants/${org.tid}/documents`, headers: body.headers, payload: body.payload });
      expect(anon.statusCode).toBe(401);
    });

    it('records the events in the tenant outbox', async () => {
      const o = await newOrg(app);
      await upload(app, o.admin, o.tid, 'evented');
      expect(await outboxTopics(app, o.tid)).toEqual(expect.arrayContaining(['validate_document', 'document.uploaded']));
    });
  });
});
