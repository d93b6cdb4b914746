import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildTestApp, dbModes, logIn, signUp, uniqueEmail, type Session, type TestApp } from '../helpers/app.js';
import { sha256 } from '../../src/auth/tokens.js';
import { addMember, closeWithTenantDatabases, createTenant, orgName, outboxEvents, outboxTopics } from './helpers.js';

const PASSWORD = 'correct horse battery';
const TENANT_KEYS = ['created_at', 'id', 'is_active', 'isolation', 'members', 'name', 'storage_quota_mb', 'storage_used_bytes', 'updated_at'];

describe.each(dbModes())('tenants API on %s', (mode) => {
  let t: TestApp;
  let app: FastifyInstance;
  let admin: Session;

  beforeAll(async () => {
    t = await buildTestApp({ mode, config: { tenantPoolMaxTotal: 6 } });
    app = t.app;
    admin = await signUp(app);
  });
  afterAll(async () => closeWithTenantDatabases(t));

  const req = (method: string, url: string, s: Session | null, payload?: unknown) =>
    app.inject({ method: method as any, url, headers: s?.auth ?? {}, ...(payload === undefined ? {} : { payload: payload as object }) });

  /** A tenant of `admin` with a viewer, a user and a second admin. */
  async function team() {
    const tenant = await createTenant(app, admin.auth);
    const [viewer, user, admin2] = await Promise.all([signUp(app), signUp(app), signUp(app)]);
    await addMember(app, admin.auth, tenant.id, viewer.email, 'viewer');
    await addMember(app, admin.auth, tenant.id, user.email, 'user');
    await addMember(app, admin.auth, tenant.id, admin2.email, 'admin');
    return { tenant, viewer, user, admin2 };
  }

  describe('create and list', () => {
    it('creates a shared tenant with the caller as admin, in the contract shape, with its events', async () => {
      const name = orgName('Create');
      const res = await req('POST', '/api/tenants', admin, { name });
      expect(res.statusCode).toBe(201);
      const body = res.json();
      expect(Object.keys(body).sort()).toEqual(TENANT_KEYS);
      expect(body).toMatchObject({
        name, isolation: 'shared', is_active: true, storage_quota_mb: t.config.storageQuotaMb, storage_used_bytes: 0,
      });
      expect(body.members).toEqual([{ user_id: admin.userId, email: admin.email, role: 'admin', joined_at: expect.any(String) }]);
      expect(new Date(body.created_at).toISOString()).toBe(body.created_at);

      expect(await outboxTopics(app, body.id)).toEqual(['tenant.created', 'member.added']);
      const [created] = await outboxEvents(app, body.id);
      expect(created).toMatchObject({ event_type: 'tenant.created', tenant_id: body.id, user_id: admin.userId, data: { name, isolation: 'shared' } });

      const list = await req('GET', '/api/tenants', admin);
      expect(list.statusCode).toBe(200);
      expect(list.json().tenants).toContainEqual(expect.objectContaining({ id: body.id, name, role: 'admin', is_active: true, isolation: 'shared' }));
      const mine = await req('GET', '/api/users/me/tenants', admin);
      expect(mine.json().tenants).toContainEqual({ id: body.id, name, role: 'admin', is_active: true });
    });

    it('takes a storage quota and trims the name', async () => {
      const name = orgName('Quota');
      const res = await req('POST', '/api/tenants', admin, { name: `  ${name}  `, storage_quota_mb: 5 });
      expect(res.statusCode).toBe(201);
      expect(res.json()).toMatchObject({ name, storage_quota_mb: 5 });
    });

    it('paginates the list of the caller\'s tenants', async () => {
      const s = await signUp(app);
      for (let i = 0; i < 3; i += 1) await createTenant(app, s.auth);
      const p1 = await req('GET', '/api/tenants?per_page=2', s);
      expect(p1.json()).toMatchObject({ total: 3, page: 1, per_page: 2, pages: 2 });
      expect(p1.json().tenants).toHaveLength(2);
      const p2 = await req('GET', '/api/tenants?per_page=2&page=2', s);
      expect(p2.json().tenants).toHaveLength(1);
      expect(p2.json().tenants[0].id).not.toBe(p1.json().tenants[0].id);
    });

    it('refuses a taken name whatever its case (409 organization_exists), and writes no event', async () => {
      const name = orgName('Taken');
      await createTenant(app, admin.auth, { name });
      const changeEvents = () => app.db.selectFrom('outbox').select((eb) => eb.fn.countAll<number>().as('n'))
        .where('topic', '!=', 'audit.log').executeTakeFirstOrThrow();
      const before = await changeEvents();
      const res = await req('POST', '/api/tenants', admin, { name: name.toUpperCase() });
      expect(res.statusCode).toBe(409);
      expect(res.json()).toMatchObject({ code: 'organization_exists', status: 409 });
      const after = await changeEvents();
      expect(Number(after.n)).toBe(Number(before.n));
    });

    it('accepts a 255-character name', async () => {
      const name = `${orgName('Long')} `.padEnd(255, 'x');
      const res = await req('POST', '/api/tenants', admin, { name });
      expect(res.statusCode).toBe(201);
      expect(res.json().name).toBe(name);
    });

    it.each([
      ['a missing name', {}],
      ['a blank name', { name: '   ' }],
      ['an over-long name', { name: 'x'.repeat(256) }],
      ['a name with control characters', { name: 'bad\nname' }],
      ['a name of the wrong type', { name: 42 }],
      ['an unknown isolation', { name: 'Iso', isolation: 'private' }],
      ['a zero quota', { name: 'Q0', storage_quota_mb: 0 }],
      ['a negative quota', { name: 'Qneg', storage_quota_mb: -5 }],
      ['a fractional quota', { name: 'Qfrac', storage_quota_mb: 1.5 }],
      ['a quota given as a string', { name: 'Qstr', storage_quota_mb: '10' }],
    ])('rejects %s with 400 validation_error', async (_label, payload) => {
      const res = await req('POST', '/api/tenants', admin, payload);
      expect(res.statusCode).toBe(400);
      expect(res.json().code).toBe('validation_error');
    });

    it('needs authentication, and the CSRF token with the session cookie', async () => {
      expect((await req('POST', '/api/tenants', null, { name: orgName() })).statusCode).toBe(401);
      expect((await req('GET', '/api/tenants', null)).statusCode).toBe(401);
      const cookie = { cookie: `session=${admin.cookie}` };
      const noCsrf = await app.inject({ method: 'POST', url: '/api/tenants', headers: cookie, payload: { name: orgName() } });
      expect(noCsrf.statusCode).toBe(403);
      const withCsrf = await app.inject({
        method: 'POST', url: '/api/tenants', headers: { ...cookie, 'x-csrf-token': admin.csrfToken }, payload: { name: orgName() },
      });
      expect(withCsrf.statusCode).toBe(201);
    });

    it(`dedicated isolation: ${mode === 'pglite' ? '400 unsupported on the embedded database' : 'provisioned on PostgreSQL'}`, async () => {
      const res = await req('POST', '/api/tenants', admin, { name: orgName('Ded'), isolation: 'dedicated' });
      if (mode === 'pglite') {
        expect(res.statusCode).toBe(400);
        expect(res.json().code).toBe('unsupported');
        expect(res.json().detail).toMatch(/PostgreSQL/);
        expect(app.dedicatedTenants).toBeNull();
      } else {
        expect(res.statusCode).toBe(201);
        expect(res.json()).toMatchObject({ isolation: 'dedicated', is_active: true });
      }
    });
  });

  describe('reading a tenant', () => {
    it('shows the tenant with its members to every member', async () => {
      const { tenant, viewer, user, admin2 } = await team();
      const res = await req('GET', `/api/tenants/${tenant.id}`, viewer);
      expect(res.statusCode).toBe(200);
      expect(Object.keys(res.json()).sort()).toEqual(TENANT_KEYS);
      const members = res.json().members.map((m: any) => [m.email, m.role]);
      expect(members).toEqual(expect.arrayContaining([
        [admin.email, 'admin'], [viewer.email, 'viewer'], [user.email, 'user'], [admin2.email, 'admin'],
      ]));
      expect(members).toHaveLength(4);
    });

    it.each([
      ['a malformed id', 'not-a-uuid'],
      ['a malformed id with SQL', "1' OR '1'='1"],
      ['an unknown id', '00000000-0000-4000-8000-000000000000'],
    ])('answers 404 for %s', async (_label, id) => {
      const res = await req('GET', `/api/tenants/${encodeURIComponent(id)}`, admin);
      expect(res.statusCode).toBe(404);
      expect(res.json().code).toBe('tenant_not_found');
    });

    it('answers 404 (not 403) to a non-member', async () => {
      const tenant = await createTenant(app, admin.auth);
      const stranger = await signUp(app);
      const res = await req('GET', `/api/tenants/${tenant.id}`, stranger);
      expect(res.statusCode).toBe(404);
      expect(res.json().code).toBe('tenant_not_found');
    });
  });

  describe('roles', () => {
    type Action = { label: string; run: (s: Session, ctx: Awaited<ReturnType<typeof team>>) => Promise<number> };
    const actions: Action[] = [
      { label: 'PUT the tenant', run: async (s, c) => (await req('PUT', `/api/tenants/${c.tenant.id}`, s, { storage_quota_mb: 77 })).statusCode },
      { label: 'add a member', run: async (s, c) => (await req('POST', `/api/tenants/${c.tenant.id}/users`, s, { email: (await signUp(app)).email, role: 'viewer' })).statusCode },
      { label: "change a member's role", run: async (s, c) => (await req('PUT', `/api/tenants/${c.tenant.id}/users/${c.viewer.userId}`, s, { role: 'user' })).statusCode },
      { label: 'remove a member', run: async (s, c) => (await req('DELETE', `/api/tenants/${c.tenant.id}/users/${c.viewer.userId}`, s)).statusCode },
      { label: 'invite', run: async (s, c) => (await req('POST', `/api/tenants/${c.tenant.id}/invitations`, s, { email: uniqueEmail('inv'), role: 'user' })).statusCode },
      { label: 'DELETE the tenant', run: async (s, c) => (await req('DELETE', `/api/tenants/${c.tenant.id}`, s)).statusCode },
    ];
    const expected: Record<string, number> = {
      'PUT the tenant': 200, 'add a member': 201, "change a member's role": 200, 'remove a member': 204, invite: 201, 'DELETE the tenant': 204,
    };

    for (const role of ['viewer', 'user'] as const) {
      it.each(actions.map((a) => [a.label, a] as const))(`a ${role} may not %s (403 insufficient_role)`, async (_l, action) => {
        const c = await team();
        const status = await action.run(c[role], c);
        expect(status).toBe(403);
        // Nothing changed.
        const after = await req('GET', `/api/tenants/${c.tenant.id}`, admin);
        expect(after.json()).toMatchObject({ is_active: true, storage_quota_mb: c.tenant.storage_quota_mb });
        expect(after.json().members).toHaveLength(4);
      });
    }

    it.each(actions.map((a) => [a.label, a] as const))('an admin may %s', async (label, action) => {
      const c = await team();
      expect(await action.run(c.admin2, c)).toBe(expected[label]);
    });

    it('a too-low role gets 403 even with an invalid body (the role is checked first)', async () => {
      const c = await team();
      const res = await req('PUT', `/api/tenants/${c.tenant.id}`, c.viewer, { storage_quota_mb: -1 });
      expect(res.statusCode).toBe(403);
    });
  });

  describe('updating', () => {
    it('renames and changes the quota (tenant.updated with the changes)', async () => {
      const tenant = await createTenant(app, admin.auth);
      const name = orgName('Renamed');
      const res = await req('PUT', `/api/tenants/${tenant.id}`, admin, { name, storage_quota_mb: 2048 });
      expect(res.statusCode).toBe(200);
      expect(res.json()).toMatchObject({ id: tenant.id, name, storage_quota_mb: 2048, is_active: true });
      const events = await outboxEvents(app, tenant.id);
      expect(events.at(-1)).toMatchObject({
        event_type: 'tenant.updated', user_id: admin.userId,
        data: { changes: { name, storage_quota_mb: 2048 }, previous: { name: tenant.name, storage_quota_mb: tenant.storage_quota_mb } },
      });
    });

    it('refuses a name another tenant has (409), a zero or negative quota and bad fields (400)', async () => {
      const a = await createTenant(app, admin.auth);
      const b = await createTenant(app, admin.auth);
      const conflict = await req('PUT', `/api/tenants/${b.id}`, admin, { name: a.name.toLowerCase() });
      expect(conflict.statusCode).toBe(409);
      expect(conflict.json().code).toBe('organization_exists');
      for (const body of [{ storage_quota_mb: 0 }, { storage_quota_mb: -1 }, { name: '' }, { name: 'x'.repeat(256) }, { is_active: 'no' }]) {
        const res = await req('PUT', `/api/tenants/${b.id}`, admin, body);
        expect(res.statusCode, JSON.stringify(body)).toBe(400);
      }
      // The isolation cannot change: it is not a field of the update (400 unknown_field, as everywhere).
      const isolation = await req('PUT', `/api/tenants/${b.id}`, admin, { name: b.name, isolation: 'dedicated' });
      expect(isolation.statusCode).toBe(400);
      expect(isolation.json()).toMatchObject({ code: 'unknown_field', fields: ['isolation'] });
      // Keeping its own name is fine.
      const same = await req('PUT', `/api/tenants/${b.id}`, admin, { name: b.name });
      expect(same.statusCode).toBe(200);
      expect(same.json()).toMatchObject({ name: b.name, isolation: 'shared' });
    });
  });

  describe('members', () => {
    it('adds an existing user by email or by id, with events', async () => {
      const tenant = await createTenant(app, admin.auth);
      const [u1, u2] = await Promise.all([signUp(app), signUp(app)]);
      const byEmail = await req('POST', `/api/tenants/${tenant.id}/users`, admin, { email: u1.email.toUpperCase(), role: 'user' });
      expect(byEmail.statusCode).toBe(201);
      expect(byEmail.json()).toMatchObject({ tenant_id: tenant.id, user_id: u1.userId, email: u1.email, role: 'user' });
      const byId = await req('POST', `/api/tenants/${tenant.id}/users`, admin, { user_id: u2.userId, role: 'viewer' });
      expect(byId.statusCode).toBe(201);
      expect(byId.json()).toMatchObject({ user_id: u2.userId, role: 'viewer' });

      // The new member sees the tenant.
      const seen = await req('GET', '/api/users/me/tenants', u1);
      expect(seen.json().tenants).toContainEqual({ id: tenant.id, name: tenant.name, role: 'user', is_active: true });
      const events = await outboxEvents(app, tenant.id);
      expect(events.filter((e) => e.event_type === 'member.added').map((e) => e.data.user_id)).toEqual([admin.userId, u1.userId, u2.userId]);
    });

    it('answers 404 user_not_found, 409 already_member and 400 for bad bodies', async () => {
      const tenant = await createTenant(app, admin.auth);
      const u = await signUp(app);
      const missing = await req('POST', `/api/tenants/${tenant.id}/users`, admin, { email: uniqueEmail('ghost'), role: 'user' });
      expect(missing.statusCode).toBe(404);
      expect(missing.json().code).toBe('user_not_found');
      const missingId = await req('POST', `/api/tenants/${tenant.id}/users`, admin, { user_id: '00000000-0000-4000-8000-000000000000', role: 'user' });
      expect(missingId.json().code).toBe('user_not_found');
      await addMember(app, admin.auth, tenant.id, u.email, 'user');
      const again = await req('POST', `/api/tenants/${tenant.id}/users`, admin, { user_id: u.userId, role: 'admin' });
      expect(again.statusCode).toBe(409);
      expect(again.json().code).toBe('already_member');
      for (const body of [
        { role: 'user' },
        { email: u.email },
        { email: u.email, user_id: u.userId, role: 'user' },
        { email: u.email, role: 'owner' },
        { email: 'not-an-email', role: 'user' },
        { user_id: 'not-a-uuid', role: 'user' },
      ]) {
        const res = await req('POST', `/api/tenants/${tenant.id}/users`, admin, body);
        expect(res.statusCode, JSON.stringify(body)).toBe(400);
        expect(res.json().code).toBe('validation_error');
      }
    });

    it('changes a role and removes a member (member.updated, member.removed); a removed member loses access', async () => {
      const tenant = await createTenant(app, admin.auth);
      const u = await signUp(app);
      await addMember(app, admin.auth, tenant.id, u.email, 'viewer');
      const put = await req('PUT', `/api/tenants/${tenant.id}/users/${u.userId}`, admin, { role: 'user' });
      expect(put.statusCode).toBe(200);
      expect(put.json()).toMatchObject({ user_id: u.userId, role: 'user' });
      expect((await req('PUT', `/api/tenants/${tenant.id}/users/${u.userId}`, admin, { role: 'boss' })).statusCode).toBe(400);
      expect((await req('PUT', `/api/tenants/${tenant.id}/users/${u.userId}`, admin, {})).statusCode).toBe(400);

      expect((await req('GET', `/api/tenants/${tenant.id}`, u)).statusCode).toBe(200);
      const del = await req('DELETE', `/api/tenants/${tenant.id}/users/${u.userId}`, admin);
      expect(del.statusCode).toBe(204);
      expect(del.body).toBe('');
      expect((await req('GET', `/api/tenants/${tenant.id}`, u)).statusCode).toBe(404);
      expect((await req('GET', '/api/users/me/tenants', u)).json().tenants).toEqual([]);

      const events = (await outboxEvents(app, tenant.id)).slice(-2);
      expect(events[0]).toMatchObject({ event_type: 'member.updated', data: { user_id: u.userId, role: 'user', previous_role: 'viewer' } });
      expect(events[1]).toMatchObject({ event_type: 'member.removed', data: { user_id: u.userId, role: 'user' } });
    });

    it.each([
      ['a malformed user id', 'nope'],
      ['an unknown user id', '00000000-0000-4000-8000-000000000000'],
    ])('answers 404 member_not_found for %s', async (_l, uid) => {
      const tenant = await createTenant(app, admin.auth);
      for (const [method, payload] of [['PUT', { role: 'user' }], ['DELETE', undefined]] as const) {
        const res = await req(method, `/api/tenants/${tenant.id}/users/${uid}`, admin, payload);
        expect(res.statusCode).toBe(404);
        expect(res.json().code).toBe('member_not_found');
      }
    });

    it('answers 404 for a user who exists but is a member of another tenant only', async () => {
      const tenant = await createTenant(app, admin.auth);
      const other = await signUp(app, { organization_name: orgName('Other') });
      const res = await req('DELETE', `/api/tenants/${tenant.id}/users/${other.userId}`, admin);
      expect(res.statusCode).toBe(404);
      expect(res.json().code).toBe('member_not_found');
    });
  });

  describe('the last admin', () => {
    it('cannot be demoted or removed (409 last_admin); with two admins one can go', async () => {
      const tenant = await createTenant(app, admin.auth);
      const demote = await req('PUT', `/api/tenants/${tenant.id}/users/${admin.userId}`, admin, { role: 'user' });
      expect(demote.statusCode).toBe(409);
      expect(demote.json().code).toBe('last_admin');
      const remove = await req('DELETE', `/api/tenants/${tenant.id}/users/${admin.userId}`, admin);
      expect(remove.statusCode).toBe(409);
      expect(remove.json().code).toBe('last_admin');

      const other = await signUp(app);
      await addMember(app, admin.auth, tenant.id, other.email, 'admin');
      expect((await req('PUT', `/api/tenants/${tenant.id}/users/${admin.userId}`, admin, { role: 'viewer' })).statusCode).toBe(200);
      // Now `other` is the last admin.
      const last = await req('DELETE', `/api/tenants/${tenant.id}/users/${other.userId}`, other);
      expect(last.statusCode).toBe(409);
      expect((await req('PUT', `/api/tenants/${tenant.id}/users/${other.userId}`, other, { role: 'user' })).json().code).toBe('last_admin');
      // Re-setting the same role is not a demotion.
      expect((await req('PUT', `/api/tenants/${tenant.id}/users/${other.userId}`, other, { role: 'admin' })).statusCode).toBe(200);
    });

    it('holds when two admins demote each other at the same time', async () => {
      const tenant = await createTenant(app, admin.auth);
      const other = await signUp(app);
      await addMember(app, admin.auth, tenant.id, other.email, 'admin');
      const [r1, r2] = await Promise.all([
        req('PUT', `/api/tenants/${tenant.id}/users/${other.userId}`, admin, { role: 'user' }),
        req('PUT', `/api/tenants/${tenant.id}/users/${admin.userId}`, other, { role: 'user' }),
      ]);
      // One wins; the other is refused: 409 last_admin, or 403 when it ran after its caller was demoted.
      const codes = [r1.statusCode, r2.statusCode].sort();
      expect(codes[0]).toBe(200);
      expect([403, 409]).toContain(codes[1]);
      const admins = await app.db.selectFrom('memberships').select('user_id').where('tenant_id', '=', tenant.id).where('role', '=', 'admin').execute();
      expect(admins).toHaveLength(1);
    });
  });

  describe('invitations', () => {
    async function invite(tid: string, email: string, role = 'user', by: Session = admin) {
      const res = await req('POST', `/api/tenants/${tid}/invitations`, by, { email, role });
      expect(res.statusCode).toBe(201);
      return res.json();
    }
    const register = (payload: object) => app.inject({ method: 'POST', url: '/api/auth/register', payload });

    it('creates a 7-day single-use token stored hashed (invitation.created without the token)', async () => {
      const tenant = await createTenant(app, admin.auth);
      const email = uniqueEmail('invitee');
      const before = Date.now();
      const inv = await invite(tenant.id, email.toUpperCase(), 'viewer');
      expect(inv).toMatchObject({ email, role: 'viewer', invitation_token: expect.stringMatching(/^[\w-]{32,}$/) });
      const ttl = new Date(inv.expires_at).getTime() - before;
      expect(ttl).toBeGreaterThan(7 * 24 * 3600 * 1000 - 60_000);
      expect(ttl).toBeLessThanOrEqual(7 * 24 * 3600 * 1000 + 1000);
      const row = await app.db.selectFrom('invitations').selectAll().where('id', '=', inv.id).executeTakeFirstOrThrow();
      expect(row.token_hash).toBe(sha256(inv.invitation_token));
      expect(JSON.stringify(row)).not.toContain(inv.invitation_token);
      const ev = (await outboxEvents(app, tenant.id)).at(-1);
      expect(ev).toMatchObject({ event_type: 'invitation.created', data: { invitation_id: inv.id, email, role: 'viewer' } });
      expect(JSON.stringify(ev)).not.toContain(inv.invitation_token);
    });

    it('lets the invited email register into the tenant with the invited role, once', async () => {
      const tenant = await createTenant(app, admin.auth);
      const email = uniqueEmail('joiner');
      const inv = await invite(tenant.id, email, 'viewer');
      const reg = await register({ email, password: PASSWORD, invitation_token: inv.invitation_token });
      expect(reg.statusCode).toBe(201);
      expect(reg.json().organization_id).toBe(tenant.id);
      const s = await logIn(app, email, PASSWORD);
      expect(s.organizationId).toBe(tenant.id);
      const login = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email, password: PASSWORD } });
      expect(login.json().tenants).toEqual([{ id: tenant.id, name: tenant.name, role: 'viewer' }]);
      const me = await req('GET', '/api/auth/me', s);
      expect(me.json().organization_id).toBe(tenant.id);
      expect((await req('GET', `/api/tenants/${tenant.id}`, s)).statusCode).toBe(200);
      const added = (await outboxEvents(app, tenant.id)).at(-1);
      expect(added).toMatchObject({ event_type: 'member.added', user_id: s.userId, data: { via: 'invitation', role: 'viewer' } });

      const reuse = await register({ email: uniqueEmail('second'), password: PASSWORD, invitation_token: inv.invitation_token });
      expect(reuse.statusCode).toBe(409);
      expect(reuse.json().code).toBe('invitation_used');
    });

    it('refuses an expired invitation, another email, an unknown token and a deactivated tenant; no account is left behind', async () => {
      const tenant = await createTenant(app, admin.auth);
      const expiredEmail = uniqueEmail('late');
      const expired = await invite(tenant.id, expiredEmail);
      await app.db.updateTable('invitations').set({ expires_at: new Date(Date.now() - 1000) }).where('id', '=', expired.id).execute();
      const r1 = await register({ email: expiredEmail, password: PASSWORD, invitation_token: expired.invitation_token });
      expect(r1.statusCode).toBe(400);
      expect(r1.json().code).toBe('invitation_expired');

      const forEmail = uniqueEmail('right');
      const wrong = await invite(tenant.id, forEmail);
      const wrongEmail = uniqueEmail('wrong');
      const r2 = await register({ email: wrongEmail, password: PASSWORD, invitation_token: wrong.invitation_token });
      expect(r2.statusCode).toBe(403);
      expect(r2.json().code).toBe('invitation_email_mismatch');
      // The registration was rolled back whole: the email is still free, and the invitation still valid for its owner.
      expect((await register({ email: wrongEmail, password: PASSWORD })).statusCode).toBe(201);
      expect((await register({ email: forEmail, password: PASSWORD, invitation_token: wrong.invitation_token })).statusCode).toBe(201);

      const r3 = await register({ email: uniqueEmail('x'), password: PASSWORD, invitation_token: 'not-a-real-token' });
      expect(r3.statusCode).toBe(400);
      expect(r3.json().code).toBe('invalid_invitation');

      const goneEmail = uniqueEmail('gone');
      const gone = await invite(tenant.id, goneEmail);
      expect((await req('DELETE', `/api/tenants/${tenant.id}`, admin)).statusCode).toBe(204);
      const r4 = await register({ email: goneEmail, password: PASSWORD, invitation_token: gone.invitation_token });
      expect(r4.statusCode).toBe(400);
      expect(r4.json().code).toBe('invalid_invitation');
    });

    it('refuses inviting a member (409 already_member) and bad bodies (400)', async () => {
      const tenant = await createTenant(app, admin.auth);
      const res = await req('POST', `/api/tenants/${tenant.id}/invitations`, admin, { email: admin.email, role: 'user' });
      expect(res.statusCode).toBe(409);
      expect(res.json().code).toBe('already_member');
      for (const body of [{ email: uniqueEmail() }, { role: 'user' }, { email: 'nope', role: 'user' }, { email: uniqueEmail(), role: 'superuser' }]) {
        const bad = await req('POST', `/api/tenants/${tenant.id}/invitations`, admin, body);
        expect(bad.statusCode, JSON.stringify(body)).toBe(400);
      }
    });
  });

  describe('soft delete', () => {
    it('serves none of its data, says so, lists the membership as inactive, and its admin can reactivate it', async () => {
      const c = await team();
      const tid = c.tenant.id;
      // The viewer's default organization is another one, so login's organization_id is checked too.
      const del = await req('DELETE', `/api/tenants/${tid}`, admin);
      expect(del.statusCode).toBe(204);
      expect(await outboxTopics(app, tid)).toContain('tenant.deleted');

      for (const s of [c.viewer, c.user]) {
        const res = await req('GET', `/api/tenants/${tid}`, s);
        expect(res.statusCode).toBe(404);
        expect(res.json().code).toBe('tenant_inactive');
        expect((await req('PUT', `/api/tenants/${tid}`, s, { is_active: true })).json().code).toBe('tenant_inactive');
      }
      for (const [method, url, body] of [
        ['DELETE', `/api/tenants/${tid}`, undefined],
        ['POST', `/api/tenants/${tid}/users`, { email: c.viewer.email, role: 'user' }],
        ['PUT', `/api/tenants/${tid}/users/${c.viewer.userId}`, { role: 'user' }],
        ['DELETE', `/api/tenants/${tid}/users/${c.viewer.userId}`, undefined],
        ['POST', `/api/tenants/${tid}/invitations`, { email: uniqueEmail(), role: 'user' }],
        ['GET', `/api/tenants/${tid}/documents`, undefined],
        ['GET', `/api/tenants/${tid}/files`, undefined],
      ] as const) {
        const res = await req(method, url, admin, body);
        expect(res.statusCode, `${method} ${url}`).toBe(404);
        if (app.hasRoute({ method, url: url.replace(tid, ':tid') })) expect(res.json().code, `${method} ${url}`).toBe('tenant_inactive');
      }
      // Every request path through the tenant context refuses it.
      await expect(app.resolveTenant(c.viewer.userId, tid)).rejects.toMatchObject({ statusCode: 404, code: 'tenant_inactive' });

      const listed = await req('GET', '/api/users/me/tenants', c.viewer);
      expect(listed.json().tenants).toContainEqual({ id: tid, name: c.tenant.name, role: 'viewer', is_active: false });
      expect((await req('GET', '/api/tenants', c.viewer)).json().tenants).toContainEqual(expect.objectContaining({ id: tid, is_active: false }));
      const login = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email: c.viewer.email, password: PASSWORD } });
      expect(login.json().tenants.map((x: any) => x.id)).not.toContain(tid);

      const adminView = await req('GET', `/api/tenants/${tid}`, admin);
      expect(adminView.statusCode).toBe(200);
      expect(adminView.json().is_active).toBe(false);
      const back = await req('PUT', `/api/tenants/${tid}`, admin, { is_active: true });
      expect(back.statusCode).toBe(200);
      expect(back.json().is_active).toBe(true);
      expect((await req('GET', `/api/tenants/${tid}`, c.viewer)).statusCode).toBe(200);
    });

    it('PUT is_active=false soft-deletes too (tenant.updated and tenant.deleted)', async () => {
      const tenant = await createTenant(app, admin.auth);
      const res = await req('PUT', `/api/tenants/${tenant.id}`, admin, { is_active: false });
      expect(res.statusCode).toBe(200);
      expect(res.json().is_active).toBe(false);
      expect((await outboxTopics(app, tenant.id)).slice(-2)).toEqual(['tenant.updated', 'tenant.deleted']);
    });
  });

  describe('registration with an organization (end to end)', () => {
    it('creates the tenant with the user as admin; login and /me answer it', async () => {
      const name = orgName('Reg');
      const s = await signUp(app, { organization_name: name });
      expect(s.organizationId).toMatch(/^[0-9a-f-]{36}$/);
      const login = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email: s.email, password: PASSWORD } });
      expect(login.json()).toMatchObject({ organization_id: s.organizationId, tenants: [{ id: s.organizationId, name, role: 'admin' }] });
      const tenant = await req('GET', `/api/tenants/${s.organizationId}`, s);
      expect(tenant.json()).toMatchObject({ name, isolation: 'shared', members: [{ user_id: s.userId, role: 'admin' }] });
      expect(await outboxTopics(app, s.organizationId!)).toEqual(['tenant.created', 'member.added']);
      const dup = await app.inject({ method: 'POST', url: '/api/auth/register', payload: { email: uniqueEmail(), password: PASSWORD, organization_name: name } });
      expect(dup.statusCode).toBe(409);
      expect(dup.json().code).toBe('organization_exists');
    });
  });
});
