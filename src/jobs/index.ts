/**
 * Background jobs: handlers (validate_document), the embedded outbox runner,
 * BullMQ on Redis, and the per-process job system (`app.jobs`).
 *
 * For tests and other capabilities: `processPendingJobs(app)` delivers and runs
 * everything pending now (jobs and the events they produce) and resolves when
 * idle.
 */
import type { FastifyInstance } from 'fastify';
import type { DrainOptions } from './system.js';

export { jobsPlugin } from './plugin.js';
export { createJobSystem, type JobSystem, type JobSystemOptions, type JobRole, type DrainOptions } from './system.js';
export { createJobRegistry, type JobRegistry } from './registry.js';
export { validateDocument, VALIDATE_DOCUMENT, type ValidationOutcome } from './handlers/validate-document.js';
export { PermanentJobError, DEFAULT_RETRY, type JobHandler, type JobRun, type JobContext, type RetryPolicy } from './types.js';

export function processPendingJobs(app: FastifyInstance, opts?: DrainOptions): Promise<number> {
  return app.jobs.drain(opts);
}

/** One relay pass: jobs handed to the queue (Redis) and events published, once each. */
export function runRelayOnce(app: FastifyInstance): Promise<{ jobs: number; events: number }> {
  return app.jobs.relayOnce();
}
