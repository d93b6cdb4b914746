/**
 * Redis killed under a running API (a redis-server of the test's own, never
 * the machine's): login keeps working, limited by a per-process counter;
 * logout succeeds (the session is revoked in the database, which every process
 * checks); /ready answers 503 naming Redis within its timeout; nothing waits
 * for a reconnect. Redis restarted empty: the API uses it again by itself.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildTestApp, signUp, uniqueEmail, type Session, type TestApp } from '../helpers/app.js';
import { HAS_REDIS } from '../helpers/env.js';
import { startRedisServer, type RedisServer } from '../helpers/services.js';
import { loginLimitKeys } from '../../src/auth/service.js';
import { median, timed } from './helpers.js';
import { waitFor } from '../jobs/helpers.js';

const READY_TIMEOUT_MS = 300;

describe.skipIf(!HAS_REDIS)('Redis killed and restarted empty under a running API', () => {
  let redis: RedisServer;
  let t: TestApp;
  let app: FastifyInstance;
  let s: Session;

  beforeAll(async () => {
    redis = await startRedisServer();
    t = await buildTestApp({
      config: { redisUrl: redis.url },
      env: { LOGIN_RATE_LIMIT: '3', READY_TIMEOUT_MS: String(READY_TIMEOUT_MS) },
    });
    app = t.app;
    s = await signUp(app, { organization_name: 'Redis outage' });
  }, 60_000);
  afterAll(async () => {
    await t?.close();
    await redis?.destroy();
  });

  const login = (email: string, password: string, remoteAddress = '10.20.0.1') =>
    app.inject({ method: 'POST', url: '/api/auth/login', payload: { email, password }, remoteAddress });

  it('counts failed logins in Redis while it is up', async () => {
    expect((await login(s.email, 'wrong password')).statusCode).toBe(401);
    const key = `${t.config.redisPrefix}rl:${loginLimitKeys(s.email, '10.20.0.1').emailIp}`;
    expect(await app.redis!.get(key)).toBe('1');
    expect((await login(s.email, s.password)).statusCode).toBe(200);
  });

  it('while Redis is down: login works and is still limited, logout succeeds, /ready names Redis, nothing waits', async () => {
    await redis.kill();

    const logins = [];
    for (let i = 0; i < 3; i++) logins.push(await timed(() => login(s.email, s.password, '10.20.1.1')));
    for (const { value } of logins) expect(value.statusCode, value.body).toBe(200);
    // Each is the password hash and the database, no reconnect wait (it took 1.5-3 s).
    for (const { ms } of logins) expect(ms).toBeLessThan(1_000);

    const victim = uniqueEmail('victim');
    const codes: number[] = [];
    for (let i = 0; i < 4; i++) codes.push((await login(victim, 'wrong password', '10.20.2.1')).statusCode);
    expect(codes).toEqual([401, 401, 401, 429]);

    const session = logins[0].value.json() as { access_token: string };
    const bearer = { authorization: `Bearer ${session.access_token}` };
    const { value: out, ms: logoutMs } = await timed(() => app.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer }));
    expect(out.statusCode, out.body).toBe(200);
    expect(out.json()).toEqual({ success: true });
    expect((await app.inject({ method: 'GET', url: '/api/auth/me', headers: bearer })).statusCode).toBe(401);

    const readies = [];
    for (let i = 0; i < 3; i++) readies.push(await timed(() => app.inject({ method: 'GET', url: '/ready' })));
    for (const { value } of readies) {
      expect(value.statusCode).toBe(503);
      expect(value.json().checks).toMatchObject({ database: 'ok', storage: 'ok', redis: expect.stringMatching(/^failed/) });
    }
    expect(median([logoutMs, ...readies.map((r) => r.ms)])).toBeLessThan(200);
    for (const { ms } of readies) expect(ms).toBeLessThan(READY_TIMEOUT_MS + 500);
  });

  it('uses Redis again once it is back (restarted empty)', async () => {
    await redis.start();
    const ready = await waitFor(() => app.inject({ method: 'GET', url: '/ready' }), (r) => r.statusCode === 200, 15_000, 100);
    expect(ready.json().checks.redis).toBe('ok');
    expect((await login(s.email, 'wrong password', '10.20.3.1')).statusCode).toBe(401);
    expect(await app.redis!.get(`${t.config.redisPrefix}rl:${loginLimitKeys(s.email, '10.20.3.1').emailIp}`)).toBe('1');
    expect((await login(s.email, s.password, '10.20.3.1')).statusCode).toBe(200);
  });
});
