/**
 * Outbox relays. A relay claims undelivered rows of one kind from every outbox
 * source (main database + each dedicated tenant database), in id order per
 * tenant, hands them to `deliver`, and marks them published once `deliver`
 * resolved (for events: the broker acknowledged them). When `deliver` fails the
 * rows are released with exponential backoff and nothing behind them in the
 * same tenant overtakes them. At-least-once: a relay that dies after delivering
 * but before marking re-delivers when the lease expires (consumers de-duplicate
 * by event_id; BullMQ by job id).
 *
 * `createEventRelay` delivers events to a Publisher; the job relay (outbox ->
 * BullMQ) is built on the same `createOutboxRelay` in src/jobs/bullmq.ts.
 */
import type { AppMetrics } from '../http/metrics.js';
import { claimBatch, markDone, pendingCounts, release, type ClaimedRow, type OutboxKind } from './claim.js';
import type { EventEnvelope } from './envelope.js';
import { createLoop, type Loop, drainPasses } from './loop.js';
import type { OutboxSource, OutboxSources } from './sources.js';
import type { Publisher } from './publishers/types.js';

export interface RelayLogger {
  error(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  debug?(obj: object, msg?: string): void;
}

export interface OutboxRelay {
  readonly kind: OutboxKind;
  /** One pass over every source; resolves with the number of rows delivered. */
  runOnce(): Promise<number>;
  /** Passes until one delivers nothing (rows backing off after a failure are left). */
  drain(): Promise<number>;
  start(): void;
  wake(): void;
  stop(): Promise<void>;
}

export interface OutboxRelayOptions {
  kind: OutboxKind;
  name: string;
  sources: OutboxSources;
  deliver(rows: ClaimedRow[], source: OutboxSource): Promise<void>;
  log?: RelayLogger;
  batchSize?: number;
  leaseMs?: number;
  idleMs?: number;
  /** While rows trickle in, passes start at most this often (bigger batches, fewer round trips). */
  minGapMs?: number;
  /** Delay before retrying a failed delivery: base * 2^(attempts-1), capped. */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** Called after each pass (metrics). */
  afterPass?: () => Promise<void>;
  /** Called before each pass; a failure fails the pass. */
  beforePass?: () => Promise<void>;
  /** What becomes of delivered rows (default: done). */
  markDelivered?: (source: OutboxSource, rows: ClaimedRow[]) => Promise<void>;
  /** More work per source after its delivery (the job relay's check on jobs in Redis); counted as delivered rows. */
  perSource?: (source: OutboxSource) => Promise<number>;
}

export function retryDelay(attempts: number, baseMs: number, maxMs: number): number {
  return Math.min(maxMs, baseMs * 2 ** Math.max(0, Math.min(attempts - 1, 30)));
}

export function createOutboxRelay(opts: OutboxRelayOptions): OutboxRelay {
  const batchSize = opts.batchSize ?? 200;
  const leaseMs = opts.leaseMs ?? 30_000;
  const retryBaseMs = opts.retryBaseMs ?? 1_000;
  const retryMaxMs = opts.retryMaxMs ?? 60_000;

  async function passSource(source: OutboxSource): Promise<number> {
    const rows = await claimBatch(source.db, opts.kind, { limit: batchSize, leaseMs, ordered: true });
    if (rows.length === 0) return 0;
    try {
      await opts.deliver(rows, source);
    } catch (err) {
      const attempts = Math.max(...rows.map((r) => r.attempts));
      const delay = retryDelay(attempts, retryBaseMs, retryMaxMs);
      opts.log?.warn(
        { err, source: source.key, rows: rows.length, first_id: rows[0].id, attempts, retry_in_ms: delay },
        `${opts.name}: delivery failed; will retry`,
      );
      await release(source.db, rows, errorText(err), delay);
      return 0;
    }
    if (opts.markDelivered) await opts.markDelivered(source, rows);
    else await markDone(source.db, rows.map((r) => r.id));
    return rows.length;
  }

  async function runOnce(): Promise<number> {
    let total = 0;
    await opts.beforePass?.();
    for (const source of await opts.sources.list()) {
      try {
        total += await passSource(source);
        if (opts.perSource) total += await opts.perSource(source);
      } catch (err) {
        // One unreachable tenant database must not stop the others.
        opts.log?.error({ err, source: source.key }, `${opts.name}: pass failed for one source`);
        if (source.key === 'main') throw err;
      }
    }
    await opts.afterPass?.().catch(() => undefined);
    return total;
  }

  const loop: Loop = createLoop({
    name: opts.name,
    pass: runOnce,
    idleMs: opts.idleMs ?? 250,
    minGapMs: opts.minGapMs ?? 0,
    burst: batchSize,
    log: opts.log,
  });

  return {
    kind: opts.kind,
    runOnce,
    drain: () => drainPasses(runOnce),
    start: () => loop.start(),
    wake: () => loop.wake(),
    stop: () => loop.stop(),
  };
}

export function errorText(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}

/** Events from claimed outbox rows (the payload is the envelope written by recordEvent). */
export function toEnvelopes(rows: ClaimedRow[]): EventEnvelope[] {
  return rows.map((r) => r.payload as EventEnvelope);
}

export function createEventRelay(opts: {
  sources: OutboxSources;
  publisher: Publisher;
  log?: RelayLogger;
  metrics?: AppMetrics;
  batchSize?: number;
  leaseMs?: number;
  idleMs?: number;
  minGapMs?: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
}): OutboxRelay {
  let lastLag = 0;
  return createOutboxRelay({
    kind: 'event',
    name: 'event-relay',
    sources: opts.sources,
    log: opts.log,
    batchSize: opts.batchSize,
    leaseMs: opts.leaseMs,
    idleMs: opts.idleMs,
    minGapMs: opts.minGapMs ?? 50,
    retryBaseMs: opts.retryBaseMs,
    retryMaxMs: opts.retryMaxMs,
    deliver: (rows) => opts.publisher.publish(toEnvelopes(rows)),
    afterPass: opts.metrics
      ? async () => {
          if (Date.now() - lastLag < 5_000) return;
          lastLag = Date.now();
          const main = (await opts.sources.list())[0];
          const counts = await pendingCounts(main.db);
          opts.metrics?.outboxLag.set(counts.oldestEventAgeSec);
        }
      : undefined,
  });
}
