/**
 * Fixed-window counters for login attempts: in Redis when configured (shared
 * by every API process), else in memory. While Redis cannot be reached the
 * counting falls back to this process's memory (`withFallback`), so login
 * keeps working and stays limited.
 */
import type { Redis } from 'ioredis';
import { connectionFailure } from '../http/errors.js';

export interface RateLimiter {
  /** Count one attempt under `key`; `allowed` is false once more than `limit` happened in the window. */
  hit(key: string, limit: number, windowSec: number): Promise<{ allowed: boolean; retryAfterSec: number }>;
  /** Take back one attempt counted by `hit` in the current window (it turned out not to count). */
  refund(key: string): Promise<void>;
  /** Forget every attempt counted under `key`. */
  reset(key: string): Promise<void>;
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
    async refund(key) {
      const w = windows.get(key);
      if (w && w.resetAt > Date.now() && w.count > 0) w.count -= 1;
    },
    async reset(key) {
      windows.delete(key);
    },
  };
}

const HIT_SCRIPT = `
local c = redis.call('INCR', KEYS[1])
if c == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {c, ttl}`;

/** DECR only a live counter above zero: an expired window is not recreated (without a TTL). */
const REFUND_SCRIPT = `
local c = tonumber(redis.call('GET', KEYS[1]) or '0')
if c > 0 then redis.call('DECR', KEYS[1]) end
return c`;

export function redisRateLimiter(redis: Redis, prefix: string): RateLimiter {
  const k = (key: string) => `${prefix}rl:${key}`;
  return {
    async hit(key, limit, windowSec) {
      const [count, ttlMs] = (await redis.eval(HIT_SCRIPT, 1, k(key), windowSec * 1000)) as [number, number];
      return { allowed: count <= limit, retryAfterSec: Math.max(1, Math.ceil(ttlMs / 1000)) };
    },
    async refund(key) {
      await redis.eval(REFUND_SCRIPT, 1, k(key));
    },
    async reset(key) {
      await redis.del(k(key));
    },
  };
}

/**
 * `primary` (Redis), or `fallback` (memory) for a call that fails because
 * Redis cannot be reached. Counts made during an outage stay in this process.
 */
export function withFallback(
  primary: RateLimiter,
  fallback: RateLimiter,
  log?: { warn(obj: object, msg: string): void },
): RateLimiter {
  let away = false;
  async function call<T>(fn: (l: RateLimiter) => Promise<T>): Promise<T> {
    try {
      const result = await fn(primary);
      away = false;
      return result;
    } catch (err) {
      if (!connectionFailure(err)) throw err;
      if (!away) log?.warn({ err }, 'Redis is unreachable: login attempts are counted in this process until it is back');
      away = true;
      return fn(fallback);
    }
  }
  return {
    hit: (key, limit, windowSec) => call((l) => l.hit(key, limit, windowSec)),
    refund: (key) => call((l) => l.refund(key)),
    reset: (key) => call((l) => l.reset(key)),
  };
}
