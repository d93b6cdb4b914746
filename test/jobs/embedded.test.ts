/**
 * The embedded job runner: jobs are outbox rows until done. Retries with
 * backoff and a dead letter, lease expiry after a crash, a restart, and two
 * runners sharing one PostgreSQL database.
 */
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import { buildTestApp, dbModes, type TestApp } from '../helpers/app.js';
import { HAS_PG } from '../helpers/env.js';
import { claimBatch } from '../../src/events/claim.js';
import { recordJob } from '../../src/events/outbox.js';
import { listDeadJobs } from '../../src/events/claim.js';
import { createJobRegistry, PermanentJobError, processPendingJobs, type JobHandler, type JobRun } from '../../src/jobs/index.js';
import type { BlobStore } from '../../src/storage/index.js';
import { createDocument, getDoc, newOrg, outboxRows, PNG_1PX, processedEvents, waitFor, type Org, type StagedDoc } from './helpers.js';

const FAST = { retry: { attempts: 3, backoffMs: 20, maxBackoffMs: 200 }, pollMs: 10 };

describe.each(dbModes())('embedded job runner on %s', (mode) => {
  let t: TestApp;
  let app: FastifyInstance;
  let org: Org;

  beforeAll(async () => {
    t = await buildTestApp({ mode });
    app = t.app;
    org = await newOrg(app);
  });
  afterAll(async () => t?.close());

  it('retries a failing job with backoff until it succeeds', async () => {
    const calls: JobRun[] = [];
    const flaky: JobHandler = {
      name: 'flaky',
      async run(_ctx, job) {
        calls.push(job);
        if (calls.length < 3) throw new Error(`boom ${calls.length}`);
      },
    };
    await app.jobs.start('embedded', { ...FAST, registry: createJobRegistry([flaky]) });
    try {
      await app.tenantDbs.withTenant(org.tenant, (trx) => recordJob(trx, { name: 'flaky', tenantId: org.tenant.id, payload: { n: 1 } }));
      await waitFor(async () => (await outboxRows(app, org, 'job')).find((r) => r.topic === 'flaky'), (r) => Boolean(r?.published_at));
    } finally {
      await app.jobs.stop();
    }
    expect(calls.map((c) => c.attempt)).toEqual([1, 2, 3]);
    const row = (await outboxRows(app, org, 'job')).find((r) => r.topic === 'flaky')!;
    expect(row).toMatchObject({ attempts: 3, dead_at: null, last_error: 'boom 2' });
  });

  it('runs jobs a Redis deployment handed to Redis and never finished (the deployment now runs without Redis)', async () => {
    const d = await createDocument(app, org, PNG_1PX, { filename: 'handed.png', mimeType: 'image/png' });
    const [row] = (await outboxRows(app, org, 'job')).filter((r) => r.payload.document_id === d.documentId);
    await sql`UPDATE outbox SET enqueued_at = now(), available_at = now() WHERE id = ${row.id}`.execute(app.tenantDbs.dbFor(org.tenant));
    await app.jobs.start('embedded', FAST);
    try {
      expect((await waitFor(() => getDoc(app, org, d.documentId), (doc) => doc.status !== 'pending')).status).toBe('ready');
    } finally {
      await app.jobs.stop();
    }
    expect((await outboxRows(app, org, 'job')).find((r) => r.id === row.id)!.published_at).not.toBeNull();
  });

  it('dead-letters after the last attempt, keeps the error, and fails the document with the reason', async () => {
    const broken: BlobStore = { ...app.storage, kind: 'local', get: async () => { throw new Error('EIO: storage unavailable'); } };
    const d = await createDocument(app, org, PNG_1PX, { filename: 'p.png', mimeType: 'image/png' });
    await app.jobs.start('embedded', { ...FAST, storage: broken });
    try {
      await waitFor(() => getDoc(app, org, d.documentId), (doc) => doc.status !== 'pending');
    } finally {
      await app.jobs.stop();
    }
    const doc = await getDoc(app, org, d.documentId);
    expect(doc.status).toBe('failed');
    expect(doc.error_message).toBe('Validation could not be completed after 3 attempts: EIO: storage unavailable');
    expect(await processedEvents(app, org, d.documentId)).toHaveLength(1);
    const dead = (await listDeadJobs(app.tenantDbs.dbFor(org.tenant), { tenantId: org.tenant.id })).find(
      (j) => (j.payload as any).document_id === d.documentId,
    );
    expect(dead).toMatchObject({ topic: 'validate_document', attempts: 3, last_error: 'EIO: storage unavailable' });
  });

  it('dead-letters a PermanentJobError and an unknown job at once', async () => {
    const bad: JobHandler = { name: 'bad', run: async () => { throw new PermanentJobError('payload is nonsense'); } };
    await app.tenantDbs.withTenant(org.tenant, async (trx) => {
      await recordJob(trx, { name: 'bad', tenantId: org.tenant.id, payload: {} });
      await recordJob(trx, { name: 'nobody_handles_this', tenantId: org.tenant.id, payload: {} });
    });
    await app.jobs.start('embedded', { ...FAST, registry: createJobRegistry([bad]) });
    await processPendingJobs(app);
    await app.jobs.stop();
    const rows = await outboxRows(app, org, 'job');
    expect(rows.find((r) => r.topic === 'bad')).toMatchObject({ attempts: 1, last_error: 'payload is nonsense' });
    expect(rows.find((r) => r.topic === 'bad')!.dead_at).not.toBeNull();
    expect(rows.find((r) => r.topic === 'nobody_handles_this')!.dead_at).not.toBeNull();
  });

  it('runs a job again when its runner died holding it (lease expiry)', async () => {
    const d = await createDocument(app, org, PNG_1PX, { filename: 'lease.png', mimeType: 'image/png' });
    // A runner claims the job and dies: its lease (300 ms) is never extended nor released.
    const claimed = await claimBatch(app.tenantDbs.dbFor(org.tenant), 'job', { limit: 100, leaseMs: 300, ordered: false });
    expect(claimed.map((r) => (r.payload as any).document_id)).toContain(d.documentId);
    await processPendingJobs(app); // nothing due yet: the lease holds
    expect((await getDoc(app, org, d.documentId)).status).toBe('pending');
    await new Promise((r) => setTimeout(r, 400));
    await processPendingJobs(app);
    expect((await getDoc(app, org, d.documentId)).status).toBe('ready');
    const job = (await outboxRows(app, org, 'job')).find((r) => r.payload.document_id === d.documentId)!;
    expect(job.attempts).toBe(2);
  });
});

describe('embedded runner across a restart (embedded database on disk)', () => {
  it('processes the rows left pending when the app stopped, on the next start', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-restart-'));
    const pgliteDir = path.join(dir, 'pglite');
    const uploadFolder = path.join(dir, 'uploads');
    const first = await buildTestApp({ mode: 'pglite', config: { pgliteDir, uploadFolder } });
    const org = await newOrg(first.app);
    const docs: StagedDoc[] = [];
    for (let i = 0; i < 3; i++) {
      docs.push(await createDocument(first.app, org, Buffer.from(`restart ${i}`), { filename: `r${i}.txt` }));
    }
    await first.app.close(); // stopped before any job ran (NODE_ENV=test: nothing auto-started)

    // A production-like start: the runner starts by itself and finds the pending rows.
    const second = await buildTestApp({ mode: 'pglite', config: { pgliteDir, uploadFolder }, env: { NODE_ENV: 'development' } });
    try {
      expect(second.app.jobs.role).toBe('embedded');
      for (const d of docs) {
        const doc = await waitFor(() => getDoc(second.app, org, d.documentId), (x) => x.status !== 'pending');
        expect(doc.status).toBe('ready');
      }
    } finally {
      await second.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!HAS_PG)('two embedded runners on one PostgreSQL database', () => {
  it('take each job once (FOR UPDATE SKIP LOCKED) and validate every document once', async () => {
    const a = await buildTestApp({ mode: 'postgres' });
    const b = await buildTestApp({ mode: 'postgres', config: { databaseUrl: a.config.databaseUrl, uploadFolder: a.config.uploadFolder } });
    try {
      const org = await newOrg(a.app);
      const runs = { a: [] as string[], b: [] as string[] };
      const docs: StagedDoc[] = [];
      for (let i = 0; i < 40; i++) docs.push(await createDocument(a.app, org, Buffer.from(`doc number ${i}`), { filename: `d${i}.txt` }));
      await Promise.all([
        a.app.jobs.start('embedded', { pollMs: 5, onSettled: (j, o) => o === 'done' && runs.a.push(j.id) }),
        b.app.jobs.start('embedded', { pollMs: 5, onSettled: (j, o) => o === 'done' && runs.b.push(j.id) }),
      ]);
      for (const d of docs) await waitFor(() => getDoc(a.app, org, d.documentId), (x) => x.status === 'ready');
      await Promise.all([a.app.jobs.stop(), b.app.jobs.stop()]);
      const all = [...runs.a, ...runs.b];
      expect(all).toHaveLength(40);
      expect(new Set(all).size).toBe(40);
      expect(runs.a.length).toBeGreaterThan(0);
      expect(runs.b.length).toBeGreaterThan(0);
      for (const d of docs) expect(await processedEvents(a.app, org, d.documentId)).toHaveLength(1);
    } finally {
      await b.close();
      await a.close();
    }
  });
});
