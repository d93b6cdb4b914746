/** Fixed-window counters for login attempts: in Redis when configured, else in memory. */
import type { Redis } from 'ioredis';

export interface RateLimiter {
  /** Count one attempt under `key`; `allowed` is false once more than `limit` happened in the window. */
  hit(key: string, limit: number, windowSec: number): Promise<{ allowed: boolean; retryAfterSec: number }>;
}

export function memoryRateLimiter(): RateLimiter {
  const windows = new Map<string, { count: number; resetAt: number }>();
  return {
    async hit(key, limit, windowSec) {
      const now = Date.now();
      if (windows.size > 100_000) {
        for (const [k, w] of windows) if (w.resetAt <= now) windows.delete(k);
      }
      let w = windows.get(key);
      if (!w || w.resetAt <= now) {
        w = { count: 0, resetAt: now + windowSec * 1000 };
        windows.set(key, w);
      }
      w.count += 1;
      return { allowed: w.count <= limit, retryAfterSec: Math.ceil((w.resetAt - now) / 1000) };
    },
  };
}

const HIT_SCRIPT = `
local c = redis.call('INCR', KEYS[1])
if c == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {c, ttl}`;

export function redisRateLimiter(redis: Redis, prefix: string): RateLimiter {
  return {
    async hit(key, limit, windowSec) {
      const [count, ttlMs] = (await redis.eval(HIT_SCRIPT, 1, `${prefix}rl:${key}`, windowSec * 1000)) as [number, number];
      return { allowed: count <= limit, retryAfterSec: Math.max(1, Math.ceil(ttlMs / 1000)) };
    },
  };
}
