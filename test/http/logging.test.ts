import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { signUp } from '../helpers/app.js';

describe('structured logs', () => {
  const lines: any[] = [];
  let app: FastifyInstance;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-log-'));

  beforeAll(async () => {
    const stream = new Writable({
      write(chunk, _enc, cb) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l));
        cb();
      },
    });
    const config = { ...loadConfig({ NODE_ENV: 'test', DATA_DIR: dataDir }), pgliteDir: 'memory://' };
    app = await buildApp(config, { logger: { level: 'info', stream } });
    await app.ready();
  });
  afterAll(async () => {
    await app?.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('logs JSON with the request id and the user id, and never the credentials', async () => {
    const s = await signUp(app);
    await app.inject({ method: 'GET', url: '/api/users/me', headers: { ...s.auth, 'x-request-id': 'req-log-1' }, cookies: { session: s.cookie } });
    const mine = lines.filter((l) => l.reqId === 'req-log-1');
    expect(mine.length).toBeGreaterThanOrEqual(2);
    const completed = mine.find((l) => l.msg === 'request completed');
    expect(completed).toMatchObject({ reqId: 'req-log-1', user_id: s.userId, res: { statusCode: 200 } });
    const all = JSON.stringify(lines);
    expect(all).not.toContain(s.accessToken);
    expect(all).not.toContain(s.cookie);
    expect(all).not.toContain(s.password);
  });

  it('adds the tenant id on tenant routes, and neither id leaks into the next request\'s lines', async () => {
    const s = await signUp(app, { organization_name: 'Logged Org' });
    const tid = s.organizationId!;
    await app.inject({ method: 'GET', url: `/api/tenants/${tid}/documents`, headers: { ...s.auth, 'x-request-id': 'req-log-2' } });
    await app.inject({ method: 'GET', url: '/health', headers: { 'x-request-id': 'req-log-3' } });
    const completed = lines.find((l) => l.reqId === 'req-log-2' && l.msg === 'request completed');
    expect(completed).toMatchObject({ user_id: s.userId, tenant_id: tid, res: { statusCode: 200 } });
    const next = lines.filter((l) => l.reqId === 'req-log-3');
    expect(next.length).toBeGreaterThanOrEqual(1);
    for (const l of next) {
      expect(l.user_id).toBeUndefined();
      expect(l.tenant_id).toBeUndefined();
    }
    // The server's own logger never gets request fields.
    app.log.info('after requests');
    const own = lines.find((l) => l.msg === 'after requests');
    expect(own.user_id).toBeUndefined();
    expect(own.tenant_id).toBeUndefined();
  });
});
