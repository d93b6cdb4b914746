/**
 * Quota reservations (src/documents/quota.ts): concurrent reservations of one
 * tenant in a process go as one conditional UPDATE of their sum; when the sum
 * does not fit, each is tried alone in arrival order, so exactly those that fit
 * are reserved - as with one UPDATE each.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { PGlite } from '@electric-sql/pglite';
import { buildTestApp, dbModes, type TestApp } from '../helpers/app.js';
import { MB, releaseQuota, reserveQuota } from '../../src/documents/quota.js';
import { countRows, newOrg, quietJobs, setQuotaMb, upload, usedBytes } from './helpers.js';

/** UPDATEs of `tenants` sent while `fn` runs. */
async function countTenantUpdates(mode: string, fn: () => Promise<void>): Promise<number> {
  let n = 0;
  const proto: any = mode === 'postgres' ? pg.Client.prototype : PGlite.prototype;
  const original = proto.query;
  proto.query = function (this: unknown, ...args: any[]) {
    const text = typeof args[0] === 'string' ? args[0] : args[0]?.text;
    if (typeof text === 'string' && /^update "tenants"/i.test(text)) n += 1;
    return original.apply(this, args);
  };
  try {
    await fn();
  } finally {
    proto.query = original;
  }
  return n;
}

describe.each(dbModes())('quota reservations on %s', (mode) => {
  let t: TestApp;
  let app: FastifyInstance;

  beforeAll(async () => {
    t = await buildTestApp({ mode });
    app = t.app;
    await quietJobs(app);
  });
  afterAll(async () => t?.close());

  it('reserves concurrent requests that fit together in fewer UPDATEs, each counted once', async () => {
    const o = await newOrg(app, 'Quota batch');
    await setQuotaMb(app, o.tid, 10);
    let results: boolean[] = [];
    const updates = await countTenantUpdates(mode, async () => {
      results = await Promise.all(Array.from({ length: 20 }, (_, i) => reserveQuota(app.db, o.tid, 1000 + i)));
    });
    expect(results).toEqual(Array(20).fill(true));
    expect(await usedBytes(app, o.tid)).toBe(20 * 1000 + (19 * 20) / 2);
    expect(updates).toBeLessThanOrEqual(2); // the first alone, the 19 that waited for it together
    await releaseQuota(app.db, o.tid, await usedBytes(app, o.tid));
    expect(await usedBytes(app, o.tid)).toBe(0);
  });

  it('when the sum does not fit, grants exactly those that fit, in arrival order', async () => {
    const o = await newOrg(app, 'Quota overflow');
    await setQuotaMb(app, o.tid, 1);
    const sizes = [400_000, 400_000, 300_000, 200_000, 100_000, 50_000];
    const results = await Promise.all(sizes.map((s) => reserveQuota(app.db, o.tid, s)));
    // 400k + 400k = 800k; 300k would exceed 1 MiB (1 048 576); 200k fits (1 000 000); 100k does not; 48 576 left, so 50k does not.
    expect(results).toEqual([true, true, false, true, false, false]);
    expect(await usedBytes(app, o.tid)).toBe(1_000_000);
    expect(await usedBytes(app, o.tid)).toBeLessThanOrEqual(MB);
  });

  it('many concurrent uploads against a small quota: exactly as many as fit are stored and counted', async () => {
    const o = await newOrg(app, 'Quota uploads');
    await setQuotaMb(app, o.tid, 1);
    const size = 300 * 1024;
    const results = await Promise.all(Array.from({ length: 10 }, () => upload(app, o.admin, o.tid, randomBytes(size))));
    const codes = results.map((r) => r.statusCode);
    expect(codes.filter((c) => c === 201)).toHaveLength(3);
    expect(codes.filter((c) => c === 413)).toHaveLength(7);
    expect(await usedBytes(app, o.tid)).toBe(3 * size);
    expect(await countRows(app, o.tid)).toEqual({ files: 3, documents: 3 });
  });

  it('a failing UPDATE fails every reservation of its batch and reserves nothing', async () => {
    const results = await Promise.allSettled(Array.from({ length: 3 }, () => reserveQuota(app.db, 'not-a-uuid', 10)));
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
  });
});
