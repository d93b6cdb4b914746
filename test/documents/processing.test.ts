/**
 * Upload -> background validation (src/jobs, `validate_document`) -> download,
 * end to end with the job system's drain(): the seed defects that only show
 * after processing (quota counted twice, a curl-sent .csv refused).
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildTestApp, dbModes, type TestApp } from '../helpers/app.js';
import { newOrg, quietJobs, setQuotaMb, upload, usedBytes } from './helpers.js';

describe.each(dbModes())('uploads through processing on %s', (mode) => {
  let t: TestApp;
  let app: FastifyInstance;
  let drain: () => Promise<unknown>;

  beforeAll(async () => {
    t = await buildTestApp({ mode });
    app = t.app;
    await quietJobs(app);
    drain = () => (app as any).jobs.drain({ timeoutMs: 20_000 });
  });
  afterAll(async () => t?.close());

  const doc = async (tid: string, id: string, auth: Record<string, string>) =>
    (await app.inject({ method: 'GET', url: `/api/tenants/${tid}/documents/${id}`, headers: auth })).json();

  it('keeps a 0.57 MB file under a 1 MB quota accepted after validation (quota counted once)', async () => {
    const o = await newOrg(app, 'Processing');
    await setQuotaMb(app, o.tid, 1);
    const bytes = randomBytes(Math.round(0.57 * 1024 * 1024));
    const res = await upload(app, o.admin, o.tid, bytes, { filename: 'blob.bin', contentType: 'application/octet-stream' });
    expect(res.statusCode).toBe(201);
    await drain();
    const d = await doc(o.tid, res.json().id, o.admin.auth);
    expect(d).toMatchObject({ status: 'ready', error_message: null });
    expect(await usedBytes(app, o.tid)).toBe(bytes.length);
  });

  it.each(['text/csv', 'application/octet-stream'])('validates a .csv sent as %s and serves it', async (type) => {
    const o = await newOrg(app);
    const csv = 'id,name,email\n1,Ada,ada@example.com\n2,Grace,grace@example.com\n';
    const res = await upload(app, o.admin, o.tid, csv, { filename: 'people.csv', contentType: type, url: '/api/files/upload' });
    expect(res.statusCode).toBe(201);
    await drain();
    const id = res.json().file_id;
    const d = await doc(o.tid, id, o.admin.auth);
    expect(d.status).toBe('ready');
    const dl = await app.inject({ method: 'GET', url: `/api/files/${id}/download`, headers: o.admin.auth });
    expect(dl.statusCode).toBe(200);
    expect(dl.body).toBe(csv);
  });
});
