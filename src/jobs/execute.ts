/**
 * Running one job attempt, the same way for the embedded runner and the BullMQ
 * worker: find the handler, run it, time it, and decide what happens next.
 *  - `done`: it finished.
 *  - `retry`: it threw and attempts are left (the caller schedules the retry),
 *    or it is dead but its dead-letter hook could not run yet (e.g. database
 *    down): retried later so that nothing stays half-finished.
 *  - `dead`: it threw on the last attempt, threw a PermanentJobError, or no
 *    handler exists; the handler's `onDead` has run (e.g. the document is
 *    `failed` with the reason). The caller keeps the job as dead-lettered.
 * An attempt number past maxAttempts (the previous holder of the job died on
 * its last attempt) goes straight to the dead-letter path.
 */
import type { AppMetrics } from '../http/metrics.js';
import type { JobRegistry } from './registry.js';
import { PermanentJobError, type JobContext, type JobRun } from './types.js';

export type JobOutcome =
  | { outcome: 'done'; result: unknown }
  | { outcome: 'retry'; error: Error }
  | { outcome: 'dead'; error: Error };

export function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

export async function executeJob(
  ctx: JobContext,
  registry: JobRegistry,
  job: JobRun,
  metrics?: AppMetrics,
): Promise<JobOutcome> {
  const handler = registry.get(job.name);
  if (!handler) {
    const error = new PermanentJobError(`no handler for job "${job.name}"`);
    ctx.log.error({ job_id: job.id, job: job.name }, error.message);
    return { outcome: 'dead', error };
  }
  if (job.attempt > job.maxAttempts) {
    const error = new Error(`the job did not finish in ${job.maxAttempts} attempts (the process running it stopped)`);
    return deadLetter(ctx, registry, { ...job, attempt: job.maxAttempts }, error);
  }
  const started = process.hrtime.bigint();
  const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
  try {
    const result = await handler.run(ctx, job);
    metrics?.jobDuration.observe({ job: job.name, outcome: 'success' }, seconds());
    return { outcome: 'done', result };
  } catch (err) {
    const error = asError(err);
    const final = error instanceof PermanentJobError || job.attempt >= job.maxAttempts;
    metrics?.jobDuration.observe({ job: job.name, outcome: final ? 'failure' : 'retry' }, seconds());
    const fields = { err: error, job_id: job.id, job: job.name, tenant_id: job.tenantId, attempt: job.attempt, max_attempts: job.maxAttempts };
    if (!final) {
      ctx.log.warn(fields, `job ${job.name} failed; will retry`);
      return { outcome: 'retry', error };
    }
    ctx.log.error(fields, `job ${job.name} failed for good; dead-lettered`);
    return deadLetter(ctx, registry, job, error);
  }
}

/** Runs the handler's dead-letter hook: `dead` when it ran (or there is none), `retry` when it failed. */
export async function deadLetter(ctx: JobContext, registry: JobRegistry, job: JobRun, error: Error): Promise<JobOutcome> {
  const handler = registry.get(job.name);
  if (!handler?.onDead) return { outcome: 'dead', error };
  try {
    await handler.onDead(ctx, job, error);
    return { outcome: 'dead', error };
  } catch (err) {
    ctx.log.error({ err, job_id: job.id, job: job.name }, `job ${job.name}: dead-letter hook failed; will retry it`);
    return { outcome: 'retry', error };
  }
}
