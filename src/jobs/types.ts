/** Background jobs: what a handler gets and what it is. */
import type { Kysely } from 'kysely';
import type { Config } from '../config.js';
import type { ControlSchema } from '../db/schema.js';
import type { TenantDatabases } from '../db/tenant-db.js';
import type { BlobStore } from '../storage/blob-store.js';

export interface JobLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

/** The services a job handler uses (the app's, or the worker's copy of them). */
export interface JobContext {
  config: Config;
  db: Kysely<ControlSchema>;
  tenantDbs: TenantDatabases;
  storage: BlobStore;
  log: JobLogger;
}

export interface JobRun<P = Record<string, unknown>> {
  /** The job's id, for logs: the BullMQ job id on Redis (src/jobs/bullmq.ts `bullJobId`), `<source>-<outbox id>` in the embedded runner. */
  id: string;
  name: string;
  tenantId: string;
  payload: P;
  /** 1-based attempt number. */
  attempt: number;
  maxAttempts: number;
}

export interface JobHandler<P = any> {
  readonly name: string;
  /** Must be idempotent: a job can run more than once (retries, crashes, lease expiry). */
  run(ctx: JobContext, job: JobRun<P>): Promise<unknown>;
  /** After the last attempt failed (or a PermanentJobError): leave things in a final state. Idempotent. */
  onDead?(ctx: JobContext, job: JobRun<P>, error: Error): Promise<void>;
}

/** Thrown by a handler when retrying cannot help (bad payload): dead-lettered at once. */
export class PermanentJobError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PermanentJobError';
  }
}

export interface RetryPolicy {
  /** Total attempts, the first included. */
  attempts: number;
  /** Delay before attempt n+1: backoffMs * 2^(n-1), capped at maxBackoffMs. */
  backoffMs: number;
  maxBackoffMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, backoffMs: 1_000, maxBackoffMs: 5 * 60_000 };
