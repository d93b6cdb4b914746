/**
 * /ready with dependencies that hang or fail: it answers 503 within its own
 * timeout (READY_TIMEOUT_MS; the checks run in parallel, each bounded), naming
 * every check that failed and how.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { timed } from './helpers.js';

const TIMEOUT_MS = 300;

describe('/ready with hanging and failing checks', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp({ env: { READY_TIMEOUT_MS: String(TIMEOUT_MS) } });
  });
  afterAll(async () => t?.close());

  it('answers 503 within its timeout, naming each check that failed, the others ok', async () => {
    const hang = () => new Promise<void>(() => {});
    t.app.readiness.push(
      { name: 'hung-a', check: hang },
      { name: 'hung-b', check: hang },
      { name: 'broken', check: async () => { throw new Error('connection refused'); } },
    );
    const { value: res, ms } = await timed(() => t.app.inject({ method: 'GET', url: '/ready' }));
    expect(res.statusCode).toBe(503);
    expect(res.json()).toEqual({
      status: 'unavailable',
      checks: {
        database: 'ok',
        storage: 'ok',
        'hung-a': `failed: no answer within ${TIMEOUT_MS} ms`,
        'hung-b': `failed: no answer within ${TIMEOUT_MS} ms`,
        broken: 'failed: connection refused',
      },
    });
    // One timeout, not one per hanging check.
    expect(ms).toBeGreaterThanOrEqual(TIMEOUT_MS - 20);
    expect(ms).toBeLessThan(TIMEOUT_MS * 2);
    t.app.readiness.splice(-3);
    expect((await t.app.inject({ method: 'GET', url: '/ready' })).statusCode).toBe(200);
  });
});
