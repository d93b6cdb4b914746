/**
 * A worker process SIGKILLed in the middle of a job: the document still ends
 * `ready`. With Redis: BullMQ's stalled-job check hands the job to another
 * worker once the dead one's lock expires. Without Redis (PostgreSQL shared by
 * the processes): the outbox lease expires and another runner claims the row.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { bullJobId } from '../../src/jobs/bullmq.js';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { HAS_PG, HAS_REDIS } from '../helpers/env.js';
import { createDocument, getDoc, newOrg, outboxRows, PNG_1PX, processedEvents, waitFor } from '../jobs/helpers.js';
import { envFor, startChild, type Child } from './child.js';

const FIXTURE = 'test/worker/fixtures/slow-worker.ts';

describe.skipIf(!HAS_PG || !HAS_REDIS)('worker killed mid-job (BullMQ on Redis)', () => {
  let t: TestApp | undefined;
  let child: Child | undefined;
  afterEach(async () => {
    await child?.kill();
    await t?.close();
  });

  it('the stalled job is retried by another worker and the document ends ready', async () => {
    t = await buildTestApp({ mode: 'postgres', redis: true });
    const { app } = t;
    const org = await newOrg(app);
    child = startChild(FIXTURE, envFor(t.config, { JOB_LOCK_MS: '2000', SLOW_MS: '60000' }));
    await child.waitFor(/READY worker/);
    const d = await createDocument(app, org, PNG_1PX, { filename: 'crash.png', mimeType: 'image/png' });
    await child.waitFor(new RegExp(`STARTED ${d.documentId} attempt=1`));
    await child.kill('SIGKILL');
    expect((await getDoc(app, org, d.documentId)).status).toBe('pending');

    // Another worker (here, in the test process) with the normal handler.
    await app.jobs.start('worker', { lockMs: 2000, stalledIntervalMs: 500 });
    const doc = await waitFor(() => getDoc(app, org, d.documentId), (x) => x.status !== 'pending', 30_000);
    expect(doc.status).toBe('ready');
    expect(await processedEvents(app, org, d.documentId)).toHaveLength(1);
    const [row] = await outboxRows(app, org, 'job');
    const job = await app.jobs.queue!.queue.getJob(bullJobId('main', row));
    expect(job?.stalledCounter).toBeGreaterThanOrEqual(1);
    // The job's outbox row is done once the job finished (on the second worker).
    await waitFor(async () => (await outboxRows(app, org, 'job'))[0], (r) => r.published_at !== null, 10_000);
  }, 60_000);
});

describe.skipIf(!HAS_PG)('worker killed mid-job (embedded runner on PostgreSQL, no Redis)', () => {
  let t: TestApp | undefined;
  let child: Child | undefined;
  afterEach(async () => {
    await child?.kill();
    await t?.close();
  });

  it('the lease expires, another runner claims the row, and the document ends ready', async () => {
    t = await buildTestApp({ mode: 'postgres' });
    const { app } = t;
    const org = await newOrg(app);
    child = startChild(FIXTURE, envFor(t.config, { JOB_LOCK_MS: '1500', SLOW_MS: '60000' }));
    await child.waitFor(/READY embedded/);
    const d = await createDocument(app, org, PNG_1PX, { filename: 'crash.png', mimeType: 'image/png' });
    await child.waitFor(new RegExp(`STARTED ${d.documentId} attempt=1`));
    await child.kill('SIGKILL');

    await app.jobs.start('embedded', { pollMs: 20 });
    const doc = await waitFor(() => getDoc(app, org, d.documentId), (x) => x.status !== 'pending', 30_000);
    expect(doc.status).toBe('ready');
    const [job] = (await outboxRows(app, org, 'job')).filter((r) => r.payload.document_id === d.documentId);
    expect(job.attempts).toBe(2); // the killed attempt and the one that finished
    expect(await processedEvents(app, org, d.documentId)).toHaveLength(1);
  }, 60_000);
});
