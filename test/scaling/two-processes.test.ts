/**
 * Horizontal scaling (issue #6): several API processes behind a load balancer
 * share nothing but PostgreSQL, Redis and storage. Two real server processes
 * on one database and one Redis prefix: a session made on A works on B, a
 * logout on A is refused on B at once (access token, refresh token, cookie),
 * and the login rate limit is one counter for both.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import { createTestDatabase, HAS_PG, HAS_REDIS, requirePg, requireRedis, uniqueName } from '../helpers/env.js';
import { startServerProcess, type ServerProcess } from './processes.js';

const PASSWORD = 'correct horse battery';
const LOGIN_RATE_LIMIT = 3;

if (!HAS_PG || !HAS_REDIS) {
  console.warn(
    `[tests] scaling/two-processes not run: needs ${[!HAS_PG && 'PostgreSQL (TEST_DATABASE_URL)', !HAS_REDIS && 'Redis (REDIS_URL)'].filter(Boolean).join(' and ')}, or CI=true`,
  );
}

interface Answer {
  status: number;
  body: any;
  headers: Headers;
}

async function call(base: string, method: string, url: string, opts: { json?: unknown; headers?: Record<string, string> } = {}): Promise<Answer> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.json !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(base + url, {
    method,
    headers,
    body: opts.json === undefined ? undefined : JSON.stringify(opts.json),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  let body: any = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: res.status, body, headers: res.headers };
}

/** The `session` cookie's value from a response's Set-Cookie headers. */
function sessionCookie(headers: Headers): string {
  for (const line of headers.getSetCookie()) {
    const m = /^session=([^;]*)/.exec(line);
    if (m) return m[1];
  }
  throw new Error('no session cookie was set');
}

function jwtClaims(token: string): { jti: string; sid: string; sub: string } {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
}

describe.skipIf(!HAS_PG || !HAS_REDIS)('two API processes share PostgreSQL and Redis only', () => {
  let database: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
  let redis: Redis | undefined;
  const servers: ServerProcess[] = [];
  const dataDirs: string[] = [];
  const prefix = `${uniqueName('tbscale')}:`;
  let A: string;
  let B: string;

  beforeAll(async () => {
    requirePg();
    const redisUrl = requireRedis();
    database = await createTestDatabase('tb_scale');
    redis = new Redis(redisUrl, { maxRetriesPerRequest: 1, lazyConnect: true, connectTimeout: 5_000, retryStrategy: () => null });
    redis.on('error', () => {});
    await redis.connect();
    const secret = crypto.randomBytes(32).toString('base64url');
    const env = (name: string) => {
      const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), `tb-scale-${name}-`));
      dataDirs.push(dataDir);
      return {
        NODE_ENV: 'test',
        DATABASE_URL: database!.url,
        REDIS_URL: redisUrl,
        REDIS_PREFIX: prefix,
        SECRET_KEY: secret,
        DATA_DIR: dataDir,
        LOGIN_RATE_LIMIT: String(LOGIN_RATE_LIMIT),
        LOGIN_RATE_WINDOW: '300',
        // The rate-limit part tells clients apart by X-Forwarded-For, as behind a load balancer.
        TRUST_PROXY: 'true',
        DB_POOL_MAX: '5',
      };
    };
    // A first (it applies the migrations), then B on the migrated database.
    servers.push(await startServerProcess('A', env('a')));
    servers.push(await startServerProcess('B', env('b')));
    [A, B] = servers.map((s) => s.url);
  }, 120_000);

  afterAll(async () => {
    // Every step runs even when an earlier one fails (e.g. Redis went away): the database is always dropped.
    const steps: Array<() => Promise<unknown>> = [
      () => Promise.all(servers.map((s) => s.stop())),
      async () => {
        if (redis?.status !== 'ready') return;
        const keys = await redis.keys(`${prefix}*`);
        if (keys.length) await redis.del(...keys);
      },
      async () => redis?.disconnect(),
      async () => database?.drop(),
      async () => { for (const d of dataDirs) fs.rmSync(d, { recursive: true, force: true }); },
    ];
    const failures: unknown[] = [];
    for (const step of steps) await step().catch((err) => failures.push(err));
    if (failures.length) throw failures[0];
  }, 60_000);

  it('runs two separate processes on the same database', async () => {
    expect(servers).toHaveLength(2);
    expect(servers[0].proc.pid).not.toBe(servers[1].proc.pid);
    expect(servers[0].port).not.toBe(servers[1].port);
    for (const base of [A, B]) {
      const ready = await call(base, 'GET', '/ready');
      expect(ready.status).toBe(200);
      expect(ready.body.checks).toMatchObject({ database: 'ok', redis: 'ok' });
    }
  });

  it('a session made on A works on B; logout on A is refused on B at once (access token, refresh token, cookie)', async () => {
    const email = `scale.${Date.now().toString(36)}.${crypto.randomBytes(3).toString('hex')}@example.com`;
    const client = { 'x-forwarded-for': '198.51.100.10' };
    const reg = await call(A, 'POST', '/api/auth/register', { json: { email, password: PASSWORD, organization_name: `Scale ${email}` }, headers: client });
    expect(reg.status, JSON.stringify(reg.body)).toBe(201);

    const login = await call(A, 'POST', '/api/auth/login', { json: { email, password: PASSWORD }, headers: client });
    expect(login.status, JSON.stringify(login.body)).toBe(200);
    const { access_token: access, refresh_token: refreshToken, csrf_token: csrf } = login.body;
    const cookie = `session=${sessionCookie(login.headers)}`;
    const bearer = { authorization: `Bearer ${access}` };

    // The same credentials on B: bearer token and cookie both work.
    const meB = await call(B, 'GET', '/api/auth/me', { headers: bearer });
    expect(meB.status, JSON.stringify(meB.body)).toBe(200);
    expect(meB.body).toEqual({ user_id: reg.body.user_id, email, organization_id: reg.body.organization_id });
    const userB = await call(B, 'GET', '/api/users/me', { headers: { cookie } });
    expect(userB.status, JSON.stringify(userB.body)).toBe(200);
    expect(userB.body.email).toBe(email);
    const csrfB = await call(B, 'GET', '/api/auth/csrf', { headers: { cookie } });
    expect(csrfB.body).toEqual({ csrf_token: csrf });

    // Log out on A with the bearer token.
    const out = await call(A, 'POST', '/api/auth/logout', { headers: bearer });
    expect(out.status, JSON.stringify(out.body)).toBe(200);
    expect(out.body).toEqual({ success: true });

    // The access token's id is denied in the shared Redis, under the deployment's prefix.
    const { jti } = jwtClaims(access);
    expect(await redis!.exists(`${prefix}revoked:${jti}`)).toBe(1);

    // B refuses all three, immediately (no waiting for a cache to expire).
    const me = await call(B, 'GET', '/api/auth/me', { headers: bearer });
    expect(me.status).toBe(401);
    expect(me.body.code).toBe('token_revoked');
    const viaCookie = await call(B, 'GET', '/api/users/me', { headers: { cookie } });
    expect(viaCookie.status).toBe(401);
    expect(viaCookie.body.code).toBe('token_revoked');
    const refreshed = await call(B, 'POST', '/api/auth/refresh', { json: { refresh_token: refreshToken } });
    expect(refreshed.status).toBe(401);
    expect(refreshed.headers.get('content-type')).toMatch(/application\/problem\+json/);

    // ...and so does A.
    expect((await call(A, 'GET', '/api/auth/me', { headers: bearer })).status).toBe(401);
    expect((await call(A, 'GET', '/api/users/me', { headers: { cookie } })).status).toBe(401);
  });

  it('a cookie session logged out on B is refused on A, and B\'s refresh rotation is seen by A', async () => {
    const email = `scale2.${Date.now().toString(36)}.${crypto.randomBytes(3).toString('hex')}@example.com`;
    const client = { 'x-forwarded-for': '198.51.100.11' };
    expect((await call(B, 'POST', '/api/auth/register', { json: { email, password: PASSWORD }, headers: client })).status).toBe(201);
    const login = await call(B, 'POST', '/api/auth/login', { json: { email, password: PASSWORD }, headers: client });
    expect(login.status).toBe(200);
    const cookie = `session=${sessionCookie(login.headers)}`;

    // Rotate on B; presenting the old refresh token on A is reuse: the family is revoked.
    const rotated = await call(B, 'POST', '/api/auth/refresh', { json: { refresh_token: login.body.refresh_token } });
    expect(rotated.status).toBe(200);
    const reused = await call(A, 'POST', '/api/auth/refresh', { json: { refresh_token: login.body.refresh_token } });
    expect(reused.status).toBe(401);
    expect(reused.body.code).toBe('token_reused');
    expect((await call(A, 'GET', '/api/auth/me', { headers: { authorization: `Bearer ${rotated.body.access_token}` } })).status).toBe(401);

    // A new login, cookie-authenticated logout on B (with its CSRF token): A refuses the cookie.
    const again = await call(B, 'POST', '/api/auth/login', { json: { email, password: PASSWORD }, headers: client });
    const cookie2 = `session=${sessionCookie(again.headers)}`;
    expect(cookie2).not.toBe(cookie);
    expect((await call(A, 'GET', '/api/users/me', { headers: { cookie: cookie2 } })).status).toBe(200);
    const out = await call(B, 'POST', '/api/auth/logout', { headers: { cookie: cookie2, 'x-csrf-token': again.body.csrf_token } });
    expect(out.status, JSON.stringify(out.body)).toBe(200);
    const refused = await call(A, 'GET', '/api/users/me', { headers: { cookie: cookie2 } });
    expect(refused.status).toBe(401);
    expect(refused.body.code).toBe('token_revoked');
  });

  it('a deactivated account is refused at once on both processes (bearer and cookie)', async () => {
    const email = `scale3.${Date.now().toString(36)}.${crypto.randomBytes(3).toString('hex')}@example.com`;
    const client = { 'x-forwarded-for': '198.51.100.12' };
    expect((await call(A, 'POST', '/api/auth/register', { json: { email, password: PASSWORD }, headers: client })).status).toBe(201);
    const login = await call(A, 'POST', '/api/auth/login', { json: { email, password: PASSWORD }, headers: client });
    const bearer = { authorization: `Bearer ${login.body.access_token}` };
    const cookie = `session=${sessionCookie(login.headers)}`;
    for (const base of [A, B]) expect((await call(base, 'GET', '/api/users/me', { headers: bearer })).status).toBe(200);

    // Deactivated in the shared database (as an operator would): no process may keep serving the account.
    const pgc = new pg.Client({ connectionString: database!.url });
    await pgc.connect();
    try {
      await pgc.query('UPDATE users SET is_active = false WHERE email = $1', [email]);
    } finally {
      await pgc.end();
    }
    for (const base of [A, B]) {
      const viaBearer = await call(base, 'GET', '/api/users/me', { headers: bearer });
      expect(viaBearer.status).toBe(403);
      expect(viaBearer.body.code).toBe('account_disabled');
      const viaCookie = await call(base, 'GET', '/api/auth/me', { headers: { cookie } });
      expect(viaCookie.status).toBe(403);
    }
    const refreshed = await call(B, 'POST', '/api/auth/refresh', { json: { refresh_token: login.body.refresh_token } });
    expect(refreshed.status).toBe(401);
  });

  it(`shares the login rate limit: ${LOGIN_RATE_LIMIT - 1} failures on A and 1 on B, then 429 on either`, async () => {
    const email = `limited.${Date.now().toString(36)}.${crypto.randomBytes(3).toString('hex')}@example.com`;
    const client = { 'x-forwarded-for': '203.0.113.77' };
    expect((await call(A, 'POST', '/api/auth/register', { json: { email, password: PASSWORD }, headers: { 'x-forwarded-for': '203.0.113.1' } })).status).toBe(201);

    const attempt = (base: string, password: string, headers = client) =>
      call(base, 'POST', '/api/auth/login', { json: { email, password }, headers });
    for (let i = 0; i < LOGIN_RATE_LIMIT - 1; i += 1) {
      expect((await attempt(A, 'wrong password 1')).status).toBe(401);
    }
    expect((await attempt(B, 'wrong password 2')).status).toBe(401);

    // The limit is reached across both processes: the next attempt on either is 429, even with the right password.
    for (const base of [A, B]) {
      const limited = await attempt(base, PASSWORD);
      expect(limited.status, `${base}: ${JSON.stringify(limited.body)}`).toBe(429);
      expect(limited.body.code).toBe('rate_limited');
      expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    }
    // The failures counted are this address's: the right password from another address gets in, on either process.
    expect((await attempt(B, PASSWORD, { 'x-forwarded-for': '203.0.113.78' })).status).toBe(200);
    expect((await attempt(A, PASSWORD, { 'x-forwarded-for': '203.0.113.79' })).status).toBe(200);
  });
});
