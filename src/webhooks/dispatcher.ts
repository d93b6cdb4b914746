/**
 * Webhook delivery: claims due deliveries (FOR UPDATE SKIP LOCKED with a
 * lease, so several processes can dispatch), POSTs the event envelope signed
 * with the endpoint's secret (src/webhooks/signature.ts), and records the
 * outcome: 2xx = succeeded; otherwise retried with exponential backoff
 * (30 s, 1 min, 2 min, ... capped at 1 h) up to `maxAttempts`, then failed.
 * Redirects are not followed. Deliveries of one endpoint are not ordered.
 */
import type { Kysely } from 'kysely';
import type { ControlSchema } from '../db/schema.js';
import { createLoop, type Loop, drainPasses } from '../events/loop.js';
import { signPayload, SIGNATURE_HEADER } from './signature.js';
import { claimDeliveries, recordAttempt, type ClaimedDelivery } from './store.js';

export interface WebhookDispatcherOptions {
  db: Kysely<ControlSchema>;
  log: { warn(obj: object, msg?: string): void; error(obj: object, msg?: string): void; debug(obj: object, msg?: string): void };
  maxAttempts?: number;
  backoffMs?: number;
  maxBackoffMs?: number;
  timeoutMs?: number;
  concurrency?: number;
  leaseMs?: number;
  idleMs?: number;
  fetch?: typeof fetch;
}

export interface WebhookDispatcher {
  runOnce(): Promise<number>;
  /** Until nothing is due. */
  drain(): Promise<number>;
  start(): void;
  wake(): void;
  stop(): Promise<void>;
}

export function createWebhookDispatcher(opts: WebhookDispatcherOptions): WebhookDispatcher {
  const maxAttempts = opts.maxAttempts ?? 8;
  const backoffMs = opts.backoffMs ?? 30_000;
  const maxBackoffMs = opts.maxBackoffMs ?? 3_600_000;
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const concurrency = opts.concurrency ?? 8;
  const leaseMs = opts.leaseMs ?? Math.max(60_000, timeoutMs * 3);
  const doFetch = opts.fetch ?? fetch;

  async function deliver(d: ClaimedDelivery): Promise<void> {
    if (!d.url || !d.secret || d.endpoint_active === false) {
      await recordAttempt(opts.db, d, { status: 'failed', statusCode: null, error: 'the endpoint was disabled or deleted' });
      return;
    }
    const body = JSON.stringify(d.payload);
    const ts = Math.floor(Date.now() / 1000);
    let statusCode: number | null = null;
    let error: string | null = null;
    try {
      const res = await doFetch(d.url, {
        method: 'POST',
        redirect: 'manual',
        signal: AbortSignal.timeout(timeoutMs),
        headers: {
          'content-type': 'application/json',
          'user-agent': 'tenantbase-webhooks/1',
          [SIGNATURE_HEADER]: signPayload(d.secret, body, ts),
          'x-webhook-id': String(d.id),
          'x-webhook-event': d.event_type,
          'x-webhook-event-id': d.event_id,
          'x-webhook-attempt': String(d.attempts),
        },
        body,
      });
      statusCode = res.status;
      await res.body?.cancel().catch(() => undefined);
      if (res.status >= 200 && res.status < 300) {
        await recordAttempt(opts.db, d, { status: 'succeeded', statusCode, error: null });
        return;
      }
      error = `HTTP ${res.status}`;
    } catch (err) {
      error = (err as Error).name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : (err as Error).message;
    }
    if (d.attempts >= maxAttempts) {
      opts.log.warn({ delivery_id: d.id, endpoint_id: d.endpoint_id, error }, 'webhook delivery failed for good');
      await recordAttempt(opts.db, d, { status: 'failed', statusCode, error });
      return;
    }
    const retryInMs = Math.min(maxBackoffMs, backoffMs * 2 ** (d.attempts - 1));
    await recordAttempt(opts.db, d, { status: 'pending', statusCode, error, retryInMs });
  }

  async function runOnce(): Promise<number> {
    const due = await claimDeliveries(opts.db, concurrency * 4, leaseMs);
    if (due.length === 0) return 0;
    let next = 0;
    const workers = Array.from({ length: Math.min(concurrency, due.length) }, async () => {
      while (next < due.length) {
        const d = due[next++];
        await deliver(d).catch((err) => opts.log.error({ err, delivery_id: d.id }, 'webhook delivery bookkeeping failed'));
      }
    });
    await Promise.all(workers);
    return due.length;
  }

  const loop: Loop = createLoop({ name: 'webhooks', pass: runOnce, idleMs: opts.idleMs ?? 1_000, log: opts.log });
  return {
    runOnce,
    drain: () => drainPasses(runOnce),
    start: () => loop.start(),
    wake: () => loop.wake(),
    stop: () => loop.stop(),
  };
}
