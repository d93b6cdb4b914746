/**
 * The audit trail: successful changes under /api/tenants/:tid are recorded
 * (who, what, when, from which IP) through audit.log events and the consumer;
 * GET /api/tenants/:tid/audit is for the tenant's admins only.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import { buildTestApp, dbModes, signUp, type TestApp } from '../helpers/app.js';
import { processPendingJobs } from '../../src/jobs/index.js';
import { member, upload } from '../documents/helpers.js';
import { newOrg, type Org } from '../jobs/helpers.js';

describe.each(dbModes())('audit trail on %s', (mode) => {
  let t: TestApp;
  let app: FastifyInstance;
  let org: Org;
  beforeAll(async () => {
    t = await buildTestApp({ mode });
    app = t.app;
    org = await newOrg(app, 'Audit');
  });
  afterAll(async () => t?.close());

  const audit = (auth: Record<string, string>, query = '') =>
    app.inject({ method: 'GET', url: `/api/tenants/${org.tenant.id}/audit${query}`, headers: auth });

  it('records an upload with the user, route, resource and client IP, readable by admins, newest first', async () => {
    const res = await app.inject({
      method: 'POST',
      url: `/api/tenants/${org.tenant.id}/documents`,
      remoteAddress: '198.51.100.23',
      headers: { ...org.session.auth, 'user-agent': 'audit-test/1.0', ...multipartHeaders },
      payload: multipartBody,
    });
    expect(res.statusCode).toBe(201);
    const del = await app.inject({ method: 'DELETE', url: `/api/tenants/${org.tenant.id}/documents/${res.json().id}`, headers: org.session.auth });
    expect(del.statusCode).toBe(204);
    await processPendingJobs(app);

    const list = await audit(org.session.auth);
    expect(list.statusCode).toBe(200);
    const body = list.json();
    expect(body.total).toBeGreaterThanOrEqual(2);
    const [latest, upload] = body.entries;
    expect(latest).toMatchObject({ action: 'DELETE /api/tenants/:tid/documents/:id', resource_type: 'documents', resource_id: res.json().id });
    expect(upload).toMatchObject({
      action: 'POST /api/tenants/:tid/documents',
      user_id: org.session.userId,
      actor_email: org.session.email,
      ip: '198.51.100.23',
      user_agent: 'audit-test/1.0',
      resource_type: 'documents',
      details: { status_code: 201 },
    });
    expect(Date.parse(upload.occurred_at)).toBeLessThanOrEqual(Date.parse(latest.occurred_at));

    const filtered = (await audit(org.session.auth, `?action=${encodeURIComponent('POST /api/tenants/:tid/documents')}`)).json();
    expect(filtered.entries.every((e: any) => e.action === 'POST /api/tenants/:tid/documents')).toBe(true);
  });

  it('does not record failed requests or reads', async () => {
    await processPendingJobs(app);
    const before = (await audit(org.session.auth)).json().total;
    await app.inject({ method: 'GET', url: `/api/tenants/${org.tenant.id}/documents`, headers: org.session.auth });
    await upload(app, org.session, org.tenant.id, Buffer.alloc(0), { filename: 'empty.txt' }); // 400
    await processPendingJobs(app);
    expect((await audit(org.session.auth)).json().total).toBe(before);
  });

  it('is 403 for members who are not admins, 404 for non-members, 401 without credentials', async () => {
    const user = await member(app, org.tenant.id, 'user');
    expect((await audit(user.auth)).statusCode).toBe(403);
    const stranger = await signUp(app);
    expect((await audit(stranger.auth)).statusCode).toBe(404);
    expect((await app.inject({ method: 'GET', url: `/api/tenants/${org.tenant.id}/audit` })).statusCode).toBe(401);
  });

  it('is append-only', async () => {
    await expect(sql`UPDATE audit_log SET action = 'tampered'`.execute(app.db)).rejects.toThrow(/append-only/);
    await expect(sql`DELETE FROM audit_log`.execute(app.db)).rejects.toThrow(/append-only/);
  });
});

const boundary = '----auditboundary';
const multipartHeaders = { 'content-type': `multipart/form-data; boundary=${boundary}` };
const multipartBody = Buffer.from(
  `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Type: text/plain\r\n\r\naudited\r\n--${boundary}--\r\n`,
);
