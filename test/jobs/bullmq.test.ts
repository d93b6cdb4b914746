/**
 * Jobs on Redis (BullMQ): the relay hands outbox rows to the queue with a job
 * id made from the row, the row is done when the job finished, workers in
 * separate processes share the queue, Redis can go away without losing a job,
 * and failing jobs are retried then dead-lettered.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { HAS_PG, HAS_REDIS } from '../helpers/env.js';
import { claimBatch } from '../../src/events/claim.js';
import { bullJobId, bullPrefix, createJobQueue } from '../../src/jobs/bullmq.js';
import { processPendingJobs, runRelayOnce } from '../../src/jobs/index.js';
import type { BlobStore } from '../../src/storage/index.js';
import { createDocument, getDoc, newOrg, outboxRows, PNG_1PX, processedEvents, waitFor, type Org, type StagedDoc } from './helpers.js';
import { envFor, startChild, type Child } from '../worker/child.js';

describe.skipIf(!HAS_REDIS)('jobs on BullMQ', () => {
  let t: TestApp;
  let app: FastifyInstance;
  let org: Org;

  beforeAll(async () => {
    t = await buildTestApp({ mode: HAS_PG ? 'postgres' : 'pglite', redis: true });
    app = t.app;
    org = await newOrg(app);
  });
  afterAll(async () => t?.close());

  it('the API starts nothing; the relay adds each outbox job once, with a job id made from the row; the row is done when the job is', async () => {
    expect(app.jobs.role).toBeNull();
    const d = await createDocument(app, org, PNG_1PX, { filename: 'q.png', mimeType: 'image/png' });
    const [row] = (await outboxRows(app, org, 'job')).filter((r) => r.payload.document_id === d.documentId);
    expect(await runRelayOnce(app)).toMatchObject({ jobs: 1 });
    const queue = app.jobs.queue!;
    const job = await queue.queue.getJob(bullJobId('main', row));
    expect(job).toMatchObject({
      name: 'validate_document',
      data: { source: 'main', outbox_id: row.id, outbox_uid: row.uid, tenant_id: org.tenant.id, payload: { document_id: d.documentId } },
    });
    // Handed to Redis, not done: the job has not run.
    const handed = (await outboxRows(app, org, 'job')).find((r) => r.id === row.id)!;
    expect(handed.enqueued_at).not.toBeNull();
    expect(handed.published_at).toBeNull();

    // A relay that crashed after adding but before marking sends the same rows again: no second job.
    const again = await createDocument(app, org, Buffer.from('again'), { filename: 'again.txt' });
    const source = (await app.jobs.sources.list())[0];
    const claimed = await claimBatch(source.db, 'job', { limit: 10, leaseMs: 1, ordered: true });
    await queue.enqueue(claimed, source); // ...and the relay dies here
    await new Promise((r) => setTimeout(r, 20));
    expect((await runRelayOnce(app)).jobs).toBe(1); // the lease expired: re-sent
    const counts = await queue.counts();
    expect(counts.waiting + counts.prioritized).toBe(2);
    const waiting = await queue.queue.getJobs(['waiting', 'prioritized']);
    expect(waiting.filter((j) => j.data.payload.document_id === again.documentId)).toHaveLength(1);

    await app.jobs.start('worker');
    await processPendingJobs(app);
    await app.jobs.stop();
    expect((await getDoc(app, org, d.documentId)).status).toBe('ready');
    expect((await getDoc(app, org, again.documentId)).status).toBe('ready');
    expect(await processedEvents(app, org, again.documentId)).toHaveLength(1);
    expect((await outboxRows(app, org, 'job')).find((r) => r.id === row.id)!.published_at).not.toBeNull();
  });

  it('keeps jobs in the outbox while Redis is unreachable and delivers them when it is back', async () => {
    // The relay (and worker) pointed at a closed port: Redis "down" for this process only.
    await app.jobs.start('worker', { queueRedisUrl: 'redis://127.0.0.1:1', pollMs: 20 });
    const docs: StagedDoc[] = [];
    for (let i = 0; i < 5; i++) docs.push(await createDocument(app, org, Buffer.from(`while redis is down ${i}`), { filename: `down${i}.txt` }));
    const ids = new Set(docs.map((d) => d.documentId));
    const rows = await waitFor(
      async () => (await outboxRows(app, org, 'job')).filter((r) => ids.has(r.payload.document_id)),
      (rs) => rs.length === 5 && rs.every((r) => r.attempts >= 1 && r.last_error),
    );
    expect(rows.every((r) => r.published_at === null)).toBe(true);
    expect(rows[0].last_error).toMatch(/Redis|connect|ECONNREFUSED|writeable/i);
    for (const d of docs) expect((await getDoc(app, org, d.documentId)).status).toBe('pending');
    await app.jobs.stop();

    // Redis is back.
    await app.jobs.start('worker', { pollMs: 20 });
    try {
      for (const d of docs) await waitFor(() => getDoc(app, org, d.documentId), (x) => x.status === 'ready', 30_000);
    } finally {
      await app.jobs.stop();
    }
    for (const d of docs) expect(await processedEvents(app, org, d.documentId)).toHaveLength(1);
  });

  it('retries with backoff, then dead-letters: failed set in BullMQ, dead_at in the outbox, document failed', async () => {
    const broken: BlobStore = { ...app.storage, get: async () => { throw new Error('EIO: storage unavailable'); } };
    const d = await createDocument(app, org, PNG_1PX, { filename: 'dl.png', mimeType: 'image/png' });
    await app.jobs.start('worker', { storage: broken, retry: { attempts: 3, backoffMs: 20, maxBackoffMs: 100 }, pollMs: 20 });
    try {
      await waitFor(() => getDoc(app, org, d.documentId), (x) => x.status !== 'pending', 30_000);
    } finally {
      await app.jobs.stop();
    }
    const doc = await getDoc(app, org, d.documentId);
    expect(doc).toMatchObject({ status: 'failed', error_message: 'Validation could not be completed after 3 attempts: EIO: storage unavailable' });
    const [row] = (await outboxRows(app, org, 'job')).filter((r) => r.payload.document_id === d.documentId);
    await waitFor(async () => (await outboxRows(app, org, 'job')).find((r) => r.id === row.id)!, (r) => r.dead_at !== null);
    const q = createJobQueue({ redisUrl: t.config.redisUrl!, prefix: bullPrefix(t.config.redisPrefix) });
    try {
      const job = await q.queue.getJob(bullJobId('main', row));
      expect(await job!.getState()).toBe('failed');
      expect(job!.attemptsMade).toBe(3);
      expect(job!.failedReason).toMatch(/EIO/);
    } finally {
      await q.close();
    }
  });
});

describe.skipIf(!HAS_PG || !HAS_REDIS)('two worker processes on one queue (npx tsx src/worker.ts)', () => {
  let t: TestApp;
  const children: Child[] = [];
  afterAll(async () => {
    await Promise.all(children.map((c) => c.kill('SIGTERM')));
    await t?.close();
  });

  it('process each job exactly once in effect', async () => {
    t = await buildTestApp({ mode: 'postgres', redis: true });
    const { app } = t;
    const org = await newOrg(app);
    for (const name of ['w1', 'w2']) {
      const c = startChild('src/worker.ts', envFor(t.config, { JOB_CONCURRENCY: '4' }));
      children.push(c);
      await c.waitFor(/worker ready/);
      void name;
    }
    const docs: StagedDoc[] = [];
    for (let i = 0; i < 60; i++) docs.push(await createDocument(app, org, Buffer.from(`two workers ${i}`), { filename: `w${i}.txt` }));
    for (const d of docs) await waitFor(() => getDoc(app, org, d.documentId), (x) => x.status === 'ready', 30_000);

    const validated = children.map((c) =>
      c
        .output()
        .split('\n')
        .filter((l) => l.includes('"document validated"'))
        .map((l) => JSON.parse(l).document_id as string),
    );
    const all = validated.flat();
    expect(all.sort()).toEqual(docs.map((d) => d.documentId).sort()); // each once, across both
    expect(validated[0].length).toBeGreaterThan(0);
    expect(validated[1].length).toBeGreaterThan(0);
    for (const d of docs) expect(await processedEvents(app, org, d.documentId)).toHaveLength(1);
  }, 90_000);
});
