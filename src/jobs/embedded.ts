/**
 * The in-process job runner (embedded default, and `npm run worker` without
 * REDIS_URL): the outbox rows of kind `job` are the queue. A row is claimed
 * with a lease (FOR UPDATE SKIP LOCKED, `available_at` pushed ahead), the lease
 * is extended while the job runs, and the row is marked done (`published_at`)
 * when it finishes. A failed attempt is released with exponential backoff; the
 * last one is dead-lettered (`dead_at`, `last_error`). A process that dies
 * mid-job leaves a row whose lease expires: the job runs again, here or in any
 * other process sharing the database - including after a restart.
 */
import type { AppMetrics } from '../http/metrics.js';
import { claimBatch, claimEnqueued, extendLease, markDead, release, type ClaimedRow } from '../events/claim.js';
import { createLoop, type Loop } from '../events/loop.js';
import { errorText, retryDelay } from '../events/relay.js';
import type { OutboxSource, OutboxSources } from '../events/sources.js';
import { createDoneMarker } from './coalesce.js';
import { executeJob } from './execute.js';
import type { JobRegistry } from './registry.js';
import { DEFAULT_RETRY, type JobContext, type JobRun, type RetryPolicy } from './types.js';

export interface EmbeddedRunnerOptions {
  ctx: JobContext;
  registry: JobRegistry;
  sources: OutboxSources;
  retry?: RetryPolicy;
  concurrency?: number;
  /** A claim lasts this long without a heartbeat. */
  leaseMs?: number;
  idleMs?: number;
  metrics?: AppMetrics;
  /** Called when a job has finished one attempt (tests, benchmarks). */
  onSettled?: (job: JobRun, outcome: 'done' | 'retry' | 'dead') => void;
}

export interface EmbeddedRunner {
  /** Claim due jobs for the free slots and start them; resolves with how many were started. */
  runOnce(): Promise<number>;
  /** Run until no job is due and none is running here. */
  drain(): Promise<number>;
  start(): void;
  wake(): void;
  stop(): Promise<void>;
  readonly inFlight: number;
}

const ENQUEUED_LOOK_MS = 30_000;

export function jobRunFromRow(row: ClaimedRow, source: OutboxSource, retry: RetryPolicy): JobRun {
  return {
    id: `${source.key}-${row.id}`,
    name: row.topic,
    tenantId: row.tenant_id ?? '',
    payload: (row.payload ?? {}) as Record<string, unknown>,
    attempt: row.attempts,
    maxAttempts: retry.attempts,
  };
}

export function createEmbeddedRunner(opts: EmbeddedRunnerOptions): EmbeddedRunner {
  const retry = opts.retry ?? DEFAULT_RETRY;
  const concurrency = opts.concurrency ?? 8;
  const leaseMs = opts.leaseMs ?? 60_000;
  const log = opts.ctx.log;
  const running = new Set<Promise<void>>();
  let slotFreed: (() => void) | null = null;
  const markFinished = createDoneMarker();

  async function settle(source: OutboxSource, row: ClaimedRow, job: JobRun): Promise<void> {
    const heartbeat = setInterval(() => {
      extendLease(source.db, row, leaseMs).catch((err) => log.warn({ err, job_id: job.id }, 'job lease heartbeat failed'));
    }, Math.max(1_000, Math.floor(leaseMs / 3)));
    heartbeat.unref();
    let result;
    try {
      result = await executeJob(opts.ctx, opts.registry, job, opts.metrics);
    } finally {
      clearInterval(heartbeat);
    }
    try {
      if (result.outcome === 'done') await markFinished(source, row);
      else if (result.outcome === 'dead') await markDead(source.db, row.id, errorText(result.error));
      else await release(source.db, [row], errorText(result.error), retryDelay(row.attempts, retry.backoffMs, retry.maxBackoffMs));
    } catch (err) {
      // The lease expires and the job runs again (handlers are idempotent).
      log.error({ err, job_id: job.id }, 'could not record the job outcome; it will run again');
    }
    opts.onSettled?.(job, result.outcome);
  }

  function launch(source: OutboxSource, row: ClaimedRow): void {
    const job = jobRunFromRow(row, source, retry);
    const p: Promise<void> = settle(source, row, job)
      .catch((err) => log.error({ err, job_id: job.id }, 'job runner error'))
      .finally(() => {
        running.delete(p);
        slotFreed?.();
      });
    running.add(p);
  }

  /**
   * Jobs handed to Redis that never finished (the deployment ran with REDIS_URL before): nobody
   * else will run them now, so this runner does, once their check is due. Looked for now and then.
   */
  let lastEnqueuedLook = 0;
  async function claim(source: OutboxSource, free: number, lookEnqueued: boolean): Promise<ClaimedRow[]> {
    const rows = await claimBatch(source.db, 'job', { limit: free, leaseMs, ordered: false });
    if (lookEnqueued && rows.length < free) rows.push(...(await claimEnqueued(source.db, { limit: free - rows.length, leaseMs })));
    return rows;
  }

  async function runOnce(): Promise<number> {
    let started = 0;
    const lookEnqueued = Date.now() - lastEnqueuedLook >= ENQUEUED_LOOK_MS;
    if (lookEnqueued) lastEnqueuedLook = Date.now();
    for (const source of await opts.sources.list()) {
      const free = concurrency - running.size;
      if (free <= 0) break;
      let rows: ClaimedRow[];
      try {
        rows = await claim(source, free, lookEnqueued);
      } catch (err) {
        if (source.key === 'main') throw err;
        log.error({ err, source: source.key }, 'job runner: claim failed for one source');
        continue;
      }
      for (const row of rows) launch(source, row);
      started += rows.length;
    }
    return started;
  }

  /** Loop pass: start what fits, then wait for a free slot if all are busy. */
  async function pass(): Promise<number> {
    const n = await runOnce();
    if (running.size >= concurrency) {
      await new Promise<void>((resolve) => {
        slotFreed = () => {
          slotFreed = null;
          resolve();
        };
      });
      return 1;
    }
    return n;
  }

  const loop: Loop = createLoop({ name: 'job-runner', pass, idleMs: opts.idleMs ?? 250, log });

  return {
    runOnce,
    async drain() {
      let total = 0;
      for (;;) {
        const n = await runOnce();
        total += n;
        if (running.size > 0) await Promise.race(running);
        else if (n === 0) return total;
      }
    },
    start: () => loop.start(),
    wake: () => loop.wake(),
    async stop() {
      const stopping = loop.stop();
      slotFreed?.();
      await stopping;
      await Promise.allSettled([...running]);
    },
    get inFlight() {
      return running.size;
    },
  };
}
