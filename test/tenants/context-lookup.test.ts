/**
 * Routes under /api/tenants/:tid read the caller's membership in the same
 * query as the session (src/auth/service.ts, `+tenant` lookups), and
 * tenantContext uses that instead of a query of its own. These tests pin what
 * that shortcut must keep: the same answers as the separate query (member,
 * non-member, unknown, malformed, soft-deleted, role changed, removed), for
 * bearer and cookie, and no second membership query.
 */
import crypto from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildTestApp, dbModes, signUp, uniqueEmail, type Session, type TestApp } from '../helpers/app.js';
import { addMember, createTenant } from './helpers.js';

describe.each(dbModes())('membership read with the session (%s)', (mode) => {
  let t: TestApp;
  let admin: Session;
  let viewer: Session;
  let outsider: Session;
  let tid: string;

  beforeAll(async () => {
    t = await buildTestApp({ mode });
    admin = await signUp(t.app);
    viewer = await signUp(t.app, { email: uniqueEmail('viewer') });
    outsider = await signUp(t.app, { email: uniqueEmail('outsider') });
    tid = (await createTenant(t.app, admin.auth)).id;
    await addMember(t.app, admin.auth, tid, viewer.email, 'viewer');
  });
  afterAll(async () => t?.close());

  const get = (who: Session, url: string, via: 'bearer' | 'cookie' = 'bearer') =>
    t.app.inject({
      method: 'GET', url,
      ...(via === 'bearer' ? { headers: who.auth } : { cookies: { session: who.cookie } }),
    });

  it('answers a member from the session query alone, by bearer and by cookie', async () => {
    const spy = vi.spyOn(t.app, 'resolveTenant');
    try {
      for (const via of ['bearer', 'cookie'] as const) {
        const res = await get(viewer, `/api/tenants/${tid}/documents`, via);
        expect(res.statusCode, res.body).toBe(200);
        const upper = await get(viewer, `/api/tenants/${tid.toUpperCase()}/documents`, via);
        expect(upper.statusCode, upper.body).toBe(200);
      }
      expect(spy).not.toHaveBeenCalled();
    } finally {
      spy.mockRestore();
    }
  });

  it('takes the role from it: a viewer is refused an upload (403), an admin may read the audit log', async () => {
    const up = await t.app.inject({
      method: 'POST', url: `/api/tenants/${tid}/documents`, headers: { ...viewer.auth, 'content-type': 'multipart/form-data; boundary=x' },
      payload: '--x\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhi\r\n--x--\r\n',
    });
    expect(up.statusCode, up.body).toBe(403);
    expect(up.json().code).toBe('insufficient_role');
    expect((await get(admin, `/api/tenants/${tid}/audit`)).statusCode).toBe(200);
    expect((await get(viewer, `/api/tenants/${tid}/audit`)).statusCode).toBe(403);
  });

  it('gives 404 to a non-member, for an unknown tenant and for a malformed id, as before', async () => {
    for (const url of [`/api/tenants/${tid}/documents`, `/api/tenants/${crypto.randomUUID()}/documents`, '/api/tenants/not-a-uuid/documents']) {
      const res = await get(outsider, url);
      expect(res.statusCode, url).toBe(404);
      expect(res.json().code).toBe('tenant_not_found');
    }
  });

  it('sees a role change and a removal at the next request', async () => {
    const member = await signUp(t.app, { email: uniqueEmail('member') });
    const m = await addMember(t.app, admin.auth, tid, member.email, 'viewer');
    const userId = m.user_id ?? member.userId;
    const url = `/api/tenants/${tid}/documents`;
    expect((await get(member, url)).statusCode).toBe(200);
    expect((await get(member, `/api/tenants/${tid}/audit`)).statusCode).toBe(403);
    const promote = await t.app.inject({ method: 'PUT', url: `/api/tenants/${tid}/users/${userId}`, headers: admin.auth, payload: { role: 'admin' } });
    expect(promote.statusCode, promote.body).toBe(200);
    expect((await get(member, `/api/tenants/${tid}/audit`)).statusCode).toBe(200);
    const remove = await t.app.inject({ method: 'DELETE', url: `/api/tenants/${tid}/users/${userId}`, headers: admin.auth });
    expect(remove.statusCode, remove.body).toBeLessThan(300);
    const after = await get(member, url);
    expect(after.statusCode).toBe(404);
    expect(after.json().code).toBe('tenant_not_found');
  });

  it('keeps a soft-deleted tenant closed to its data but open to its admin settings', async () => {
    const other = (await createTenant(t.app, admin.auth)).id;
    const del = await t.app.inject({ method: 'DELETE', url: `/api/tenants/${other}`, headers: admin.auth });
    expect(del.statusCode, del.body).toBeLessThan(300);
    const docs = await get(admin, `/api/tenants/${other}/documents`);
    expect(docs.statusCode).toBe(404);
    expect(docs.json().code).toBe('tenant_inactive');
    const settings = await get(admin, `/api/tenants/${other}`);
    expect(settings.statusCode, settings.body).toBe(200);
    expect(settings.json().is_active).toBe(false);
  });

  it('still refuses a revoked session before looking at any membership', async () => {
    const s = await signUp(t.app, { email: uniqueEmail('leaver') });
    await addMember(t.app, admin.auth, tid, s.email, 'user');
    expect((await get(s, `/api/tenants/${tid}/documents`)).statusCode).toBe(200);
    const out = await t.app.inject({ method: 'POST', url: '/api/auth/logout', headers: s.auth });
    expect(out.statusCode).toBeLessThan(300);
    for (const via of ['bearer', 'cookie'] as const) {
      const res = await get(s, `/api/tenants/${tid}/documents`, via);
      expect(res.statusCode).toBe(401);
    }
  });
});
