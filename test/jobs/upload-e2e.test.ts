/**
 * Through the HTTP API: an upload is answered `pending`, validated in the
 * background, and reads back `ready` (or `failed` with the reason). Embedded
 * runner on every database mode; BullMQ with an in-process worker when Redis is
 * available; a dedicated tenant's database on PostgreSQL.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildTestApp, dbModes, type TestApp } from '../helpers/app.js';
import { HAS_PG, HAS_REDIS } from '../helpers/env.js';
import { processPendingJobs } from '../../src/jobs/index.js';
import { upload } from '../documents/helpers.js';
import { closeWithTenantDatabases, createTenant } from '../tenants/helpers.js';
import { elfBytes, newOrg, outboxRows, PNG_1PX, waitFor, type Org } from './helpers.js';

async function getDocument(app: FastifyInstance, org: Org, id: string) {
  const res = await app.inject({ method: 'GET', url: `/api/tenants/${org.tenant.id}/documents/${id}`, headers: org.session.auth });
  expect(res.statusCode).toBe(200);
  return res.json();
}

describe.each(dbModes())('upload -> validation -> ready, over HTTP (embedded runner, %s)', (mode) => {
  let t: TestApp;
  let app: FastifyInstance;
  let org: Org;
  beforeAll(async () => {
    t = await buildTestApp({ mode });
    app = t.app;
    org = await newOrg(app, 'E2E');
  });
  afterAll(async () => t?.close());

  it('a PNG upload becomes ready and downloadable; an ELF named .png fails with the reason', async () => {
    const good = await upload(app, org.session, org.tenant.id, PNG_1PX, { filename: 'pixel.png', contentType: 'image/png' });
    const bad = await upload(app, org.session, org.tenant.id, elfBytes(), { filename: 'cat.png', contentType: 'image/png' });
    expect(good.statusCode).toBe(201);
    expect(good.json().status).toBe('pending');
    expect(bad.json().status).toBe('pending');

    await processPendingJobs(app);

    const g = await getDocument(app, org, good.json().id);
    expect(g).toMatchObject({ status: 'ready', error_message: null });
    expect(g.processed_at).toEqual(expect.any(String));
    const dl = await app.inject({ method: 'GET', url: `/api/tenants/${org.tenant.id}/documents/${g.id}/download`, headers: org.session.auth });
    expect(dl.statusCode).toBe(200);
    expect(dl.rawPayload.equals(PNG_1PX)).toBe(true);

    const b = await getDocument(app, org, bad.json().id);
    expect(b.status).toBe('failed');
    expect(b.error_message).toMatch(/declared image\/png but the content is application\/x-elf/);
    const events = (await outboxRows(app, org, 'event')).filter((r) => r.topic === 'document.processed');
    expect(events.map((e) => e.payload.data.document_id).sort()).toEqual([g.id, b.id].sort());
  });
});

describe.skipIf(!HAS_REDIS)('upload -> BullMQ worker -> ready, over HTTP', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp({ mode: HAS_PG ? 'postgres' : 'pglite', redis: true });
  });
  afterAll(async () => {
    await t?.app.jobs.stop();
    await t?.close();
  });

  it('is processed by a worker with no explicit drain', async () => {
    const { app } = t;
    const org = await newOrg(app, 'E2E-Redis');
    await app.jobs.start('worker', { pollMs: 20 });
    const res = await upload(app, org.session, org.tenant.id, 'a,b\n1,2\n', { filename: 'data.csv', contentType: 'text/csv' });
    expect(res.statusCode).toBe(201);
    const doc = await waitFor(() => getDocument(app, org, res.json().id), (d) => d.status !== 'pending');
    expect(doc).toMatchObject({ status: 'ready', error_message: null });
  });
});

describe.skipIf(!HAS_PG)('a dedicated tenant database (PostgreSQL)', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp({ mode: 'postgres' });
  });
  afterAll(async () => closeWithTenantDatabases(t));

  it('is covered by the relay and the runner: its upload is validated and its events published', async () => {
    const { app } = t;
    const base = await newOrg(app, 'Owner');
    const created = await createTenant(app, base.session.auth, { isolation: 'dedicated' });
    const tenant = await app.db
      .selectFrom('tenants')
      .select(['id', 'isolation', 'db_server', 'db_name', 'storage_quota_mb'])
      .where('id', '=', created.id)
      .executeTakeFirstOrThrow();
    expect(tenant.isolation).toBe('dedicated');
    const org: Org = { session: base.session, tenant };
    const res = await upload(app, org.session, tenant.id, PNG_1PX, { filename: 'd.png', contentType: 'image/png' });
    expect(res.statusCode).toBe(201);
    app.jobs.sources.invalidate();
    expect((await app.jobs.sources.list()).map((s) => s.key)).toContain(`tenant-${tenant.id}`);

    await processPendingJobs(app);
    expect(await getDocument(app, org, res.json().id)).toMatchObject({ status: 'ready' });
    const rows = await outboxRows(app, org); // the dedicated database's outbox
    expect(rows.some((r) => r.topic === 'validate_document')).toBe(true);
    expect(rows.filter((r) => r.kind === 'event').every((r) => r.published_at !== null)).toBe(true);
  });
});
