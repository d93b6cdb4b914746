/**
 * Jobs on Redis (REDIS_URL set): one BullMQ queue, `jobs`.
 *
 * - The job relay claims outbox job rows (main database and every dedicated
 *   tenant database, id order per tenant) and adds them with
 *   `jobId = <source>-<outbox id>`: a relay that re-sends after a crash adds
 *   nothing twice (BullMQ ignores an existing id; completed jobs are kept a day
 *   for that). Rows are marked published once Redis accepted them; while Redis
 *   is unreachable they stay in the outbox and are retried with backoff.
 * - Workers (any number of processes) take each job once; a worker that dies
 *   mid-job loses its lock and the stalled-job check hands the job to another.
 *   Failed attempts are retried with exponential backoff up to `attempts`; the
 *   last one is dead-lettered: the job stays in BullMQ's failed set with its
 *   error, the outbox row gets `dead_at`/`last_error`, and the handler's
 *   `onDead` runs (the document becomes `failed` with the reason).
 */
import { Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import type { AppMetrics } from '../http/metrics.js';
import { markDead, type ClaimedRow } from '../events/claim.js';
import { createOutboxRelay, errorText, type OutboxRelay, type RelayLogger } from '../events/relay.js';
import type { OutboxSource, OutboxSources } from '../events/sources.js';
import { deadLetter, executeJob } from './execute.js';
import type { JobRegistry } from './registry.js';
import { DEFAULT_RETRY, type JobContext, type JobRun, type RetryPolicy } from './types.js';

export const QUEUE_NAME = 'jobs';

export interface BullJobData {
  /** Outbox source key ('main' or 'tenant-<uuid>'). */
  source: string;
  outbox_id: number;
  tenant_id: string;
  payload: Record<string, unknown>;
  /** When the outbox row was written (latency metrics). */
  created_at: string;
}

/** Resolves when `p` settles or after `ms`, whichever comes first (closing against an unreachable Redis never settles). */
async function settleWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const settled = await Promise.race([
    p.then(
      () => true,
      () => true,
    ),
    new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms))),
  ]);
  clearTimeout(timer);
  return settled;
}

/** BullMQ key prefix from REDIS_PREFIX ('tb:' -> 'tb'). */
export function bullPrefix(redisPrefix: string): string {
  return redisPrefix.replace(/:+$/, '') || 'tb';
}

export function bullJobId(source: string, outboxId: number): string {
  return `${source}-${outboxId}`;
}

export interface JobQueue {
  readonly queue: Queue<BullJobData>;
  enqueue(rows: ClaimedRow[], source: OutboxSource): Promise<void>;
  counts(): Promise<Record<string, number>>;
  close(): Promise<void>;
}

export function createJobQueue(opts: {
  redisUrl: string;
  prefix: string;
  retry?: RetryPolicy;
  /** An add that takes longer fails (the rows stay in the outbox). */
  timeoutMs?: number;
}): JobQueue {
  const retry = opts.retry ?? DEFAULT_RETRY;
  // Fail fast while Redis is away: the outbox keeps the rows, the relay retries.
  const connection = new Redis(opts.redisUrl, { maxRetriesPerRequest: 1, enableOfflineQueue: false, connectTimeout: 5_000 });
  connection.on('error', () => {});
  const queue = new Queue<BullJobData>(QUEUE_NAME, {
    connection,
    prefix: opts.prefix,
    defaultJobOptions: {
      attempts: retry.attempts,
      backoff: { type: 'exponential', delay: retry.backoffMs },
      removeOnComplete: { age: 24 * 3600, count: 100_000 },
      removeOnFail: { age: 30 * 24 * 3600 },
    },
  });
  queue.on('error', () => {});
  const timeoutMs = opts.timeoutMs ?? 10_000;

  /** Waits briefly for the connection (at start-up); fails fast when Redis is away. */
  async function ready(): Promise<void> {
    if (connection.status === 'ready') return;
    await new Promise<void>((resolve, reject) => {
      const onReady = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        connection.off('ready', onReady);
        reject(new Error(`Redis is not reachable (connection ${connection.status})`));
      }, Math.min(timeoutMs, 2_000));
      connection.once('ready', onReady);
    });
  }

  return {
    queue,
    async enqueue(rows, source) {
      const jobs = rows.map((r) => ({
        name: r.topic,
        data: {
          source: source.key,
          outbox_id: r.id,
          tenant_id: r.tenant_id ?? '',
          payload: (r.payload ?? {}) as Record<string, unknown>,
          created_at: new Date(r.created_at).toISOString(),
        },
        opts: { jobId: bullJobId(source.key, r.id) },
      }));
      await ready();
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          queue.addBulk(jobs),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`adding ${jobs.length} jobs to Redis timed out`)), timeoutMs);
          }),
        ]);
      } finally {
        clearTimeout(timer);
      }
    },
    async counts() {
      return queue.getJobCounts('waiting', 'active', 'delayed', 'failed', 'prioritized', 'waiting-children');
    },
    async close() {
      await settleWithin(queue.close(), connection.status === 'ready' ? 5_000 : 500);
      connection.disconnect();
    },
  };
}

/** The relay from the outbox to BullMQ. */
export function createJobRelay(opts: {
  sources: OutboxSources;
  queue: JobQueue;
  log?: RelayLogger;
  batchSize?: number;
  leaseMs?: number;
  idleMs?: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
}): OutboxRelay {
  return createOutboxRelay({
    kind: 'job',
    name: 'job-relay',
    sources: opts.sources,
    log: opts.log,
    batchSize: opts.batchSize,
    leaseMs: opts.leaseMs,
    idleMs: opts.idleMs,
    minGapMs: 5,
    retryBaseMs: opts.retryBaseMs ?? 500,
    retryMaxMs: opts.retryMaxMs ?? 30_000,
    deliver: (rows, source) => opts.queue.enqueue(rows, source),
  });
}

export interface BullWorkerOptions {
  ctx: JobContext;
  registry: JobRegistry;
  sources: OutboxSources;
  redisUrl: string;
  prefix: string;
  concurrency?: number;
  /** Lock time; a worker that stops renewing it (died) has its job taken over after about this long. */
  lockDurationMs?: number;
  stalledIntervalMs?: number;
  /** How often a job may be found stalled before it fails for good. */
  maxStalledCount?: number;
  metrics?: AppMetrics;
  onSettled?: (job: JobRun, outcome: 'done' | 'retry' | 'dead') => void;
}

export function jobRunFromBull(job: Job<BullJobData>): JobRun {
  return {
    id: job.id ?? bullJobId(job.data.source, job.data.outbox_id),
    name: job.name,
    tenantId: job.data.tenant_id,
    payload: job.data.payload ?? {},
    attempt: job.attemptsMade + 1,
    maxAttempts: job.opts.attempts ?? 1,
  };
}

export function createBullWorker(opts: BullWorkerOptions): { worker: Worker<BullJobData>; close(): Promise<void> } {
  const { ctx, registry } = opts;
  const connection = new Redis(opts.redisUrl, { maxRetriesPerRequest: null, connectTimeout: 5_000 });
  connection.on('error', () => {});

  async function recordDead(job: Job<BullJobData>, error: Error): Promise<void> {
    const source = await opts.sources.get(job.data.source).catch(() => null);
    if (!source) return;
    await markDead(source.db, job.data.outbox_id, errorText(error)).catch((err) =>
      ctx.log.warn({ err, job_id: job.id }, 'could not record the dead-lettered job in the outbox'),
    );
  }

  /** The dead-letter hook with a few local retries: BullMQ will not run this job again. */
  async function deadLetterFinal(job: Job<BullJobData>, run: JobRun, error: Error): Promise<void> {
    for (let i = 0; i < 4; i++) {
      const r = await deadLetter(ctx, registry, run, error);
      if (r.outcome === 'dead') break;
      await new Promise((res) => setTimeout(res, 500 * 2 ** i));
    }
    await recordDead(job, error);
  }

  const worker = new Worker<BullJobData>(
    QUEUE_NAME,
    async (job) => {
      const run = jobRunFromBull(job);
      const result = await executeJob(ctx, registry, run, opts.metrics);
      opts.onSettled?.(run, result.outcome);
      if (result.outcome === 'done') return result.result ?? null;
      if (result.outcome === 'dead') {
        await recordDead(job, result.error);
        throw new UnrecoverableError(result.error.message);
      }
      if (run.attempt >= run.maxAttempts) {
        // Dead, but the hook failed: try it again here before giving up.
        await deadLetterFinal(job, run, result.error);
        throw new UnrecoverableError(result.error.message);
      }
      throw result.error;
    },
    {
      connection,
      prefix: opts.prefix,
      concurrency: opts.concurrency ?? 16,
      lockDuration: opts.lockDurationMs ?? 30_000,
      stalledInterval: opts.stalledIntervalMs ?? 30_000,
      maxStalledCount: opts.maxStalledCount ?? 2,
    },
  );
  let lastErrorLog = 0;
  worker.on('error', (err) => {
    // While Redis is away this fires on every reconnect attempt: log it now and then.
    if (Date.now() - lastErrorLog < 10_000) return;
    lastErrorLog = Date.now();
    ctx.log.error({ err }, 'job worker error');
  });
  // A job that stalled too often (its workers kept dying) fails without reaching the processor.
  worker.on('failed', (job, err) => {
    if (!job || !/stalled/i.test(err?.message ?? job.failedReason ?? '')) return;
    const run = jobRunFromBull(job);
    void deadLetterFinal(job, { ...run, attempt: run.maxAttempts }, err);
  });

  return {
    worker,
    /** Waits (bounded) for the jobs in progress; an unfinished one is retried elsewhere when its lock expires. */
    async close() {
      // Without Redis there is nothing to finish: force (a graceful close would wait for a connection).
      if (connection.status === 'ready') await settleWithin(worker.close(), 30_000);
      else await settleWithin(worker.close(true), 1_000);
      connection.disconnect();
    },
  };
}
