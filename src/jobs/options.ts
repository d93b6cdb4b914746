/**
 * Job tuning from the environment (defaults suit production):
 *   JOB_CONCURRENCY        jobs run at once per process (worker: 16, embedded: 8)
 *   JOB_ATTEMPTS           attempts per job before it is dead-lettered (5)
 *   JOB_BACKOFF_MS         first retry delay, doubled each attempt (1000)
 *   JOB_LOCK_MS            BullMQ lock / embedded lease: a dead worker's job is retried after about this long (30000)
 *   OUTBOX_POLL_MS         idle polling interval of the relays and the embedded runner (250)
 *   WORKER_METRICS_PORT    worker only: serve GET /metrics and /health on this port
 */
import { DEFAULT_RETRY, type RetryPolicy } from './types.js';

export interface JobTuning {
  concurrency?: number;
  retry: RetryPolicy;
  lockMs: number;
  pollMs: number;
  metricsPort?: number;
}

function int(env: Record<string, string | undefined>, name: string, dflt: number, min: number, max: number): number {
  const v = env[name]?.trim();
  if (!v) return dflt;
  if (!/^\d+$/.test(v)) throw new Error(`Invalid configuration: ${name} must be a whole number, got "${v}"`);
  const n = Number(v);
  if (n < min || n > max) throw new Error(`Invalid configuration: ${name} must be between ${min} and ${max}, got ${n}`);
  return n;
}

export function jobTuningFromEnv(env: Record<string, string | undefined> = process.env): JobTuning {
  const concurrency = env.JOB_CONCURRENCY?.trim() ? int(env, 'JOB_CONCURRENCY', 8, 1, 1000) : undefined;
  const port = env.WORKER_METRICS_PORT?.trim() ? int(env, 'WORKER_METRICS_PORT', 0, 1, 65535) : undefined;
  return {
    concurrency,
    retry: {
      attempts: int(env, 'JOB_ATTEMPTS', DEFAULT_RETRY.attempts, 1, 100),
      backoffMs: int(env, 'JOB_BACKOFF_MS', DEFAULT_RETRY.backoffMs, 1, 3_600_000),
      maxBackoffMs: DEFAULT_RETRY.maxBackoffMs,
    },
    lockMs: int(env, 'JOB_LOCK_MS', 30_000, 1_000, 3_600_000),
    pollMs: int(env, 'OUTBOX_POLL_MS', 250, 5, 60_000),
    metricsPort: port,
  };
}
