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
});
