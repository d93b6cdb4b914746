/**
 * Natural batching: calls for the same key made while a flush for that key is
 * running are gathered and flushed together right after it. An idle key
 * flushes at once (no timer, no added latency); under load the batches grow to
 * the number of calls in flight, so per-batch costs (a transaction, a few round
 * trips) are shared.
 */
import { markDone } from '../events/claim.js';
import type { OutboxSource } from '../events/sources.js';

export interface Coalescer<T, R> {
  submit(key: string, item: T): Promise<R>;
}

export function createCoalescer<T, R>(opts: {
  maxBatch: number;
  /** One result per item, in order: a value, or an Error for that item alone. Throwing fails the whole batch. */
  flush: (key: string, items: T[]) => Promise<Array<R | Error>>;
}): Coalescer<T, R> {
  interface Waiting {
    item: T;
    resolve: (r: R) => void;
    reject: (e: unknown) => void;
  }
  const queues = new Map<string, Waiting[]>();

  async function drain(key: string, queue: Waiting[]): Promise<void> {
    // Let the calls of this tick join the first batch.
    await new Promise((r) => setImmediate(r));
    while (queue.length > 0) {
      const batch = queue.splice(0, opts.maxBatch);
      try {
        const results = await opts.flush(key, batch.map((w) => w.item));
        batch.forEach((w, i) => {
          const r = results[i];
          if (r instanceof Error) w.reject(r);
          else w.resolve(r);
        });
      } catch (err) {
        for (const w of batch) w.reject(err);
      }
    }
    queues.delete(key);
  }

  return {
    submit(key, item) {
      return new Promise<R>((resolve, reject) => {
        let queue = queues.get(key);
        const idle = !queue;
        if (!queue) {
          queue = [];
          queues.set(key, queue);
        }
        queue.push({ item, resolve, reject });
        if (idle) void drain(key, queue);
      });
    },
  };
}

/**
 * Marks finished jobs' outbox rows done, the rows of jobs finishing together in one UPDATE per
 * outbox source. `uid` (jobs run from Redis) makes sure the row is still the job's (see markDone).
 */
export function createDoneMarker(): (source: OutboxSource, row: { id: number; uid?: string }) => Promise<void> {
  const sources = new Map<string, OutboxSource>();
  const coalescer = createCoalescer<{ id: number; uid?: string }, void>({
    maxBatch: 500,
    flush: async (key, rows) => {
      const source = sources.get(key);
      if (source) {
        const checked = rows.filter((r) => r.uid);
        const unchecked = rows.filter((r) => !r.uid);
        if (checked.length) await markDone(source.db, checked.map((r) => r.id), checked.map((r) => r.uid as string));
        if (unchecked.length) await markDone(source.db, unchecked.map((r) => r.id));
      }
      return rows.map(() => undefined);
    },
  });
  return (source, row) => {
    sources.set(source.key, source);
    return coalescer.submit(source.key, row);
  };
}
