/**
 * PostgreSQL stopped under a running API (a cluster of the test's own, never
 * the machine's): every request that needs it answers 503 problem+json
 * `database_unavailable` with Retry-After at once (the refused connection is
 * not waited on), /ready answers 503 within its timeout naming the database,
 * and once PostgreSQL is back the same app serves again by itself.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance, InjectOptions } from 'fastify';
import { buildTestApp, signUp, type Session, type TestApp } from '../helpers/app.js';
import { HAS_PG } from '../helpers/env.js';
import { startPgCluster, type PgCluster } from '../helpers/services.js';
import { multipart } from '../documents/helpers.js';
import { timed, median } from './helpers.js';

const READY_TIMEOUT_MS = 300;

// The cluster needs the PostgreSQL server binaries (initdb, pg_ctl), which a PostgreSQL run has.
describe.skipIf(!HAS_PG)('PostgreSQL stopped and started again under a running API', () => {
  let cluster: PgCluster;
  let t: TestApp;
  let app: FastifyInstance;
  let s: Session;
  let tid: string;

  beforeAll(async () => {
    cluster = await startPgCluster();
    const admin = new pg.Client({ connectionString: cluster.url });
    await admin.connect();
    await admin.query('CREATE DATABASE tb_fault');
    await admin.end();
    const url = cluster.urlFor('tb_fault');
    t = await buildTestApp({ mode: 'pglite', config: { databaseUrl: url, tenantDbServers: [url] }, env: { READY_TIMEOUT_MS: String(READY_TIMEOUT_MS) } });
    app = t.app;
    await (app as { jobs?: { stop?(): Promise<void> } }).jobs?.stop?.();
    s = await signUp(app, { organization_name: 'Outage' });
    tid = s.organizationId!;
  }, 120_000);
  afterAll(async () => {
    await t?.close();
    await cluster?.destroy();
  });

  const uploadRequest = (): InjectOptions => {
    const body = multipart([{ name: 'file', filename: 'x.bin', contentType: 'application/octet-stream', data: randomBytes(1000) }]);
    return { method: 'POST', url: `/api/tenants/${tid}/documents`, headers: { ...s.auth, ...body.headers }, payload: body.payload };
  };
  const requests = (): Array<[string, InjectOptions]> => [
    ['me (session lookup)', { method: 'GET', url: '/api/auth/me', headers: s.auth }],
    ['login', { method: 'POST', url: '/api/auth/login', payload: { email: s.email, password: s.password } }],
    ['document list (pipelined read)', { method: 'GET', url: `/api/tenants/${tid}/documents`, headers: s.auth }],
    ['upload', uploadRequest()],
  ];

  it('answers normally while PostgreSQL is up', async () => {
    for (const [name, req] of requests()) {
      const res = await app.inject(req);
      expect(res.statusCode, name).toBeLessThan(300);
    }
  });

  it('answers 503 database_unavailable with Retry-After, fast, while it is down; /ready says so within its timeout', async () => {
    await cluster.stop('fast');
    const times: number[] = [];
    for (let round = 0; round < 3; round++) {
      for (const [name, req] of requests()) {
        const { value: res, ms } = await timed(() => app.inject(req));
        times.push(ms);
        expect(res.statusCode, `${name}: ${res.body}`).toBe(503);
        expect(res.headers['content-type'], name).toMatch(/application\/problem\+json/);
        expect(Number(res.headers['retry-after']), name).toBeGreaterThan(0);
        expect(res.json(), name).toMatchObject({ status: 503, code: 'database_unavailable' });
        expect(res.body, name).not.toMatch(/ECONNREFUSED|127\.0\.0\.1|at .*\.js/);
      }
    }
    expect(median(times)).toBeLessThan(200);

    const { value: ready, ms } = await timed(() => app.inject({ method: 'GET', url: '/ready' }));
    expect(ready.statusCode).toBe(503);
    expect(ready.json().checks.database).toMatch(/^failed/);
    expect(ready.json().checks.storage).toBe('ok');
    expect(ms).toBeLessThan(READY_TIMEOUT_MS + 500);
  });

  it('serves again once PostgreSQL is back, without a restart of the app', async () => {
    await cluster.start();
    for (const [name, req] of requests()) {
      const res = await app.inject(req);
      expect(res.statusCode, `${name}: ${res.body}`).toBeLessThan(300);
    }
    expect((await app.inject({ method: 'GET', url: '/ready' })).statusCode).toBe(200);
  });
});
