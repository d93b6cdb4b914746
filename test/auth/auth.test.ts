import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SignJWT } from 'jose';
import type { FastifyInstance } from 'fastify';
import { buildTestApp, dbModes, logIn, signUp, uniqueEmail, type TestApp } from '../helpers/app.js';
import { HAS_REDIS } from '../helpers/env.js';
import { loginLimitKeys } from '../../src/auth/service.js';

const PASSWORD = 'correct horse battery';

describe.each(dbModes())('auth and users on %s', (mode) => {
  let t: TestApp;
  let app: FastifyInstance;

  beforeAll(async () => {
    t = await buildTestApp({ mode });
    app = t.app;
  });
  afterAll(async () => t?.close());

  const register = (payload: unknown) => app.inject({ method: 'POST', url: '/api/auth/register', payload: payload as object });
  const login = (email: string, password: string, remoteAddress?: string) =>
    app.inject({ method: 'POST', url: '/api/auth/login', payload: { email, password }, remoteAddress });

  describe('register', () => {
    it('creates a user, lower-cases the email, answers the contract shape and sets no cookie', async () => {
      const email = uniqueEmail('Mixed.Case').replace('example.com', 'EXAMPLE.com');
      const res = await register({ email, password: PASSWORD, first_name: 'Ada', last_name: 'Lovelace' });
      expect(res.statusCode).toBe(201);
      const body = res.json();
      expect(body.email).toBe(email.toLowerCase());
      expect(body.organization_id).toBeNull();
      expect(body.user).toMatchObject({ id: body.user_id, email: email.toLowerCase(), first_name: 'Ada', last_name: 'Lovelace', is_active: true });
      expect(body.user).not.toHaveProperty('password_hash');
      expect(res.headers['set-cookie']).toBeUndefined();
    });

    it('refuses a taken email, whatever its case (409 email_taken)', async () => {
      const email = uniqueEmail('taken');
      expect((await register({ email, password: PASSWORD })).statusCode).toBe(201);
      const again = await register({ email: email.toUpperCase(), password: PASSWORD });
      expect(again.statusCode).toBe(409);
      expect(again.headers['content-type']).toMatch(/application\/problem\+json/);
      expect(again.json()).toMatchObject({ status: 409, code: 'email_taken' });
      expect(again.json().error).toBe(again.json().detail);
    });

    it('creates an organization with the user as admin, and refuses a taken organization name', async () => {
      const name = `Org ${uniqueEmail('o')}`;
      const res = await register({ email: uniqueEmail(), password: PASSWORD, organization_name: name });
      expect(res.statusCode).toBe(201);
      expect(res.json().organization_id).toMatch(/^[0-9a-f-]{36}$/);
      const s = await logIn(app, res.json().email, PASSWORD);
      const tenants = await app.inject({ method: 'GET', url: '/api/users/me/tenants', headers: s.auth });
      expect(tenants.json().tenants).toEqual([{ id: res.json().organization_id, name, role: 'admin', is_active: true }]);

      const other = await register({ email: uniqueEmail(), password: PASSWORD, organization_name: name.toUpperCase() });
      expect(other.statusCode).toBe(409);
      expect(other.json().code).toBe('organization_exists');
    });

    it.each([
      ['an invalid email', { email: 'not-an-email', password: PASSWORD }],
      ['a missing email', { password: PASSWORD }],
      ['a missing password', { email: 'a@example.com' }],
      ['a short password', { email: 'a@example.com', password: 'short' }],
      ['an over-long password (argon2 input bound)', { email: 'a@example.com', password: 'x'.repeat(257) }],
      ['a password of the wrong type', { email: 'a@example.com', password: 12345678 }],
      ['an email of the wrong type', { email: ['a@example.com'], password: PASSWORD }],
      ['an over-long first name', { email: 'a@example.com', password: PASSWORD, first_name: 'x'.repeat(101) }],
      ['a blank organization name', { email: 'a@example.com', password: PASSWORD, organization_name: '   ' }],
    ])('rejects %s with 400 validation_error', async (_label, payload) => {
      const res = await register(payload);
      expect(res.statusCode).toBe(400);
      expect(res.json()).toMatchObject({ status: 400, code: 'validation_error' });
    });

    it('rejects malformed JSON with 400 invalid_json', async () => {
      const res = await app.inject({ method: 'POST', url: '/api/auth/register', payload: '{"email": "a@', headers: { 'content-type': 'application/json' } });
      expect(res.statusCode).toBe(400);
      expect(res.json().code).toBe('invalid_json');
    });

    it('rejects a 10 MB JSON body with 413', async () => {
      const huge = JSON.stringify({ email: 'a@example.com', password: PASSWORD, first_name: 'x'.repeat(10 * 1024 * 1024) });
      const res = await app.inject({ method: 'POST', url: '/api/auth/register', payload: huge, headers: { 'content-type': 'application/json' } });
      expect(res.statusCode).toBe(413);
      expect(res.json().code).toBe('payload_too_large');
    });

    it('rejects a non-JSON content type with 415', async () => {
      const res = await app.inject({ method: 'POST', url: '/api/auth/register', payload: 'email=a', headers: { 'content-type': 'text/plain' } });
      expect(res.statusCode).toBe(415);
      expect(res.json().status).toBe(415);
    });

    it('stores SQL-looking strings literally', async () => {
      const email = `x'or'1'='1.${Date.now()}@example.com`;
      const res = await register({ email, password: "'; DROP TABLE users; --", first_name: "Robert'); DROP TABLE users;--" });
      expect(res.statusCode).toBe(201);
      expect(res.json().user.first_name).toBe("Robert'); DROP TABLE users;--");
      const s = await logIn(app, email, "'; DROP TABLE users; --");
      expect(s.email).toBe(email);
      const bad = await login("' OR 1=1 --", 'anything');
      expect(bad.statusCode).toBe(401);
    });
  });

  describe('login', () => {
    it('answers tokens, the user, tenants and sets an httpOnly SameSite=Lax session cookie', async () => {
      const email = uniqueEmail();
      await register({ email, password: PASSWORD, organization_name: `Login ${email}` });
      const res = await login(email.toUpperCase(), PASSWORD);
      expect(res.statusCode).toBe(200);
      const body = res.json();
      expect(body).toMatchObject({ email, token_type: 'Bearer', expires_in: 900 });
      expect(body.access_token.split('.')).toHaveLength(3);
      expect(body.refresh_token.length).toBeGreaterThan(30);
      expect(body.csrf_token.length).toBeGreaterThan(30);
      expect(body.tenants).toEqual([{ id: body.organization_id, name: `Login ${email}`, role: 'admin' }]);
      const cookie = res.cookies.find((c) => c.name === 'session');
      expect(cookie).toBeDefined();
      expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Lax', path: '/', maxAge: 7 * 24 * 3600 });
      expect(cookie!.secure).toBeFalsy(); // Secure only in production
    });

    it('answers the same 401 for an unknown email and a wrong password, and sets no cookie', async () => {
      const email = uniqueEmail();
      await register({ email, password: PASSWORD });
      const wrong = await login(email, 'wrong password!');
      const unknown = await login(uniqueEmail('nobody'), 'wrong password!');
      expect(wrong.statusCode).toBe(401);
      expect(unknown.statusCode).toBe(401);
      expect(wrong.json()).toEqual(unknown.json());
      expect(wrong.headers['set-cookie']).toBeUndefined();
      expect(unknown.headers['set-cookie']).toBeUndefined();
    });

    it('takes about as long for an unknown email as for a wrong password (no enumeration by timing)', async () => {
      const email = uniqueEmail();
      await register({ email, password: PASSWORD });
      const time = async (e: string) => {
        const start = process.hrtime.bigint();
        await login(e, 'wrong password!');
        return Number(process.hrtime.bigint() - start) / 1e6;
      };
      await time(email); // warm-up (dummy hash is computed once)
      await time(uniqueEmail('nobody'));
      const known: number[] = [];
      const unknown: number[] = [];
      for (let i = 0; i < 5; i++) {
        known.push(await time(email));
        unknown.push(await time(uniqueEmail('nobody')));
      }
      const median = (xs: number[]) => xs.sort((a, b) => a - b)[2];
      const ratio = median(unknown) / median(known);
      // Without the dummy verify an unknown email answers >10x faster than a wrong password.
      expect(ratio).toBeGreaterThan(0.4);
      expect(ratio).toBeLessThan(2.5);
    });

    it('gives a new session at every login (no fixation) and ignores made-up session cookies', async () => {
      const s = await signUp(app);
      const s2 = await logIn(app, s.email, s.password);
      expect(s2.cookie).not.toBe(s.cookie);
      expect(s2.csrfToken).not.toBe(s.csrfToken);
      const forged = await app.inject({ method: 'GET', url: '/api/auth/me', cookies: { session: 'attacker-chosen-session-id' } });
      expect(forged.statusCode).toBe(401);
      // Logging in while presenting a cookie does not keep that cookie's value.
      const res = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email: s.email, password: s.password }, cookies: { session: s.cookie } });
      expect(res.cookies.find((c) => c.name === 'session')!.value).not.toBe(s.cookie);
    });

    it('refuses a deactivated account with 403, and its live tokens stop working', async () => {
      const s = await signUp(app);
      await app.db.updateTable('users').set({ is_active: false }).where('id', '=', s.userId).execute();
      const res = await login(s.email, s.password);
      expect(res.statusCode).toBe(403);
      expect(res.json().code).toBe('account_disabled');
      const me = await app.inject({ method: 'GET', url: '/api/auth/me', headers: s.auth });
      expect(me.statusCode).toBe(403);
      const byCookie = await app.inject({ method: 'GET', url: '/api/users/me', cookies: { session: s.cookie } });
      expect(byCookie.statusCode).toBe(403);
      const refreshed = await app.inject({ method: 'POST', url: '/api/auth/refresh', payload: { refresh_token: s.refreshToken } });
      expect(refreshed.statusCode).toBe(401);
    });

    it('rejects missing fields and over-long input with 400', async () => {
      expect((await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email: 'a@example.com' } })).statusCode).toBe(400);
      expect((await login('a@example.com', 'x'.repeat(300))).statusCode).toBe(400);
    });
  });

  describe('protected routes', () => {
    it('answers 401 problem+json (never a redirect or HTML) without credentials', async () => {
      for (const url of ['/api/auth/me', '/api/users/me', '/api/users/me/tenants', '/api/auth/csrf']) {
        const res = await app.inject({ method: 'GET', url });
        expect(res.statusCode, url).toBe(401);
        expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
        expect(res.headers.location).toBeUndefined();
        expect(res.json().code).toBe('unauthorized');
        expect(res.headers['set-cookie']).toBeUndefined();
      }
    });

    it('accepts the bearer token and the session cookie', async () => {
      const s = await signUp(app, { organization_name: `Me ${uniqueEmail()}` });
      const byBearer = await app.inject({ method: 'GET', url: '/api/auth/me', headers: s.auth });
      expect(byBearer.statusCode).toBe(200);
      expect(byBearer.json()).toEqual({ user_id: s.userId, email: s.email, organization_id: s.organizationId });
      const byCookie = await app.inject({ method: 'GET', url: '/api/auth/me', cookies: { session: s.cookie } });
      expect(byCookie.json()).toEqual(byBearer.json());
      const csrf = await app.inject({ method: 'GET', url: '/api/auth/csrf', cookies: { session: s.cookie } });
      expect(csrf.json()).toEqual({ csrf_token: s.csrfToken });
    });

    it('requires X-CSRF-Token on cookie-authenticated unsafe requests, not on bearer ones', async () => {
      const s = await signUp(app);
      const put = (headers: Record<string, string>, cookies?: Record<string, string>) =>
        app.inject({ method: 'PUT', url: '/api/users/me', payload: { first_name: 'New' }, headers, cookies });
      const missing = await put({}, { session: s.cookie });
      expect(missing.statusCode).toBe(403);
      expect(missing.json().code).toBe('csrf_failed');
      const wrong = await put({ 'x-csrf-token': 'x'.repeat(43) }, { session: s.cookie });
      expect(wrong.statusCode).toBe(403);
      const other = await signUp(app); // another session's token is not this session's
      expect((await put({ 'x-csrf-token': other.csrfToken }, { session: s.cookie })).statusCode).toBe(403);
      const ok = await put({ 'x-csrf-token': s.csrfToken }, { session: s.cookie });
      expect(ok.statusCode).toBe(200);
      const bearer = await put(s.auth);
      expect(bearer.statusCode).toBe(200);
    });

    it('rejects expired, forged, alg:none, wrong-issuer and malformed tokens', async () => {
      const s = await signUp(app);
      const claims = JSON.parse(Buffer.from(s.accessToken.split('.')[1], 'base64url').toString());
      const key = new TextEncoder().encode(t.config.jwtSecretKey);
      const now = Math.floor(Date.now() / 1000);
      const expired = await new SignJWT({ sid: claims.sid, typ: 'access' }).setProtectedHeader({ alg: 'HS256' })
        .setSubject(s.userId).setJti('j1').setIssuer('tenantbase').setIssuedAt(now - 3600).setExpirationTime(now - 60).sign(key);
      const forged = await new SignJWT({ sid: claims.sid, typ: 'access' }).setProtectedHeader({ alg: 'HS256' })
        .setSubject(s.userId).setJti('j2').setIssuer('tenantbase').setExpirationTime(now + 600).sign(new TextEncoder().encode('another-secret'));
      const wrongIssuer = await new SignJWT({ sid: claims.sid, typ: 'access' }).setProtectedHeader({ alg: 'HS256' })
        .setSubject(s.userId).setJti('j3').setIssuer('someone-else').setExpirationTime(now + 600).sign(key);
      const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
      const algNone = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ ...claims, exp: now + 600 })}.`;
      const hs512 = await new SignJWT({ sid: claims.sid, typ: 'access' }).setProtectedHeader({ alg: 'HS512' })
        .setSubject(s.userId).setJti('j4').setIssuer('tenantbase').setExpirationTime(now + 600).sign(key);
      const cases: Array<[string, string, string]> = [
        ['expired', `Bearer ${expired}`, 'token_expired'],
        ['forged', `Bearer ${forged}`, 'invalid_token'],
        ['wrong issuer', `Bearer ${wrongIssuer}`, 'invalid_token'],
        ['alg none', `Bearer ${algNone}`, 'invalid_token'],
        ['other algorithm', `Bearer ${hs512}`, 'invalid_token'],
        ['tampered payload', `Bearer ${s.accessToken.split('.')[0]}.${b64({ ...claims, sub: '00000000-0000-0000-0000-000000000000' })}.${s.accessToken.split('.')[2]}`, 'invalid_token'],
        ['garbage', 'Bearer not-a-token', 'invalid_token'],
        ['basic scheme', 'Basic dXNlcjpwYXNz', 'invalid_token'],
        ['empty bearer', 'Bearer ', 'invalid_token'],
      ];
      for (const [label, authorization, code] of cases) {
        const res = await app.inject({ method: 'GET', url: '/api/auth/me', headers: { authorization } });
        expect(res.statusCode, label).toBe(401);
        expect(res.json().code, label).toBe(code);
      }
    });
  });

  describe('refresh', () => {
    it('rotates the refresh token and gives a working access token', async () => {
      const s = await signUp(app);
      const res = await app.inject({ method: 'POST', url: '/api/auth/refresh', payload: { refresh_token: s.refreshToken } });
      expect(res.statusCode).toBe(200);
      const body = res.json();
      expect(body.refresh_token).not.toBe(s.refreshToken);
      expect(body.expires_in).toBe(900);
      const me = await app.inject({ method: 'GET', url: '/api/auth/me', headers: { authorization: `Bearer ${body.access_token}` } });
      expect(me.statusCode).toBe(200);
      const next = await app.inject({ method: 'POST', url: '/api/auth/refresh', payload: { refresh_token: body.refresh_token } });
      expect(next.statusCode).toBe(200);
    });

    it('revokes the whole family when a rotated refresh token is replayed', async () => {
      const s = await signUp(app);
      const first = (await app.inject({ method: 'POST', url: '/api/auth/refresh', payload: { refresh_token: s.refreshToken } })).json();
      const replay = await app.inject({ method: 'POST', url: '/api/auth/refresh', payload: { refresh_token: s.refreshToken } });
      expect(replay.statusCode).toBe(401);
      expect(replay.json().code).toBe('token_reused');
      // The legitimate holder's newer token, access tokens and cookie of that session die too.
      const newer = await app.inject({ method: 'POST', url: '/api/auth/refresh', payload: { refresh_token: first.refresh_token } });
      expect(newer.statusCode).toBe(401);
      const me = await app.inject({ method: 'GET', url: '/api/auth/me', headers: { authorization: `Bearer ${first.access_token}` } });
      expect(me.statusCode).toBe(401);
      const cookie = await app.inject({ method: 'GET', url: '/api/auth/me', cookies: { session: s.cookie } });
      expect(cookie.statusCode).toBe(401);
      // Other sessions of the same user are untouched.
      const other = await logIn(app, s.email, s.password);
      expect((await app.inject({ method: 'GET', url: '/api/auth/me', headers: other.auth })).statusCode).toBe(200);
    });

    it('rejects unknown and malformed refresh tokens', async () => {
      const unknown = await app.inject({ method: 'POST', url: '/api/auth/refresh', payload: { refresh_token: 'nope' } });
      expect(unknown.statusCode).toBe(401);
      expect(unknown.json().code).toBe('invalid_token');
      const missing = await app.inject({ method: 'POST', url: '/api/auth/refresh', payload: {} });
      expect(missing.statusCode).toBe(400);
    });
  });

  describe('logout', () => {
    it('revokes the access token, the refresh family and the cookie session at once', async () => {
      const s = await signUp(app);
      const out = await app.inject({ method: 'POST', url: '/api/auth/logout', headers: s.auth });
      expect(out.statusCode).toBe(200);
      expect(out.json()).toEqual({ success: true });
      const cleared = out.cookies.find((c) => c.name === 'session');
      expect(cleared?.value).toBe('');
      const me = await app.inject({ method: 'GET', url: '/api/auth/me', headers: s.auth });
      expect(me.statusCode).toBe(401);
      expect(me.json().code).toBe('token_revoked');
      const refresh = await app.inject({ method: 'POST', url: '/api/auth/refresh', payload: { refresh_token: s.refreshToken } });
      expect(refresh.statusCode).toBe(401);
      const cookie = await app.inject({ method: 'GET', url: '/api/auth/me', cookies: { session: s.cookie } });
      expect(cookie.statusCode).toBe(401);
    });

    it('works with the cookie and its CSRF token, and only ends that session', async () => {
      const s = await signUp(app);
      const other = await logIn(app, s.email, s.password);
      const noCsrf = await app.inject({ method: 'POST', url: '/api/auth/logout', cookies: { session: s.cookie } });
      expect(noCsrf.statusCode).toBe(403);
      const out = await app.inject({ method: 'POST', url: '/api/auth/logout', cookies: { session: s.cookie }, headers: { 'x-csrf-token': s.csrfToken } });
      expect(out.statusCode).toBe(200);
      expect((await app.inject({ method: 'GET', url: '/api/auth/me', cookies: { session: s.cookie } })).statusCode).toBe(401);
      expect((await app.inject({ method: 'GET', url: '/api/auth/me', headers: other.auth })).statusCode).toBe(200);
    });
  });

  describe('users', () => {
    it('reads and updates the profile; the email cannot change', async () => {
      const s = await signUp(app);
      const me = await app.inject({ method: 'GET', url: '/api/users/me', headers: s.auth });
      expect(me.json()).toMatchObject({ id: s.userId, email: s.email, first_name: '', last_name: '', is_active: true });
      const withEmail = await app.inject({ method: 'PUT', url: '/api/users/me', headers: s.auth, payload: { first_name: 'Grace', email: 'evil@example.com' } });
      expect(withEmail.statusCode).toBe(400);
      expect(withEmail.json()).toMatchObject({ code: 'unknown_field', fields: ['email'] });
      const put = await app.inject({ method: 'PUT', url: '/api/users/me', headers: s.auth, payload: { first_name: ' Grace ', last_name: 'Hopper' } });
      expect(put.statusCode).toBe(200);
      expect(put.json()).toMatchObject({ first_name: 'Grace', last_name: 'Hopper', email: s.email });
      expect(new Date(put.json().updated_at).getTime()).toBeGreaterThanOrEqual(new Date(me.json().updated_at).getTime());
      const bad = await app.inject({ method: 'PUT', url: '/api/users/me', headers: s.auth, payload: { first_name: 42 } });
      expect(bad.statusCode).toBe(400);
    });

    it('lists no tenants for a user without an organization', async () => {
      const s = await signUp(app);
      const res = await app.inject({ method: 'GET', url: '/api/users/me/tenants', headers: s.auth });
      expect(res.json()).toEqual({ tenants: [] });
    });
  });
});

describe('login rate limit (in memory): failed attempts only', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp({ mode: 'pglite', env: { LOGIN_RATE_LIMIT: '3', LOGIN_IP_RATE_LIMIT: '5', LOGIN_RATE_WINDOW: '60' } });
  });
  afterAll(async () => t?.close());

  const attempt = (email: string, password: string, remoteAddress: string) =>
    t.app.inject({ method: 'POST', url: '/api/auth/login', payload: { email, password }, remoteAddress });

  it('lets twelve good logins in a minute from one address through: a success uses no budget', async () => {
    const s = await signUp(t.app);
    const codes: number[] = [];
    for (let i = 0; i < 12; i++) codes.push((await attempt(s.email, PASSWORD, '10.7.0.1')).statusCode);
    expect(codes).toEqual(Array(12).fill(200));
  });

  it('a success clears the failures of that email from that address', async () => {
    const s = await signUp(t.app);
    const codes: number[] = [];
    // Four failures in all (the limit is three): only the success in between keeps them apart.
    for (let round = 0; round < 2; round++) {
      codes.push((await attempt(s.email, 'wrong password', '10.7.0.2')).statusCode);
      codes.push((await attempt(s.email, 'wrong password', '10.7.0.2')).statusCode);
      codes.push((await attempt(s.email, PASSWORD, '10.7.0.2')).statusCode);
    }
    expect(codes).toEqual([401, 401, 200, 401, 401, 200]);
  });

  it('limits failed attempts of one email from one address, with Retry-After, even for the right password then', async () => {
    const s = await signUp(t.app);
    const codes: number[] = [];
    for (let i = 0; i < 3; i++) codes.push((await attempt(s.email, 'wrong password', '10.7.0.3')).statusCode);
    const limited = await attempt(s.email, PASSWORD, '10.7.0.3');
    expect(codes).toEqual([401, 401, 401]);
    expect(limited.statusCode).toBe(429);
    expect(limited.json().code).toBe('rate_limited');
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
  });

  it('a flood of failures for one email from many addresses never blocks its right password from another', async () => {
    const s = await signUp(t.app);
    const flood: number[] = [];
    for (let ip = 1; ip <= 10; ip++) {
      for (let i = 0; i < 4; i++) flood.push((await attempt(s.email, 'wrong password', `10.8.0.${ip}`)).statusCode);
    }
    // Each flooding address is stopped after its own three failures...
    expect(flood.filter((c) => c === 401)).toHaveLength(30);
    expect(flood.filter((c) => c === 429)).toHaveLength(10);
    // ...and the owner, elsewhere, gets in.
    expect((await attempt(s.email, PASSWORD, '10.9.0.1')).statusCode).toBe(200);
  });

  it('limits failed attempts per address across emails; a success there neither uses nor restores that budget', async () => {
    const s = await signUp(t.app);
    const codes: number[] = [];
    for (let i = 0; i < 4; i++) codes.push((await attempt(uniqueEmail('spray'), 'wrong password', '10.9.9.9')).statusCode);
    codes.push((await attempt(s.email, PASSWORD, '10.9.9.9')).statusCode);
    codes.push((await attempt(uniqueEmail('spray'), 'wrong password', '10.9.9.9')).statusCode);
    codes.push((await attempt(uniqueEmail('spray'), 'wrong password', '10.9.9.9')).statusCode);
    expect(codes).toEqual([401, 401, 401, 401, 200, 401, 429]);
  });
});

describe.skipIf(!HAS_REDIS)('auth with Redis (shared revocation and rate limits)', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp({ redis: true, env: { LOGIN_RATE_LIMIT: '2' } });
  });
  afterAll(async () => t?.close());

  it('denies a logged-out access token through Redis until it expires', async () => {
    const s = await signUp(t.app);
    const jti = JSON.parse(Buffer.from(s.accessToken.split('.')[1], 'base64url').toString()).jti;
    expect((await t.app.inject({ method: 'POST', url: '/api/auth/logout', headers: s.auth })).statusCode).toBe(200);
    const key = `${t.config.redisPrefix}revoked:${jti}`;
    expect(await t.app.redis!.exists(key)).toBe(1);
    const ttl = await t.app.redis!.pttl(key);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(900_000);
    const me = await t.app.inject({ method: 'GET', url: '/api/auth/me', headers: s.auth });
    expect(me.statusCode).toBe(401);
    expect(me.json().code).toBe('token_revoked');
  });

  it('counts failed login attempts in Redis, and successes not at all', async () => {
    const s = await signUp(t.app);
    const attempt = (password: string, remoteAddress: string) =>
      t.app.inject({ method: 'POST', url: '/api/auth/login', payload: { email: s.email, password }, remoteAddress });
    const key = (ip: string) => `${t.config.redisPrefix}rl:${loginLimitKeys(s.email, ip).emailIp}`;

    for (let i = 0; i < 4; i++) expect((await attempt(PASSWORD, '10.1.0.1')).statusCode).toBe(200);
    expect(await t.app.redis!.exists(key('10.1.0.1'))).toBe(0);
    expect(Number(await t.app.redis!.get(`${t.config.redisPrefix}rl:${loginLimitKeys(s.email, '10.1.0.1').ip}`) ?? 0)).toBe(0);

    const codes: number[] = [];
    for (let i = 0; i < 3; i++) codes.push((await attempt('wrong password', '10.1.0.2')).statusCode);
    expect(codes).toEqual([401, 401, 429]);
    expect(Number(await t.app.redis!.get(key('10.1.0.2')))).toBe(3);
    expect((await attempt(PASSWORD, '10.1.0.3')).statusCode).toBe(200);
  });
});
