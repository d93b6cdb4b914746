/** The shared Redis connection (rate limits, token revocation), when REDIS_URL is set. */
import { Redis } from 'ioredis';

export interface RedisOptions {
  connectTimeoutMs: number;
  commandTimeoutMs: number;
}

/**
 * While Redis is away its commands fail at once (no offline queue, one retry
 * at most) instead of waiting for a reconnect, so a request that needs it
 * answers 503 (or uses its fallback) in milliseconds; a command that gets no
 * answer fails after `commandTimeoutMs`. The client keeps reconnecting.
 */
export function openRedis(url: string, opts: RedisOptions): Redis {
  const redis = new Redis(url, {
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    connectTimeout: opts.connectTimeoutMs,
    commandTimeout: opts.commandTimeoutMs,
    lazyConnect: false,
  });
  // Connection errors surface on the commands that need Redis (and on /ready).
  redis.on('error', () => {});
  return redis;
}

/**
 * Resolves once `redis` is connected; rejects when the first attempt fails or
 * after `timeoutMs`. Without an offline queue, commands sent before that fail,
 * so start-up waits for it (and goes on without Redis when it is away).
 */
export function waitForRedis(redis: Redis, timeoutMs: number): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const done = (err?: Error) => {
      clearTimeout(timer);
      redis.off('ready', onReady);
      redis.off('error', onError);
      if (err) reject(err);
      else resolve();
    };
    const onReady = () => done();
    const onError = (err: Error) => done(err);
    const timer = setTimeout(() => done(new Error(`Redis is not reachable (connection ${redis.status})`)), timeoutMs);
    redis.once('ready', onReady);
    redis.once('error', onError);
  });
}

export type { Redis };
