/**
 * No document stays `pending` after any single failure of the job pipeline on
 * Redis (src/jobs/bullmq.ts: an outbox job row is done only when its job
 * finished): Redis restarted empty (a Redis of the test's own), the API killed
 * right after it acknowledged an upload, PostgreSQL restarted under the worker
 * (a cluster of the test's own), a database recreated next to a Redis that kept
 * the earlier database's jobs. The worker killed mid-job is test/worker/crash.test.ts.
 * After each, the system recovers by itself: every document ends `ready` or `failed`.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createJobRegistry, validateDocument, type JobHandler } from '../../src/jobs/index.js';
import { buildTestApp, uniqueEmail, type TestApp } from '../helpers/app.js';
import { HAS_PG, HAS_REDIS } from '../helpers/env.js';
import { startPgCluster, startRedisServer, type PgCluster, type RedisServer } from '../helpers/services.js';
import { startServerProcess, type ServerProcess } from '../scaling/processes.js';
import { envFor, startChild, type Child } from '../worker/child.js';
import { createDocument, getDoc, newOrg, outboxRows, processedEvents, waitFor, type Org, type StagedDoc } from '../jobs/helpers.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

async function docs(app: FastifyInstance, org: Org, n: number, tag: string): Promise<StagedDoc[]> {
  const out: StagedDoc[] = [];
  for (let i = 0; i < n; i++) out.push(await createDocument(app, org, Buffer.from(`${tag} document ${i}`), { filename: `${tag}${i}.txt` }));
  return out;
}

/** Every document settles (ready or failed) within the timeout; returns their statuses. */
async function settled(app: FastifyInstance, org: Org, list: StagedDoc[], timeoutMs = 60_000): Promise<string[]> {
  const statuses: string[] = [];
  for (const d of list) statuses.push((await waitFor(() => getDoc(app, org, d.documentId), (x) => x.status !== 'pending', timeoutMs)).status);
  return statuses;
}

/** The relay gave the row's job to Redis. */
const handedToRedis = (r: { enqueued_at: Date | null; published_at: Date | null }) => r.enqueued_at !== null || r.published_at !== null;

/** validate_document that waits until `open()` before doing the real work. */
function gatedValidation(): { handler: JobHandler; open(): void } {
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  return {
    handler: { name: validateDocument.name, run: async (ctx, job) => gate.then(() => validateDocument.run(ctx, job)), onDead: validateDocument.onDead },
    open,
  };
}

describe.skipIf(!HAS_PG || !HAS_REDIS)('job pipeline faults (PostgreSQL + Redis)', () => {
  it('Redis restarted empty with jobs handed to it and no worker running: the next worker runs them all', async () => {
    const redis: RedisServer = await startRedisServer();
    cleanups.push(() => redis.destroy());
    const t: TestApp = await buildTestApp({ mode: 'postgres', config: { redisUrl: redis.url } });
    cleanups.push(() => t.close());
    const { app } = t;
    const org = await newOrg(app);
    const list = await docs(app, org, 12, 'lost');
    expect((await app.jobs.relayOnce()).jobs).toBe(12); // in Redis now; the API runs no worker
    expect((await app.jobs.queue!.counts()).waiting).toBe(12);

    await redis.restartEmpty(); // every job gone
    await waitFor(() => app.jobs.queue!.counts().catch(() => null), (c) => c !== null && c.waiting === 0, 10_000);

    await app.jobs.start('worker', { pollMs: 20 });
    cleanups.unshift(() => app.jobs.stop());
    expect(await settled(app, org, list)).toEqual(list.map(() => 'ready'));
    for (const d of list) expect(await processedEvents(app, org, d.documentId)).toHaveLength(1);
    expect((await outboxRows(app, org, 'job')).every((r) => r.published_at !== null)).toBe(true);
  }, 90_000);

  it('Redis restarted empty under a running worker, jobs waiting: they are added again on reconnect, long before JOB_RECHECK_MS', async () => {
    const redis = await startRedisServer();
    cleanups.push(() => redis.destroy());
    const t = await buildTestApp({ mode: 'postgres', config: { redisUrl: redis.url, jobRecheckMs: 3_600_000 } });
    cleanups.push(() => t.close());
    const { app } = t;
    const org = await newOrg(app);
    const gated = gatedValidation();
    await app.jobs.start('worker', { pollMs: 20, concurrency: 2, registry: createJobRegistry([gated.handler]) });
    cleanups.unshift(() => app.jobs.stop());
    const list = await docs(app, org, 10, 'waiting');
    await waitFor(() => outboxRows(app, org, 'job'), (rows) => rows.length === 10 && rows.every(handedToRedis));

    await redis.restartEmpty();
    gated.open();
    expect(await settled(app, org, list, 45_000)).toEqual(list.map(() => 'ready'));
    for (const d of list) expect(await processedEvents(app, org, d.documentId)).toHaveLength(1);
  }, 90_000);

  it('the API SIGKILLed right after acknowledging an upload: the worker processes it', async () => {
    const t = await buildTestApp({ mode: 'postgres', redis: true });
    cleanups.push(() => t.close());
    const { app } = t;
    const api: ServerProcess = await startServerProcess('api', { ...envFor(t.config), NODE_ENV: 'development', JOBS_AUTOSTART: 'false' });
    cleanups.push(() => api.stop(1_000));
    const email = uniqueEmail('killed');
    const password = 'correct horse battery';
    const reg = await fetch(`${api.url}/api/auth/register`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email, password, organization_name: 'Killed API' }),
    });
    expect(reg.status).toBe(201);
    const tid = ((await reg.json()) as { organization_id: string }).organization_id;
    const login = await fetch(`${api.url}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email, password }) });
    const token = ((await login.json()) as { access_token: string }).access_token;
    const form = new FormData();
    form.append('file', new Blob([Buffer.from('acknowledged, then the API died')], { type: 'text/plain' }), 'ack.txt');
    const up = await fetch(`${api.url}/api/tenants/${tid}/documents`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: form });
    expect(up.status).toBe(201);
    api.proc.kill('SIGKILL'); // the moment the answer is in
    const documentId = ((await up.json()) as { id: string }).id;
    await new Promise((r) => api.proc.once('exit', r));

    await app.jobs.start('worker', { pollMs: 20 });
    cleanups.unshift(() => app.jobs.stop());
    const tenant = await app.db.selectFrom('tenants').select(['id', 'isolation', 'db_server', 'db_name', 'storage_quota_mb']).where('id', '=', tid).executeTakeFirstOrThrow();
    const org = { tenant } as Org;
    expect((await waitFor(() => getDoc(app, org, documentId), (d) => d.status !== 'pending', 30_000)).status).toBe('ready');
  }, 90_000);

  it('a database recreated next to a Redis that kept the earlier one\'s jobs (same prefix): every new upload is processed', async () => {
    const first = await buildTestApp({ mode: 'postgres', redis: true });
    cleanups.push(() => first.close());
    const org1 = await newOrg(first.app);
    const earlier = await docs(first.app, org1, 8, 'earlier');
    await first.app.jobs.start('worker', { pollMs: 20 });
    expect(await settled(first.app, org1, earlier)).toEqual(earlier.map(() => 'ready'));
    await first.app.jobs.stop();

    // A fresh database (outbox ids start at 1 again), the same Redis and prefix.
    const second = await buildTestApp({ mode: 'postgres', redis: true, config: { redisPrefix: first.config.redisPrefix } });
    cleanups.push(() => second.app.close());
    const org2 = await newOrg(second.app);
    const later = await docs(second.app, org2, 12, 'later');
    const earlierIds = new Set((await outboxRows(first.app, org1, 'job')).map((r) => r.id));
    expect((await outboxRows(second.app, org2, 'job')).filter((r) => earlierIds.has(r.id)).length).toBeGreaterThan(0); // outbox ids repeat
    await second.app.jobs.start('worker', { pollMs: 20 });
    cleanups.unshift(() => second.app.jobs.stop());
    expect(await settled(second.app, org2, later, 30_000)).toEqual(later.map(() => 'ready'));
  }, 90_000);
});

/** A child process started again whenever it exits, until stop(). */
function supervised(script: string, env: Record<string, string>): { current(): Child; restarts(): number; stop(): Promise<void> } {
  let stopping = false;
  let restarts = 0;
  let child: Child;
  const start = () => {
    child = startChild(script, env);
    child.proc.once('exit', () => {
      if (stopping) return;
      restarts += 1;
      start();
    });
  };
  start();
  return {
    current: () => child,
    restarts: () => restarts,
    async stop() {
      stopping = true;
      await child.kill();
    },
  };
}

describe.skipIf(!HAS_PG || !HAS_REDIS)('PostgreSQL restarted under a worker (a cluster of the test\'s own)', () => {
  it('jobs that failed for good while the database was away run again once it is back', async () => {
    const cluster: PgCluster = await startPgCluster();
    cleanups.push(() => cluster.destroy());
    const t = await buildTestApp({ mode: 'postgres', redis: true, config: { databaseUrl: cluster.url, tenantDbServers: [cluster.url] } });
    cleanups.push(() => t.close());
    const { app } = t;
    const org = await newOrg(app);
    // A worker process whose jobs sleep 1.5 s before touching the database, with few fast retries,
    // so that every attempt (and the dead-letter hook) fails while PostgreSQL is down. Supervised
    // like a deployment's worker: one that dies is started again.
    const worker = supervised('test/worker/fixtures/slow-worker.ts', envFor(t.config, {
      SLOW_MS: '1500', JOB_ATTEMPTS: '2', JOB_BACKOFF_MS: '100', JOB_RECHECK_MS: '2000', JOB_CONCURRENCY: '16',
      JOB_LOCK_MS: '5000', // a job of a worker that died is another's soon
    }));
    cleanups.unshift(() => worker.stop());
    await worker.current().waitFor(/READY worker/);
    const list = await docs(app, org, 10, 'pgdown');
    await worker.current().waitFor(/STARTED(.|\n)*STARTED/);
    await waitFor(() => outboxRows(app, org, 'job'), (rows) => rows.length === 10 && rows.every(handedToRedis));

    await cluster.stop('fast');
    await new Promise((r) => setTimeout(r, 14_000)); // both attempts and the four dead-letter tries fail meanwhile
    await cluster.start();

    const statuses = await settled(app, org, list, 90_000);
    expect(statuses.every((s) => s === 'ready' || s === 'failed')).toBe(true);
    // Until every checked-out pg client has an 'error' listener, the outage can kill the worker (then restarted).
    if (worker.restarts() > 0) console.warn(`the worker was restarted ${worker.restarts()} time(s) during the PostgreSQL restart`);
    for (const d of list) expect(await processedEvents(app, org, d.documentId)).toHaveLength(1);
  }, 180_000);
});
