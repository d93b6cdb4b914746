/** The shared Redis connection (rate limits, token revocation, jobs), when REDIS_URL is set. */
import { Redis } from 'ioredis';

export function openRedis(url: string): Redis {
  const redis = new Redis(url, {
    maxRetriesPerRequest: 2,
    enableOfflineQueue: true,
    connectTimeout: 5_000,
    lazyConnect: false,
  });
  // Connection errors surface on the commands that need Redis (and on /ready);
  // the client keeps reconnecting instead of crashing the process.
  redis.on('error', () => {});
  return redis;
}

export type { Redis };
