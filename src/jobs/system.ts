/**
 * The background machinery of one process, in one object (`app.jobs`):
 *
 * - role `embedded` (no REDIS_URL: the API itself, or `npm run worker`): the
 *   event relay, the in-process job runner over the outbox, and the event
 *   consumer.
 * - role `worker` (REDIS_URL set, `npm run worker`): the event relay, the job
 *   relay (outbox -> BullMQ), a BullMQ worker, and the event consumer.
 * - not started (the API when REDIS_URL is set): nothing runs in the
 *   background; `drain()` still relays on demand (tests).
 *
 * The consumer reads from the broker the publisher writes to (NATS, Redis
 * Streams, Kafka); with the log publisher (no broker) the relay hands events to
 * it directly. Relays wake on the in-process write hint, on PostgreSQL's
 * `outbox` notification, and otherwise poll.
 *
 * Optional clients are loaded only when this process uses them: BullMQ when a
 * role needs the queue (REDIS_URL, not embedded), the AWS SDK when the system
 * needs its own S3 store; the Kafka and NATS clients when the publisher or
 * subscription first connects (src/events/publishers, src/events/subscribers.ts).
 */
import type { FastifyInstance } from 'fastify';
import { createEventConsumer, createLocalPublisher, combinePublishers, type EventConsumer, type EventHandler } from '../events/consumer.js';
import { listenForOutbox, type OutboxListener } from '../events/listen.js';
import { onOutboxWrite } from '../events/outbox.js';
import { createPublisher, selectPublisherKind, type Publisher } from '../events/publishers/index.js';
import { createEventRelay, type OutboxRelay } from '../events/relay.js';
import { createOutboxSources, type OutboxSources } from '../events/sources.js';
import { subscribeKafka, subscribeNats, subscribeRedisStream, type Subscription } from '../events/subscribers.js';
import { createBlobStore, createLocalStore, type BlobStore } from '../storage/index.js';
import { createWebhookDispatcher, type WebhookDispatcher, type WebhookDispatcherOptions } from '../webhooks/dispatcher.js';
import { fanOut } from '../webhooks/store.js';
import type * as BullMQ from './bullmq.js';
import type { JobQueue } from './bullmq.js';
import { createEmbeddedRunner, type EmbeddedRunner } from './embedded.js';
import { jobTuningFromEnv } from './options.js';
import { createJobRegistry, type JobRegistry } from './registry.js';
import type { JobContext, JobRun, RetryPolicy } from './types.js';

export type JobRole = 'embedded' | 'worker';

export interface JobSystemOptions {
  retry?: RetryPolicy;
  concurrency?: number;
  /** Embedded lease and BullMQ lock duration. */
  lockMs?: number;
  stalledIntervalMs?: number;
  pollMs?: number;
  /** Replace the configured publisher (tests). */
  publisher?: Publisher;
  /** Subscribe the consumer to the broker (default true when a broker is configured). */
  subscribe?: boolean;
  /** Replace the broker subscription (tests: a stream of their own). */
  subscriber?: (consumer: EventConsumer) => Promise<Subscription>;
  consumerHandlers?: Record<string, EventHandler>;
  registry?: JobRegistry;
  storage?: BlobStore;
  /** Redis for the job queue instead of config.redisUrl (tests: a closed port). */
  queueRedisUrl?: string;
  /** Wake relays on PostgreSQL notifications (default true on PostgreSQL). */
  listen?: boolean;
  onSettled?: (job: JobRun, outcome: 'done' | 'retry' | 'dead') => void;
  /** Webhook delivery tuning (tests: fast retries). */
  webhooks?: Partial<Pick<WebhookDispatcherOptions, 'resolve' | 'backoffMs' | 'maxBackoffMs' | 'maxAttempts' | 'timeoutMs' | 'idleMs'>>;
}

export interface DrainOptions {
  timeoutMs?: number;
  /** Also wait until the BullMQ queue has no waiting/active/delayed job (a worker runs somewhere). Default true. */
  waitForQueue?: boolean;
}

export interface JobSystem {
  readonly role: JobRole | null;
  readonly sources: OutboxSources;
  readonly consumer: EventConsumer;
  readonly context: JobContext;
  readonly queue: JobQueue | null;
  start(role: JobRole, opts?: JobSystemOptions): Promise<void>;
  stop(): Promise<void>;
  /** stop(), and release what the system opened for itself (its own blob store). */
  close(): Promise<void>;
  /** Deliver and run everything pending now (and what that produces); resolves when idle. */
  drain(opts?: DrainOptions): Promise<number>;
  /** Relay passes only: hand jobs to the queue and publish events once each. */
  relayOnce(): Promise<{ jobs: number; events: number }>;
}

interface Parts {
  publisher: Publisher;
  eventRelay: OutboxRelay;
  jobRelay: OutboxRelay | null;
  queue: JobQueue | null;
  runner: EmbeddedRunner | null;
  worker: { close(): Promise<void> } | null;
  webhooks: WebhookDispatcher;
  subscription: Subscription | null;
  listener: OutboxListener | null;
  unhint: (() => void) | null;
  gauges: NodeJS.Timeout | null;
}

export function createJobSystem(app: FastifyInstance): JobSystem {
  const config = app.config;
  const log = app.log.child({ component: 'jobs' });
  let storageOverride: BlobStore | null = null;
  let ownStorage: BlobStore | null = null;
  let ownStorageLoading: Promise<BlobStore> | null = null;
  /** src/jobs/bullmq.ts, loaded by prepare() when a role uses the queue. */
  let bull: typeof BullMQ | null = null;

  function appStorage(): BlobStore | null {
    if (!app.hasDecorator('storage')) return null;
    return (app as unknown as { storage?: BlobStore }).storage ?? null;
  }

  function storage(): BlobStore {
    if (storageOverride) return storageOverride;
    const s = appStorage();
    if (s) return s;
    if (!ownStorage) {
      // An S3 store of its own is loaded by prepare() before anything runs; the local one needs no loading.
      if (config.s3) throw new Error('jobs: the S3 blob store is not loaded yet (start() or drain() the job system first)');
      ownStorage = createLocalStore({ root: config.uploadFolder });
    }
    return ownStorage;
  }

  /** Loads what build(forRole) needs: BullMQ when the role uses the queue, an S3 store of its own when there is no other. */
  async function prepare(forRole: JobRole | null, opts: JobSystemOptions): Promise<void> {
    if ((opts.queueRedisUrl ?? config.redisUrl) && forRole !== 'embedded') bull ??= await import('./bullmq.js');
    if (config.s3 && !opts.storage && !appStorage() && !ownStorage) {
      ownStorageLoading ??= createBlobStore({ s3: config.s3, localRoot: config.uploadFolder });
      ownStorage = await ownStorageLoading;
    }
  }

  function loadedBull(): typeof BullMQ {
    if (!bull) throw new Error('jobs: BullMQ is not loaded (prepare() was not called for this role)');
    return bull;
  }

  const context: JobContext = {
    config,
    db: app.db,
    tenantDbs: app.tenantDbs,
    get storage() {
      return storage();
    },
    log,
  };
  const sources = createOutboxSources({ db: app.db, tenantDbs: app.tenantDbs, log });
  let consumerHandlers: Record<string, EventHandler> | undefined;
  let consumer = makeConsumer();
  let role: JobRole | null = null;
  let options: JobSystemOptions = {};
  let parts: Parts | null = null;

  function makeConsumer(): EventConsumer {
    return createEventConsumer(
      { db: app.db, tenantDbs: app.tenantDbs, get storage() { return storage(); }, log, sources },
      {
        name: 'worker',
        handlers: consumerHandlers,
        // Webhooks: every tenant event becomes a delivery for each matching endpoint.
        batchHandlers: [
          async (_ctx, events) => {
            if ((await fanOut(app.db, events)) > 0) parts?.webhooks.wake();
          },
        ],
      },
    );
  }

  function publisherKind() {
    return selectPublisherKind({ kind: config.eventPublisher, kafkaBrokers: config.kafkaBrokers, natsUrl: config.natsUrl });
  }

  function build(forRole: JobRole | null): Parts {
    const tuning = jobTuningFromEnv();
    const retry = options.retry ?? tuning.retry;
    const pollMs = options.pollMs ?? tuning.pollMs;
    const lockMs = options.lockMs ?? tuning.lockMs;
    const registry = options.registry ?? createJobRegistry();
    const redisUrl = options.queueRedisUrl ?? config.redisUrl;

    let publisher = options.publisher;
    if (!publisher) {
      const base = createPublisher(
        {
          kind: config.eventPublisher,
          kafkaBrokers: config.kafkaBrokers,
          natsUrl: config.natsUrl,
          redisUrl: config.redisUrl,
          redisStream: `${config.redisPrefix}events`,
        },
        app.log.child({ component: 'events' }),
      );
      publisher = publisherKind() === 'log' ? combinePublishers([base, createLocalPublisher(consumer)]) : base;
    }
    const eventRelay = createEventRelay({ sources, publisher, log, metrics: app.metrics, idleMs: pollMs });

    const useQueue = Boolean(redisUrl) && forRole !== 'embedded';
    const bullmq = useQueue ? loadedBull() : null;
    const queue = bullmq ? bullmq.createJobQueue({ redisUrl: redisUrl as string, prefix: bullmq.bullPrefix(config.redisPrefix), retry }) : null;
    const jobRelay = bullmq && queue ? bullmq.createJobRelay({ sources, queue, log, idleMs: pollMs, recheckMs: config.jobRecheckMs }) : null;
    const runner =
      forRole === 'embedded'
        ? createEmbeddedRunner({
            ctx: context,
            registry,
            sources,
            retry,
            concurrency: options.concurrency ?? tuning.concurrency ?? 8,
            leaseMs: lockMs,
            idleMs: pollMs,
            metrics: app.metrics,
            onSettled: options.onSettled,
          })
        : null;
    const worker =
      forRole === 'worker' && bullmq && queue
        ? bullmq.createBullWorker({
            ctx: context,
            registry,
            sources,
            redisUrl: redisUrl as string,
            prefix: bullmq.bullPrefix(config.redisPrefix),
            concurrency: options.concurrency ?? tuning.concurrency ?? 16,
            lockDurationMs: lockMs,
            stalledIntervalMs: options.stalledIntervalMs ?? Math.max(500, Math.floor(lockMs / 2)),
            metrics: app.metrics,
            onSettled: options.onSettled,
          })
        : null;
    const webhooks = createWebhookDispatcher({ db: app.db, log, allowInsecure: config.webhookAllowInsecure, ...options.webhooks });
    return { publisher, eventRelay, jobRelay, queue, runner, worker, webhooks, subscription: null, listener: null, unhint: null, gauges: null };
  }

  /** Parts used on demand when nothing was started: the embedded runner without Redis, the relays with it. */
  function idleRole(): JobRole | null {
    return config.redisUrl ? null : 'embedded';
  }

  async function idleParts(): Promise<Parts> {
    if (!parts) {
      const r = idleRole();
      await prepare(r, options);
      parts ??= build(r);
    }
    return parts;
  }

  async function subscribe(): Promise<Subscription | null> {
    if (options.subscribe === false) return null;
    if (options.subscriber) return options.subscriber(consumer);
    if (options.publisher) return null;
    switch (publisherKind()) {
      case 'nats':
        return subscribeNats(consumer, { servers: config.natsUrl as string, log });
      case 'redis':
        return subscribeRedisStream(consumer, { url: config.redisUrl as string, stream: `${config.redisPrefix}events`, log });
      case 'kafka':
        return subscribeKafka(consumer, { brokers: config.kafkaBrokers, log });
      default:
        return null;
    }
  }

  async function closeParts(p: Parts): Promise<void> {
    if (p.gauges) clearInterval(p.gauges);
    p.unhint?.();
    await p.listener?.close();
    await Promise.all([p.eventRelay.stop(), p.jobRelay?.stop(), p.runner?.stop(), p.webhooks.stop()]);
    await p.worker?.close();
    await p.subscription?.close().catch(() => undefined);
    await p.queue?.close();
    await p.publisher.close().catch(() => undefined);
  }

  async function waitQueueIdle(queue: JobQueue, deadline: number): Promise<boolean> {
    let busy = false;
    for (;;) {
      const c = await queue.counts();
      const n = (c.waiting ?? 0) + (c.active ?? 0) + (c.delayed ?? 0) + (c.prioritized ?? 0) + (c['waiting-children'] ?? 0);
      if (n === 0) return busy;
      busy = true;
      if (Date.now() > deadline) throw new Error(`jobs still queued after the drain timeout (${JSON.stringify(c)})`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  const system: JobSystem = {
    get role() {
      return role;
    },
    sources,
    get consumer() {
      return consumer;
    },
    context,
    get queue() {
      return parts?.queue ?? null;
    },

    async start(r, opts = {}) {
      const effective: JobRole = r === 'worker' && !(opts.queueRedisUrl ?? config.redisUrl) ? 'embedded' : r;
      await prepare(effective, opts);
      if (parts) await system.stop();
      options = opts;
      storageOverride = opts.storage ?? null;
      consumerHandlers = opts.consumerHandlers;
      consumer = makeConsumer();
      const p = build(effective);
      parts = p;
      role = effective;
      p.subscription = await subscribe();
      const wake = () => {
        p.eventRelay.wake();
        p.jobRelay?.wake();
        p.runner?.wake();
      };
      p.unhint = onOutboxWrite(wake);
      if (opts.listen !== false && app.database.kind === 'postgres' && config.databaseUrl) {
        p.listener = listenForOutbox(config.databaseUrl, wake, log);
      }
      p.eventRelay.start();
      p.jobRelay?.start();
      p.runner?.start();
      p.webhooks.start();
      if (p.queue) {
        const queue = p.queue;
        const sample = () =>
          queue
            .counts()
            .then((c) => {
              for (const [state, n] of Object.entries(c)) app.metrics.queueDepth.set({ queue: queue.queue.name, state }, n);
            })
            .catch(() => undefined);
        p.gauges = setInterval(sample, 10_000);
        p.gauges.unref();
        void sample();
      }
      log.info({ role: effective, publisher: p.publisher.name, queue: p.queue ? 'bullmq' : 'outbox' }, 'background jobs started');
    },

    async stop() {
      const p = parts;
      parts = null;
      role = null;
      if (p) await closeParts(p);
    },

    async close() {
      await system.stop();
      await ownStorage?.close?.().catch(() => undefined);
      ownStorage = null;
      ownStorageLoading = null;
    },

    async relayOnce() {
      const p = await idleParts();
      const jobs = (await p.jobRelay?.runOnce()) ?? 0;
      const events = await p.eventRelay.runOnce();
      return { jobs, events };
    },

    async drain(opts = {}) {
      const p = await idleParts();
      const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
      let total = 0;
      for (;;) {
        let work = 0;
        if (p.runner) work += await p.runner.drain();
        if (p.jobRelay) work += await p.jobRelay.drain();
        if (p.queue && opts.waitForQueue !== false && (await waitQueueIdle(p.queue, deadline))) work += 1;
        work += await p.eventRelay.drain();
        work += await p.webhooks.drain();
        total += work;
        if (work === 0) return total;
        if (Date.now() > deadline) throw new Error('processPendingJobs: still busy after the timeout');
      }
    },
  };
  return system;
}
