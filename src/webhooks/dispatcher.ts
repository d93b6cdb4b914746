/**
 * Webhook delivery: claims due deliveries (FOR UPDATE SKIP LOCKED with a
 * lease, so several processes can dispatch), POSTs the event envelope signed
 * with the endpoint's secret (src/webhooks/signature.ts), and records the
 * outcome: 2xx = succeeded; otherwise retried with exponential backoff
 * (30 s, 1 min, 2 min, ... capped at 1 h) up to `maxAttempts`, then failed.
 * Redirects are not followed. Deliveries of one endpoint are not ordered.
 * Each delivery checks its URL again and connects only to an address checked
 * by `guardedLookup` (src/webhooks/url.ts): no loopback, private or link-local
 * target unless `allowInsecure` (WEBHOOK_ALLOW_INSECURE).
 */
import http from 'node:http';
import https from 'node:https';
import type { Kysely } from 'kysely';
import type { ControlSchema } from '../db/schema.js';
import { createLoop, type Loop, drainPasses } from '../events/loop.js';
import { signPayload, SIGNATURE_HEADER } from './signature.js';
import { claimDeliveries, recordAttempt, type ClaimedDelivery } from './store.js';
import { guardedLookup, webhookUrlProblem } from './url.js';

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
  /** Deliver over plain http and to non-public addresses (WEBHOOK_ALLOW_INSECURE). */
  allowInsecure: boolean;
  /** Name resolution (tests: a resolver of their own); every answer is checked by guardedLookup. */
  resolve?: Parameters<typeof guardedLookup>[1];
}

/** POST `body` to `url`; resolves with the status code once the answer's head arrives (its body is discarded). */
function post(url: URL, headers: Record<string, string>, body: string, timeoutMs: number, lookup: ReturnType<typeof guardedLookup>): Promise<number> {
  return new Promise((resolve, reject) => {
    const signal = AbortSignal.timeout(timeoutMs);
    const req = (url.protocol === 'https:' ? https : http).request(url, {
      method: 'POST',
      headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
      agent: false,
      lookup,
      signal,
    }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', (err) => reject(signal.aborted ? new Error(`no answer within ${timeoutMs} ms`) : err));
    req.end(body);
  });
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
  const lookup = guardedLookup(opts.allowInsecure, opts.resolve);

  async function deliver(d: ClaimedDelivery): Promise<void> {
    if (!d.url || !d.secret || d.endpoint_active === false) {
      await recordAttempt(opts.db, d, { status: 'failed', statusCode: null, error: 'the endpoint was disabled or deleted' });
      return;
    }
    const refused = webhookUrlProblem(d.url, opts.allowInsecure);
    if (refused) {
      await recordAttempt(opts.db, d, { status: 'failed', statusCode: null, error: `the endpoint URL ${refused}` });
      return;
    }
    const body = JSON.stringify(d.payload);
    const ts = Math.floor(Date.now() / 1000);
    let statusCode: number | null = null;
    let error: string | null = null;
    try {
      statusCode = await post(new URL(d.url), {
        'content-type': 'application/json',
        'user-agent': 'tenantbase-webhooks/1',
        [SIGNATURE_HEADER]: signPayload(d.secret, body, ts),
        'x-webhook-id': String(d.id),
        'x-webhook-event': d.event_type,
        'x-webhook-event-id': d.event_id,
        'x-webhook-attempt': String(d.attempts),
      }, body, timeoutMs, lookup);
      if (statusCode >= 200 && statusCode < 300) {
        await recordAttempt(opts.db, d, { status: 'succeeded', statusCode, error: null });
        return;
      }
      error = `HTTP ${statusCode}`;
    } catch (err) {
      error = (err as Error).message;
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
