/**
 * Reading, listing, changing and deleting documents and files; downloads,
 * ranges and signed links — on every database mode, local-disk storage.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { PGlite } from '@electric-sql/pglite';
import { buildTestApp, dbModes, signUp, type TestApp } from '../helpers/app.js';
import { fileKey, signDownload } from '../../src/storage/index.js';
import type { Session } from '../helpers/app.js';
import {
  countRows, markReady, member, newOrg, outboxTopics, quietJobs, sha256, tenantRef, upload, usedBytes, type Org,
} from './helpers.js';

describe.each(dbModes())('documents on %s', (mode) => {
  let t: TestApp;
  let app: FastifyInstance;
  let uploadDir: string;

  beforeAll(async () => {
    t = await buildTestApp({ mode });
    app = t.app;
    await quietJobs(app);
    uploadDir = t.config.uploadFolder;
  });
  afterAll(async () => t?.close());

  const get = (s: Session, url: string, headers: Record<string, string> = {}) =>
    app.inject({ method: 'GET', url, headers: { ...s.auth, ...headers } });

  async function uploadOk(o: { tid: string }, s: Session, data: Buffer | string, filename = 'doc.txt', contentType = 'text/plain') {
    const res = await upload(app, s, o.tid, data, { filename, contentType });
    expect(res.statusCode).toBe(201);
    return res.json();
  }

  describe('list', () => {
    let o: Org;
    const names: string[] = [];
    beforeAll(async () => {
      o = await newOrg(app, 'List');
      const specials = ['100%_done.txt', '100x done.txt', 'Report-Q1.PDF', 'report-q2.pdf', 'notes.txt'];
      for (let i = 0; i < 25; i++) {
        const name = i < specials.length ? specials[i] : `file-${String(i).padStart(2, '0')}.bin`;
        names.push(name);
        await uploadOk(o, o.admin, `content ${i}`, name);
      }
    });

    it('pages newest first with {documents, total, page, per_page, pages}', async () => {
      const res = await get(o.admin, `/api/tenants/${o.tid}/documents?page=1&per_page=10`);
      expect(res.statusCode).toBe(200);
      const body = res.json();
      expect(body).toMatchObject({ total: 25, page: 1, per_page: 10, pages: 3 });
      expect(body.documents).toHaveLength(10);
      expect(body.documents.map((d: any) => d.filename)).toEqual(names.slice().reverse().slice(0, 10));
      const last = (await get(o.admin, `/api/tenants/${o.tid}/documents?page=3&per_page=10`)).json();
      expect(last).toMatchObject({ total: 25, page: 3, pages: 3 });
      expect(last.documents.map((d: any) => d.filename)).toEqual(names.slice(0, 5).reverse());
      const beyond = (await get(o.admin, `/api/tenants/${o.tid}/documents?page=9&per_page=10`)).json();
      expect(beyond).toMatchObject({ total: 25, page: 9, documents: [] });
    });

    it('takes `limit` as an alias of per_page, defaults to 20, and caps at 100 (400 above)', async () => {
      expect((await get(o.admin, `/api/tenants/${o.tid}/documents?limit=7`)).json()).toMatchObject({ per_page: 7, pages: 4 });
      const dflt = (await get(o.admin, `/api/tenants/${o.tid}/documents`)).json();
      expect(dflt).toMatchObject({ per_page: 20, page: 1 });
      expect(dflt.documents).toHaveLength(20);
      const over = await get(o.admin, `/api/tenants/${o.tid}/documents?per_page=101`);
      expect(over.statusCode).toBe(400);
      expect(over.json().code).toBe('validation_error');
      expect((await get(o.admin, `/api/tenants/${o.tid}/documents?page=0`)).statusCode).toBe(400);
    });

    it('filters by case-insensitive filename substring, with LIKE wildcards taken literally', async () => {
      const f = async (q: string) =>
        (await get(o.admin, `/api/tenants/${o.tid}/documents?filename=${encodeURIComponent(q)}`)).json().documents.map((d: any) => d.filename).sort();
      expect(await f('REPORT')).toEqual(['Report-Q1.PDF', 'report-q2.pdf']);
      expect(await f('%')).toEqual(['100%_done.txt']);
      expect(await f('0%_d')).toEqual(['100%_done.txt']);
      expect(await f('_')).toEqual(['100%_done.txt']);
      expect(await f('nothing-like-this')).toEqual([]);
      const res = (await get(o.admin, `/api/tenants/${o.tid}/documents?filename=file-&per_page=5`)).json();
      expect(res).toMatchObject({ total: 20, pages: 4 });
    });

    it('filters by status', async () => {
      const first = (await get(o.admin, `/api/tenants/${o.tid}/documents?filename=notes`)).json().documents[0];
      await markReady(app, o.tid, first.id);
      const ready = (await get(o.admin, `/api/tenants/${o.tid}/documents?status=ready`)).json();
      expect(ready.total).toBe(1);
      expect(ready.documents[0]).toMatchObject({ id: first.id, status: 'ready' });
      expect((await get(o.admin, `/api/tenants/${o.tid}/documents?status=pending`)).json().total).toBe(24);
      expect((await get(o.admin, `/api/tenants/${o.tid}/documents?status=bogus`)).statusCode).toBe(400);
    });

    it('lets viewers read and hides other tenants\' documents', async () => {
      const viewer = await member(app, o.tid, 'viewer');
      expect((await get(viewer, `/api/tenants/${o.tid}/documents`)).json().total).toBe(25);
      const other = await newOrg(app);
      expect((await get(other.admin, `/api/tenants/${other.tid}/documents`)).json()).toMatchObject({ total: 0, documents: [] });
      expect((await get(other.admin, `/api/tenants/${o.tid}/documents`)).statusCode).toBe(404);
    });

    it('runs the same number of queries for a page of 2 and a page of 25 (no query per row)', async () => {
      const count = await countQueries(mode, async () => {
        expect((await get(o.admin, `/api/tenants/${o.tid}/documents?per_page=2`)).json().documents).toHaveLength(2);
      });
      const countBig = await countQueries(mode, async () => {
        expect((await get(o.admin, `/api/tenants/${o.tid}/documents?per_page=25`)).json().documents).toHaveLength(25);
      });
      console.info(`[documents] queries per list request (${mode}): page of 2: ${count}, page of 25: ${countBig}`);
      expect(countBig).toBeLessThanOrEqual(count);
      expect(count).toBeLessThan(12);
      // The seed-001 list too.
      const countOrg = await countQueries(mode, async () => {
        expect((await get(o.admin, `/api/files?limit=25`, { 'x-tenant-id': o.tid })).json().files).toHaveLength(25);
      });
      expect(countOrg).toBeLessThan(14);
    });
  });

  describe('read, change, delete', () => {
    let o: Org;
    let user: Session;
    let user2: Session;
    let viewer: Session;
    beforeAll(async () => {
      o = await newOrg(app, 'Crud');
      user = await member(app, o.tid, 'user');
      user2 = await member(app, o.tid, 'user');
      viewer = await member(app, o.tid, 'viewer');
    });

    it('reads a document; unknown, malformed and other tenants\' ids are 404 document_not_found', async () => {
      const doc = await uploadOk(o, user, 'read me');
      const res = await get(viewer, `/api/tenants/${o.tid}/documents/${doc.id}`);
      expect(res.statusCode).toBe(200);
      expect(res.json()).toEqual(doc);
      for (const id of ['00000000-0000-4000-8000-000000000000', 'not-a-uuid', "1' OR '1'='1"]) {
        const r = await get(o.admin, `/api/tenants/${o.tid}/documents/${encodeURIComponent(id)}`);
        expect(r.statusCode).toBe(404);
        expect(r.json().code).toBe('document_not_found');
      }
      const other = await newOrg(app);
      const theirs = await uploadOk(other, other.admin, 'theirs');
      expect((await get(o.admin, `/api/tenants/${o.tid}/documents/${theirs.id}`)).json().code).toBe('document_not_found');
      expect((await get(o.admin, `/api/tenants/${other.tid}/documents/${theirs.id}`)).statusCode).toBe(404);
    });

    it('renames (sanitized) and retypes own documents; others\' are 403 for users, fine for admins; viewers 403', async () => {
      const doc = await uploadOk(o, user, 'rename me', 'old.txt');
      const put = (s: Session, body: object) =>
        app.inject({ method: 'PUT', url: `/api/tenants/${o.tid}/documents/${doc.id}`, headers: s.auth, payload: body });
      const mine = await put(user, { filename: '../new name.txt', mime_type: 'Text/Markdown' });
      expect(mine.statusCode).toBe(200);
      expect(mine.json()).toMatchObject({ id: doc.id, filename: 'new name.txt', mime_type: 'text/markdown', file_id: doc.file_id });
      expect((await put(user2, { filename: 'x.txt' })).json()).toMatchObject({ status: 403, code: 'not_owner' });
      expect((await put(viewer, { filename: 'x.txt' })).json()).toMatchObject({ status: 403, code: 'insufficient_role' });
      expect((await put(o.admin, { filename: 'by-admin.txt' })).json().filename).toBe('by-admin.txt');
      expect((await put(user, { mime_type: 'nonsense' })).statusCode).toBe(400);
      expect((await put(user, { filename: '' })).statusCode).toBe(400);
      expect((await put(user, { size: 1 })).json()).toMatchObject({ status: 400, code: 'unknown_field', fields: ['size'] });
      expect(await outboxTopics(app, o.tid)).toContain('document.updated');
    });

    it('deletes: users their own only (403 otherwise), viewers never; the last document takes the file, bytes and quota', async () => {
      const bytes = randomBytes(4000);
      const a = await uploadOk(o, user, bytes, 'a.bin');
      const b = await uploadOk(o, user2, bytes, 'b.bin'); // same file
      const key = path.join(uploadDir, fileKey(o.tid, sha256(bytes)));
      const used = await usedBytes(app, o.tid);
      const del = (s: Session, id: string) => app.inject({ method: 'DELETE', url: `/api/tenants/${o.tid}/documents/${id}`, headers: s.auth });

      expect((await del(user2, a.id)).json()).toMatchObject({ status: 403, code: 'not_owner' });
      expect((await del(viewer, a.id)).statusCode).toBe(403);
      expect((await del(user, a.id)).statusCode).toBe(204);
      expect((await del(user, a.id)).statusCode).toBe(404);
      expect(fs.existsSync(key)).toBe(true); // b still uses it
      expect(await usedBytes(app, o.tid)).toBe(used);

      expect((await del(o.admin, b.id)).statusCode).toBe(204); // admin deletes anyone's
      expect(fs.existsSync(key)).toBe(false);
      expect(await usedBytes(app, o.tid)).toBe(used - bytes.length);
      expect((await get(o.admin, `/api/tenants/${o.tid}/files/${a.file_id}`)).statusCode).toBe(404);
      const topics = await outboxTopics(app, o.tid);
      expect(topics.filter((x) => x === 'document.deleted').length).toBeGreaterThanOrEqual(2);
      expect(topics).toContain('file.deleted');

      // The same bytes again: stored anew.
      const c = await uploadOk(o, user, bytes, 'c.bin');
      expect(c.file_id).not.toBe(a.file_id);
      expect(fs.existsSync(key)).toBe(true);
      expect(await usedBytes(app, o.tid)).toBe(used);
    });
  });

  describe('files API', () => {
    it('lists files with reference counts and stats, shows one with its documents, deletes only unreferenced ones (admin)', async () => {
      const o = await newOrg(app, 'Files');
      const user = await member(app, o.tid, 'user');
      const x = randomBytes(1000);
      const y = randomBytes(3000);
      const d1 = await uploadOk(o, o.admin, x, 'x1.bin');
      await uploadOk(o, user, x, 'x2.bin');
      const d3 = await uploadOk(o, o.admin, y, 'y.bin');

      const list = (await get(user, `/api/tenants/${o.tid}/files`)).json();
      expect(list).toMatchObject({ total: 2, page: 1, per_page: 20, pages: 1, stats: { file_count: 2, total_bytes: 4000 } });
      expect(list.files[0]).toMatchObject({ id: d3.file_id, sha256: sha256(y), size: 3000, document_count: 1 });
      expect(list.files[1]).toMatchObject({ id: d1.file_id, size: 1000, document_count: 2 });
      expect(list.files[1].md5).toMatch(/^[0-9a-f]{32}$/);

      const one = (await get(user, `/api/tenants/${o.tid}/files/${d1.file_id}`)).json();
      expect(one).toMatchObject({ id: d1.file_id, document_count: 2 });
      expect(one.documents.map((d: any) => d.filename).sort()).toEqual(['x1.bin', 'x2.bin']);
      expect((await get(user, `/api/tenants/${o.tid}/files/nope`)).json().code).toBe('file_not_found');

      const del = (s: Session, id: string) => app.inject({ method: 'DELETE', url: `/api/tenants/${o.tid}/files/${id}`, headers: s.auth });
      expect((await del(user, d3.file_id)).statusCode).toBe(403);
      const inUse = await del(o.admin, d3.file_id);
      expect(inUse.statusCode).toBe(409);
      expect(inUse.json().code).toBe('file_in_use');

      // Make y unreferenced behind the API's back (as a crash could), then delete it.
      const ref = await tenantRef(app, o.tid);
      await app.tenantDbs.withTenant(ref, (trx) => trx.deleteFrom('documents').where('id', '=', d3.id).execute());
      const used = await usedBytes(app, o.tid);
      expect((await del(o.admin, d3.file_id)).statusCode).toBe(204);
      expect(fs.existsSync(path.join(uploadDir, fileKey(o.tid, sha256(y))))).toBe(false);
      expect(await usedBytes(app, o.tid)).toBe(used - 3000);
      expect((await del(o.admin, d3.file_id)).statusCode).toBe(404);
      expect(await countRows(app, o.tid)).toEqual({ files: 1, documents: 2 });
    });
  });

  describe('download', () => {
    let o: Org;
    let bytes: Buffer;
    let doc: any;
    beforeAll(async () => {
      o = await newOrg(app, 'Download');
      bytes = randomBytes(10_000);
      const res = await upload(app, o.admin, o.tid, bytes, {
        filename: 'r.pdf', contentType: 'application/pdf', extra: [{ name: 'filename', data: 'Résumé "final".pdf' }],
      });
      doc = res.json();
    });
    const url = () => `/api/tenants/${o.tid}/documents/${doc.id}/download`;

    it('is 409 not_ready while pending (and failed)', async () => {
      const res = await get(o.admin, url());
      expect(res.statusCode).toBe(409);
      expect(res.json()).toMatchObject({ code: 'not_ready' });
      expect((await get(o.admin, `${url()}-url`)).json().code).toBe('not_ready');
    });

    it('streams the bytes with attachment disposition, type, length, ETag and Accept-Ranges once ready', async () => {
      await markReady(app, o.tid, doc.id);
      const viewer = await member(app, o.tid, 'viewer');
      const res = await get(viewer, url());
      expect(res.statusCode).toBe(200);
      expect(res.rawPayload.equals(bytes)).toBe(true);
      expect(res.headers['content-type']).toBe('application/pdf');
      expect(res.headers['content-length']).toBe(String(bytes.length));
      expect(res.headers.etag).toBe(`"${sha256(bytes)}"`);
      expect(res.headers['accept-ranges']).toBe('bytes');
      expect(res.headers['content-disposition']).toBe(
        `attachment; filename="Resume _final_.pdf"; filename*=UTF-8''R%C3%A9sum%C3%A9%20_final_.pdf`,
      );
      expect(res.headers['x-content-type-options']).toBe('nosniff');
    });

    it('answers ranges with 206 and Content-Range; unsatisfiable or malformed ranges with 416', async () => {
      const r1 = await get(o.admin, url(), { range: 'bytes=0-9' });
      expect(r1.statusCode).toBe(206);
      expect(r1.headers['content-range']).toBe(`bytes 0-9/${bytes.length}`);
      expect(r1.headers['content-length']).toBe('10');
      expect(r1.rawPayload.equals(bytes.subarray(0, 10))).toBe(true);

      const r2 = await get(o.admin, url(), { range: 'bytes=9990-' });
      expect(r2.statusCode).toBe(206);
      expect(r2.rawPayload.equals(bytes.subarray(9990))).toBe(true);

      const r3 = await get(o.admin, url(), { range: 'bytes=-100' });
      expect(r3.headers['content-range']).toBe(`bytes 9900-9999/${bytes.length}`);
      expect(r3.rawPayload.equals(bytes.subarray(9900))).toBe(true);

      const r4 = await get(o.admin, url(), { range: 'bytes=5000-999999' });
      expect(r4.statusCode).toBe(206);
      expect(r4.headers['content-range']).toBe(`bytes 5000-9999/${bytes.length}`);

      for (const range of ['bytes=10000-', 'bytes=20000-30000', 'bytes=9-5', 'bytes=abc', 'bytes=-0', 'bytes=']) {
        const r = await get(o.admin, url(), { range });
        expect(r.statusCode, range).toBe(416);
        expect(r.headers['content-range']).toBe(`bytes */${bytes.length}`);
        expect(r.json().code).toBe('range_not_satisfiable');
      }
      // Several ranges or another unit: the whole file.
      expect((await get(o.admin, url(), { range: 'bytes=0-1,5-6' })).statusCode).toBe(200);
      expect((await get(o.admin, url(), { range: 'items=0-1' })).statusCode).toBe(200);
      // If-Range with another validator: the whole file.
      expect((await get(o.admin, url(), { range: 'bytes=0-1', 'if-range': '"other"' })).statusCode).toBe(200);
      expect((await get(o.admin, url(), { range: 'bytes=0-1', 'if-range': `"${sha256(bytes)}"` })).statusCode).toBe(206);
    });

    it('answers HEAD with the headers and no body', async () => {
      const res = await app.inject({ method: 'HEAD', url: url(), headers: o.admin.auth });
      expect(res.statusCode).toBe(200);
      expect(res.headers['content-length']).toBe(String(bytes.length));
      expect(res.headers.etag).toBe(`"${sha256(bytes)}"`);
      expect(res.rawPayload.length).toBe(0);
    });

    it('answers 304 to a matching If-None-Match', async () => {
      const res = await get(o.admin, url(), { 'if-none-match': `"${sha256(bytes)}"` });
      expect(res.statusCode).toBe(304);
      expect(res.rawPayload.length).toBe(0);
    });

    it('is 404 for other tenants and unknown ids', async () => {
      const other = await newOrg(app);
      expect((await get(other.admin, url())).statusCode).toBe(404);
      expect((await get(o.admin, `/api/tenants/${o.tid}/documents/00000000-0000-4000-8000-000000000000/download`)).json().code).toBe('document_not_found');
    });

    describe('signed links (local storage)', () => {
      afterEach(() => { app.config.publicBaseUrl = undefined; });

      it('gives a URL that downloads without credentials until it expires', async () => {
        const res = await get(o.admin, `${url()}-url?expires_in=60`);
        expect(res.statusCode).toBe(200);
        const { url: link, expires_at } = res.json();
        expect(Math.abs(new Date(expires_at).getTime() - (Date.now() + 60_000))).toBeLessThan(5000);
        const u = new URL(link);
        expect(u.pathname).toBe(`/api/downloads/${o.tid}/${doc.id}`);
        expect(u.origin).toBe('http://localhost');
        const dl = await app.inject({ method: 'GET', url: u.pathname + u.search });
        expect(dl.statusCode).toBe(200);
        expect(dl.rawPayload.equals(bytes)).toBe(true);
        expect(dl.headers['content-disposition']).toMatch(/^attachment; /);
        const part = await app.inject({ method: 'GET', url: u.pathname + u.search, headers: { range: 'bytes=1-2' } });
        expect(part.statusCode).toBe(206);
        expect(part.rawPayload.equals(bytes.subarray(1, 3))).toBe(true);
      });

      it('builds the URL on PUBLIC_BASE_URL when configured', async () => {
        app.config.publicBaseUrl = 'https://files.example.com/';
        const { url: link } = (await get(o.admin, `${url()}-url`)).json();
        expect(link.startsWith(`https://files.example.com/api/downloads/${o.tid}/${doc.id}?token=`)).toBe(true);
      });

      it('refuses expires_in over 86400 or under 1 (400)', async () => {
        expect((await get(o.admin, `${url()}-url?expires_in=86401`)).statusCode).toBe(400);
        expect((await get(o.admin, `${url()}-url?expires_in=0`)).statusCode).toBe(400);
        expect((await get(o.admin, `${url()}-url?expires_in=86400`)).statusCode).toBe(200);
      });

      it('refuses expired (403 link_expired), tampered or misapplied tokens (403 invalid_link)', async () => {
        const secret = app.config.secretKey;
        const past = signDownload(secret, { tenantId: o.tid, documentId: doc.id, expiresAt: Math.floor(Date.now() / 1000) - 1 });
        const expired = await app.inject({ method: 'GET', url: `/api/downloads/${o.tid}/${doc.id}?token=${past}` });
        expect(expired.statusCode).toBe(403);
        expect(expired.json().code).toBe('link_expired');

        const good = signDownload(secret, { tenantId: o.tid, documentId: doc.id, expiresAt: Math.floor(Date.now() / 1000) + 600 });
        const tampered = good.slice(0, -2) + (good.endsWith('AA') ? 'BB' : 'AA');
        for (const u of [
          `/api/downloads/${o.tid}/${doc.id}?token=${tampered}`,
          `/api/downloads/${o.tid}/${doc.id}?token=garbage`,
          `/api/downloads/${o.tid}/00000000-0000-4000-8000-000000000000?token=${good}`,
          `/api/downloads/00000000-0000-4000-8000-000000000000/${doc.id}?token=${good}`,
        ]) {
          const r = await app.inject({ method: 'GET', url: u });
          expect(r.statusCode, u).toBe(403);
          expect(r.json().code).toBe('invalid_link');
        }
        expect((await app.inject({ method: 'GET', url: `/api/downloads/${o.tid}/${doc.id}` })).statusCode).toBe(400);
      });

      it('stops working when the document is deleted', async () => {
        const d = await uploadOk(o, o.admin, 'short-lived', 'x.txt');
        await markReady(app, o.tid, d.id);
        const { url: link } = (await get(o.admin, `/api/tenants/${o.tid}/documents/${d.id}/download-url`)).json();
        const u = new URL(link);
        expect((await app.inject({ method: 'GET', url: u.pathname + u.search })).statusCode).toBe(200);
        await app.inject({ method: 'DELETE', url: `/api/tenants/${o.tid}/documents/${d.id}`, headers: o.admin.auth });
        const gone = await app.inject({ method: 'GET', url: u.pathname + u.search });
        expect(gone.statusCode).toBe(404);
      });
    });
  });

  describe('the current-organization API /api/files', () => {
    it('uploads, lists, shows and downloads in the default tenant, answering the seed-001 shapes', async () => {
      const o = await newOrg(app, 'Current');
      const body = randomBytes(2048);
      const up = await upload(app, o.admin, o.tid, body, { url: '/api/files/upload', filename: 'data.csv', contentType: 'text/csv' });
      expect(up.statusCode).toBe(201);
      expect(up.json()).toEqual({ file_id: expect.any(String), filename: 'data.csv', status: 'pending' });
      const id = up.json().file_id;

      const list = (await get(o.admin, '/api/files?page=1&limit=10')).json();
      expect(list).toMatchObject({ total: 1, page: 1, pages: 1 });
      expect(list.files).toEqual([
        { id, filename: 'data.csv', size: 2048, status: 'pending', uploaded_at: expect.any(String), uploaded_by_email: o.admin.email },
      ]);

      const one = (await get(o.admin, `/api/files/${id}`)).json();
      expect(one).toEqual({
        id, filename: 'data.csv', size: 2048, mime_type: 'text/csv', status: 'pending', error_message: null,
        uploaded_at: list.files[0].uploaded_at, processed_at: null, uploaded_by_email: o.admin.email,
      });
      expect((await get(o.admin, `/api/files/${id}/download`)).statusCode).toBe(409);
      await markReady(app, o.tid, id);
      const dl = await get(o.admin, `/api/files/${id}/download`);
      expect(dl.statusCode).toBe(200);
      expect(dl.rawPayload.equals(body)).toBe(true);

      // The same document through the tenant API.
      expect((await get(o.admin, `/api/tenants/${o.tid}/documents/${id}`)).json().filename).toBe('data.csv');
    });

    it('uses X-Tenant-ID when given (a membership, else 404), and hides other organizations\' files', async () => {
      const a = await newOrg(app);
      const b = await newOrg(app);
      const doc = (await upload(app, b.admin, b.tid, 'in b', { url: '/api/files/upload' })).json();
      // a's admin is a viewer in b.
      await app.db.insertInto('memberships').values({ user_id: a.admin.userId, tenant_id: b.tid, role: 'viewer' }).execute();
      expect((await get(a.admin, '/api/files')).json().total).toBe(0); // default tenant: a
      expect((await get(a.admin, `/api/files/${doc.file_id}`)).statusCode).toBe(404);
      expect((await get(a.admin, '/api/files', { 'x-tenant-id': b.tid })).json().total).toBe(1);
      expect((await get(a.admin, `/api/files/${doc.file_id}`, { 'x-tenant-id': b.tid })).statusCode).toBe(200);
      const viewerUpload = await app.inject({
        method: 'POST', url: '/api/files/upload', headers: { ...a.admin.auth, 'x-tenant-id': b.tid, 'content-type': 'multipart/form-data; boundary=x' },
        payload: '--x\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhi\r\n--x--\r\n',
      });
      expect(viewerUpload.statusCode).toBe(403);

      const stranger = await newOrg(app);
      const r = await get(stranger.admin, '/api/files', { 'x-tenant-id': b.tid });
      expect(r.statusCode).toBe(404);
      expect((await get(stranger.admin, '/api/files', { 'x-tenant-id': 'garbage' })).statusCode).toBe(404);
    });

    it('answers 409 no_organization to a user without any organization', async () => {
      const lonely = await signUp(app);
      const res = await get(lonely, '/api/files');
      expect(res.statusCode).toBe(409);
      expect(res.json().code).toBe('no_organization');
      expect((await upload(app, lonely, '', 'x', { url: '/api/files/upload' })).json().code).toBe('no_organization');
    });
  });
});

/** Count the SQL statements sent while `fn` runs (pg clients or the PGlite instance). */
async function countQueries(mode: string, fn: () => Promise<void>): Promise<number> {
  let n = 0;
  const proto: any = mode === 'postgres' ? pg.Client.prototype : PGlite.prototype;
  const methods = mode === 'postgres' ? ['query'] : ['query', 'exec'];
  const originals = methods.map((m) => proto[m]);
  methods.forEach((m, i) => {
    proto[m] = function (this: unknown, ...args: unknown[]) {
      n += 1;
      return originals[i].apply(this, args);
    };
  });
  try {
    await fn();
  } finally {
    methods.forEach((m, i) => { proto[m] = originals[i]; });
  }
  return n;
}
