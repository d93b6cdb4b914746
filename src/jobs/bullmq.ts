/**
 * Jobs on Redis (REDIS_URL set): one BullMQ queue, `jobs`.
 *
 * An outbox job row is done only when its job finished, never when Redis
 * accepted it, so a job Redis loses (a restart without persistence, a failover
 * to a replica that had not received it, an operator's FLUSHALL, eviction) is
 * given to Redis again and no document is left `pending`:
 *
 * - The job relay claims new outbox job rows (main database and every dedicated
 *   tenant database, id order per tenant), adds them to BullMQ and marks them
 *   `enqueued` (src/events/claim.ts `markEnqueued`): not done, and due for a
 *   check after JOB_RECHECK_MS.
 * - The worker that completes a job marks its row done (`published_at`) before
 *   the job completes in BullMQ; if that fails (database away) the attempt
 *   throws and is retried. A job dead-lettered after its dead-letter hook ran
 *   marks the row dead (done, with `dead_at` and the error).
 * - When a handed row's check is due, the relay asks BullMQ about its job:
 *   still waiting, delayed or running: checked again later; completed: the row
 *   is marked done (its worker could not); failed without the row being marked
 *   dead (the dead-letter hook could not run) or unknown (Redis lost it): added
 *   again (a failed one is removed first), so the job runs again. Every handed
 *   row is checked at once when the relay starts (it cannot know what happened
 *   while it was away) and when its Redis connection comes back after a loss,
 *   so a Redis restart is caught at once; JOB_RECHECK_MS covers losses without
 *   a disconnect.
 * - Job ids are `<source>-<outbox id>-<row uid>` (the row's random uid,
 *   tenant/0006): a relay that sends a row again (after a crash, or a check)
 *   adds nothing twice, since BullMQ ignores an existing id (completed jobs are
 *   kept a day, failed ones 30 days), while a row of a recreated or restored
 *   database, or of another deployment on the same Redis and prefix, never
 *   meets an id in use.
 * - Workers (any number of processes) take each job once; a worker that dies
 *   mid-job loses its lock and the stalled-job check hands the job to another.
 *   Failed attempts are retried with exponential backoff up to `attempts`; the
 *   last one is dead-lettered: the job stays in BullMQ's failed set with its
 *   error, and the handler's `onDead` runs (the document becomes `failed` with
 *   the reason). Handlers are idempotent, so a job that runs again (re-added
 *   after a loss, or a stalled one whose worker was only slow) changes nothing.
 */
import { Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import type { AppMetrics } from '../http/metrics.js';
import { checkEnqueuedNow, claimEnqueued, markDead, markDone, markEnqueued, release, type ClaimedRow } from '../events/claim.js';
import { createOutboxRelay, errorText, retryDelay, type OutboxRelay, type RelayLogger } from '../events/relay.js';
import type { OutboxSource, OutboxSources } from '../events/sources.js';
import { createDoneMarker } from './coalesce.js';
import { deadLetter, executeJob } from './execute.js';
import type { JobRegistry } from './registry.js';
import { DEFAULT_RETRY, type JobContext, type JobRun, type RetryPolicy } from './types.js';

export const QUEUE_NAME = 'jobs';

export interface BullJobData {
  /** Outbox source key ('main' or 'tenant-<uuid>'). */
  source: string;
  outbox_id: number;
  /** The outbox row's uid (tenant/0006); absent in jobs added before it existed. */
  outbox_uid?: string;
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

/** The BullMQ job id of an outbox row: unique across databases and time (see above). */
export function bullJobId(source: string, row: { id: number; uid: string }): string {
  return `${source}-${row.id}-${row.uid}`;
}

/** What BullMQ knows of handed rows' jobs (JobQueue.check). */
export interface JobCheck {
  /** Completed: the row can be marked done. */
  completed: ClaimedRow[];
  /** Waiting, delayed or running: nothing to do yet. */
  live: ClaimedRow[];
  /** Lost, or failed without the row being dead-lettered: added again. */
  readded: ClaimedRow[];
}

export interface JobQueue {
  readonly queue: Queue<BullJobData>;
  enqueue(rows: ClaimedRow[], source: OutboxSource): Promise<void>;
  /** Look up the jobs of rows handed over before, and add again those Redis no longer has running or waiting. */
  check(rows: ClaimedRow[], source: OutboxSource): Promise<JobCheck>;
  /** `fn` runs whenever the connection is ready again after it was lost (Redis may have lost jobs). */
  onReconnect(fn: () => void): void;
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

  async function bounded<T>(p: Promise<T>, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        p,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`${what} timed out`)), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  async function enqueue(rows: ClaimedRow[], source: OutboxSource): Promise<void> {
    const jobs = rows.map((r) => ({
      name: r.topic,
      data: {
        source: source.key,
        outbox_id: r.id,
        outbox_uid: r.uid,
        tenant_id: r.tenant_id ?? '',
        payload: (r.payload ?? {}) as Record<string, unknown>,
        created_at: new Date(r.created_at).toISOString(),
      },
      opts: { jobId: bullJobId(source.key, r) },
    }));
    await ready();
    await bounded(queue.addBulk(jobs), `adding ${jobs.length} jobs to Redis`);
  }

  const reconnectListeners: Array<() => void> = [];
  let wasReady = false;
  connection.on('ready', () => {
    if (wasReady) for (const fn of reconnectListeners) fn();
    wasReady = true;
  });

  return {
    queue,
    enqueue,
    async check(rows, source) {
      await ready();
      const ids = rows.map((r) => bullJobId(source.key, r));
      const states = await bounded(Promise.all(ids.map((id) => queue.getJobState(id))), `looking up ${ids.length} jobs in Redis`);
      const result: JobCheck = { completed: [], live: [], readded: [] };
      for (const [i, row] of rows.entries()) {
        const state = states[i];
        if (state === 'completed') result.completed.push(row);
        else if (state === 'failed' || state === 'unknown') result.readded.push(row);
        else result.live.push(row);
      }
      // A failed job is only ignored by add(): it goes first.
      const failed = rows.map((r, i) => (states[i] === 'failed' ? ids[i] : null)).filter((id): id is string => id !== null);
      if (failed.length) await bounded(Promise.all(failed.map((id) => queue.remove(id))), `removing ${failed.length} failed jobs`);
      if (result.readded.length) await enqueue(result.readded, source);
      return result;
    },
    onReconnect(fn) {
      reconnectListeners.push(fn);
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

/** Default JOB_RECHECK_MS: how long a handed job may stay unfinished before the relay asks Redis about it. */
export const DEFAULT_RECHECK_MS = 5 * 60_000;

/** The relay from the outbox to BullMQ, and its checks on the jobs it handed over (see above). */
export function createJobRelay(opts: {
  sources: OutboxSources;
  queue: JobQueue;
  log?: RelayLogger;
  batchSize?: number;
  leaseMs?: number;
  idleMs?: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** JOB_RECHECK_MS. */
  recheckMs?: number;
}): OutboxRelay {
  const recheckMs = opts.recheckMs ?? DEFAULT_RECHECK_MS;
  const batchSize = opts.batchSize ?? 200;
  const leaseMs = opts.leaseMs ?? 30_000;
  const retryBaseMs = opts.retryBaseMs ?? 500;
  const retryMaxMs = opts.retryMaxMs ?? 30_000;
  // A relay that starts does not know what happened to Redis while it was away.
  let checkAll = true;

  async function checkHanded(source: OutboxSource): Promise<number> {
    const rows = await claimEnqueued(source.db, { limit: batchSize, leaseMs });
    if (rows.length === 0) return 0;
    let found: JobCheck;
    try {
      found = await opts.queue.check(rows, source);
    } catch (err) {
      const delay = retryDelay(Math.max(...rows.map((r) => r.attempts)), retryBaseMs, retryMaxMs);
      opts.log?.warn({ err, source: source.key, rows: rows.length, retry_in_ms: delay }, 'job-relay: could not check jobs in Redis; will retry');
      await release(source.db, rows, errorText(err), delay);
      return 0;
    }
    if (found.completed.length) await markDone(source.db, found.completed.map((r) => r.id), found.completed.map((r) => r.uid));
    await markEnqueued(source.db, [...found.live, ...found.readded], recheckMs);
    if (found.readded.length) {
      opts.log?.warn(
        { source: source.key, jobs: found.readded.length, first_id: found.readded[0].id },
        'job-relay: Redis no longer had jobs that had not finished; added them again',
      );
    }
    return found.readded.length + found.completed.length;
  }

  const relay = createOutboxRelay({
    kind: 'job',
    name: 'job-relay',
    sources: opts.sources,
    log: opts.log,
    batchSize,
    leaseMs,
    idleMs: opts.idleMs,
    minGapMs: 5,
    retryBaseMs,
    retryMaxMs,
    deliver: (rows, source) => opts.queue.enqueue(rows, source),
    markDelivered: (source, rows) => markEnqueued(source.db, rows, recheckMs),
    async beforePass() {
      if (!checkAll) return;
      checkAll = false;
      try {
        for (const source of await opts.sources.list()) await checkEnqueuedNow(source.db);
      } catch (err) {
        checkAll = true;
        throw err;
      }
    },
    perSource: checkHanded,
  });
  opts.queue.onReconnect(() => {
    checkAll = true;
    relay.wake();
  });
  return relay;
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
    id: job.id ?? `${job.data.source}-${job.data.outbox_id}`,
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

  /**
   * The row of a dead-lettered job is done, with its error. Failing that (database away), the
   * row stays unfinished and the relay's check finds the failed job and runs it again.
   */
  async function recordDead(job: Job<BullJobData>, error: Error): Promise<void> {
    const source = await opts.sources.get(job.data.source).catch(() => null);
    if (!source) return;
    await markDead(source.db, job.data.outbox_id, errorText(error), job.data.outbox_uid).catch((err) =>
      ctx.log.warn({ err, job_id: job.id }, 'could not record the dead-lettered job in the outbox; the relay will run it again'),
    );
  }

  /**
   * The dead-letter hook with a few local retries: BullMQ will not run this job again. Only when
   * it ran is the row dead-lettered; otherwise it stays unfinished (the relay runs the job again).
   */
  async function deadLetterFinal(job: Job<BullJobData>, run: JobRun, error: Error): Promise<void> {
    for (let i = 0; i < 4; i++) {
      const r = await deadLetter(ctx, registry, run, error);
      if (r.outcome === 'dead') return recordDead(job, error);
      await new Promise((res) => setTimeout(res, 500 * 2 ** i));
    }
    ctx.log.error({ job_id: job.id, job: run.name }, 'dead-letter hook kept failing; the relay will run the job again later');
  }

  const markFinished = createDoneMarker();

  const worker = new Worker<BullJobData>(
    QUEUE_NAME,
    async (job) => {
      const run = jobRunFromBull(job);
      const result = await executeJob(ctx, registry, run, opts.metrics);
      opts.onSettled?.(run, result.outcome);
      if (result.outcome === 'done') {
        // The row is done before the job completes in BullMQ: if this throws, the attempt fails and runs again.
        const source = await opts.sources.get(job.data.source);
        if (source) await markFinished(source, { id: job.data.outbox_id, uid: job.data.outbox_uid });
        return result.result ?? null;
      }
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
