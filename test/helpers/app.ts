/**
 * Build the app for tests: `pglite` (in-memory embedded database) or
 * `postgres` (a fresh database on the test server, dropped on close), with an
 * optional real Redis under a unique key prefix.
 */
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import { buildApp, type BuildOptions } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createTestDatabase, HAS_PG, requireRedis, uniqueName } from './env.js';

export type DbMode = 'pglite' | 'postgres';

/** The database modes this run covers: always the embedded one, plus PostgreSQL when available. */
export function dbModes(): DbMode[] {
  return HAS_PG ? ['pglite', 'postgres'] : ['pglite'];
}

export interface TestAppOptions {
  mode?: DbMode;
  redis?: boolean;
  config?: Partial<Config>;
  env?: Record<string, string>;
  /** A logger instead of none (tests that read the logs), a blob store instead of the configured one. */
  build?: BuildOptions;
}

export interface TestApp {
  app: FastifyInstance;
  config: Config;
  close(): Promise<void>;
}

export async function buildTestApp(opts: TestAppOptions = {}): Promise<TestApp> {
  const mode = opts.mode ?? (HAS_PG ? 'postgres' : 'pglite');
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-test-'));
  const database = mode === 'postgres' ? await createTestDatabase() : null;
  const base = loadConfig({ NODE_ENV: 'test', DATA_DIR: dataDir, LOGIN_RATE_LIMIT: '1000', LOGIN_IP_RATE_LIMIT: '1000', ...opts.env });
  const config: Config = {
    ...base,
    databaseUrl: database?.url,
    pgliteDir: 'memory://',
    tenantDbServers: database ? [database.url] : [],
    redisUrl: opts.redis ? requireRedis() : undefined,
    redisPrefix: `${uniqueName('tbtest')}:`,
    ...opts.config,
  };
  const app = await buildApp(config, { logger: false, ...opts.build });
  await app.ready();
  return {
    app,
    config,
    async close() {
      if (app.redis) {
        const keys = await app.redis.keys(`${config.redisPrefix}*`);
        if (keys.length) await app.redis.del(...keys);
      }
      await app.close();
      await database?.drop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export function json<T = any>(res: LightMyRequestResponse): T {
  return res.json() as T;
}

let seq = 0;
export function uniqueEmail(tag = 'user'): string {
  seq += 1;
  return `${tag}.${process.pid}.${Date.now().toString(36)}.${seq}@example.com`;
}

export interface Session {
  userId: string;
  email: string;
  password: string;
  accessToken: string;
  refreshToken: string;
  csrfToken: string;
  cookie: string;
  organizationId: string | null;
  /** Headers for a bearer-authenticated request. */
  auth: Record<string, string>;
}

/** Register (optionally with an organization) and log in. */
export async function signUp(
  app: FastifyInstance,
  p: { email?: string; password?: string; organization_name?: string; invitation_token?: string } = {},
): Promise<Session> {
  const email = p.email ?? uniqueEmail();
  const password = p.password ?? 'correct horse battery';
  const reg = await app.inject({
    method: 'POST', url: '/api/auth/register',
    payload: { email, password, organization_name: p.organization_name, invitation_token: p.invitation_token },
  });
  if (reg.statusCode !== 201) throw new Error(`register failed: ${reg.statusCode} ${reg.body}`);
  return logIn(app, email, password);
}

export async function logIn(app: FastifyInstance, email: string, password: string): Promise<Session> {
  const res = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email, password } });
  if (res.statusCode !== 200) throw new Error(`login failed: ${res.statusCode} ${res.body}`);
  const body = res.json();
  const cookie = res.cookies.find((c) => c.name === 'session');
  return {
    userId: body.user_id,
    email,
    password,
    accessToken: body.access_token,
    refreshToken: body.refresh_token,
    csrfToken: body.csrf_token,
    cookie: cookie?.value ?? '',
    organizationId: body.organization_id,
    auth: { authorization: `Bearer ${body.access_token}` },
  };
}

export function inject(app: FastifyInstance, opts: InjectOptions) {
  return app.inject(opts);
}
