/**
 * Redis Streams publisher: one XADD per event, a batch in one MULTI/EXEC.
 * Entry fields: `event_id`, `event_type`, `tenant_id` ('' for events without a
 * tenant) and `payload` (the JSON envelope). The stream is trimmed with an
 * approximate MAXLEN.
 */
import { Redis } from 'ioredis';
import type { EventEnvelope } from '../envelope.js';
import type { Publisher } from './types.js';

export interface RedisStreamsPublisherOptions {
  url: string;
  stream?: string;
  maxLen?: number;
}

export function createRedisStreamsPublisher({
  url,
  stream = 'events',
  maxLen = 100_000,
}: RedisStreamsPublisherOptions): Publisher {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 3 });
  // Connection errors reach the caller through the rejected command; without a
  // listener ioredis would also print each one as an "Unhandled error event".
  redis.on('error', () => {});

  return {
    name: 'redis',
    async publish(events: EventEnvelope[]) {
      if (events.length === 0) return;
      const multi = redis.multi();
      for (const e of events) {
        multi.xadd(
          stream,
          'MAXLEN',
          '~',
          maxLen,
          '*',
          'event_id',
          e.event_id,
          'event_type',
          e.event_type,
          'tenant_id',
          e.tenant_id ?? '',
          'payload',
          JSON.stringify(e),
        );
      }
      const results = await multi.exec();
      if (results === null) throw new Error(`redis: MULTI on stream "${stream}" was aborted`);
      const failed = results.find(([err]) => err);
      if (failed) throw failed[0];
    },
    async ping() {
      await redis.ping();
    },
    async close() {
      if (redis.status === 'wait' || redis.status === 'end') {
        redis.disconnect();
        return;
      }
      await redis.quit();
    },
  };
}

export interface StreamEntry {
  id: string;
  fields: Record<string, string>;
  event: EventEnvelope;
}

/** Reads entries of a stream with XRANGE (tests, tooling); `payload` parsed back into the envelope. */
export async function readRedisStream(
  redis: Redis,
  stream: string,
  opts: { start?: string; end?: string; count?: number } = {},
): Promise<StreamEntry[]> {
  const start = opts.start ?? '-';
  const end = opts.end ?? '+';
  const rows =
    opts.count === undefined
      ? await redis.xrange(stream, start, end)
      : await redis.xrange(stream, start, end, 'COUNT', opts.count);
  return rows.map(([id, flat]) => {
    const fields: Record<string, string> = {};
    for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i]] = flat[i + 1];
    return { id, fields, event: JSON.parse(fields.payload ?? 'null') as EventEnvelope };
  });
}
