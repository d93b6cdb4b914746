/**
 * Prometheus metrics: `GET /metrics`, HTTP request counters and latency by
 * method, route pattern and status code, and ready-made instruments for the
 * rest of the app (queues, jobs, outbox, database pools).
 *
 * One Registry per `createMetrics()` call, so tests can build many apps.
 * The worker can use `createMetrics()` without Fastify.
 */
import fp from 'fastify-plugin';
import type { FastifyPluginAsync } from 'fastify';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface AppMetrics {
  registry: Registry;
  httpRequests: Counter<'method' | 'route' | 'status_code'>;
  httpDuration: Histogram<'method' | 'route' | 'status_code'>;
  httpErrors: Counter<'method' | 'route' | 'status_code'>;
  /** Jobs per queue and state (waiting, active, delayed, failed). */
  queueDepth: Gauge<'queue' | 'state'>;
  /** Job run time in seconds; outcome is `success`, `failure` or `retry`. */
  jobDuration: Histogram<'job' | 'outcome'>;
  /** Age in seconds of the oldest event not yet delivered by the outbox. */
  outboxLag: Gauge;
  /** Connections checked out, per pool (`control`, or a tenant database). */
  dbPoolInUse: Gauge<'pool'>;
}

export interface MetricsOptions {
  /** Collect process metrics (CPU, memory, event loop, GC). Default true. */
  defaultMetrics?: boolean;
}

export function createMetrics(opts: MetricsOptions = {}): AppMetrics {
  const registry = new Registry();
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry });
  const registers = [registry];
  const httpLabels = ['method', 'route', 'status_code'] as const;
  return {
    registry,
    httpRequests: new Counter({
      name: 'http_requests_total',
      help: 'HTTP requests answered, by method, route pattern and status code',
      labelNames: httpLabels,
      registers,
    }),
    httpDuration: new Histogram({
      name: 'http_request_duration_seconds',
      help: 'HTTP request latency in seconds, by method, route pattern and status code',
      labelNames: httpLabels,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    httpErrors: new Counter({
      name: 'http_request_errors_total',
      help: 'HTTP requests answered with a 5xx status',
      labelNames: httpLabels,
      registers,
    }),
    queueDepth: new Gauge({
      name: 'queue_depth',
      help: 'Jobs in a queue, by queue and state',
      labelNames: ['queue', 'state'] as const,
      registers,
    }),
    jobDuration: new Histogram({
      name: 'job_duration_seconds',
      help: 'Background job run time in seconds, by job name and outcome',
      labelNames: ['job', 'outcome'] as const,
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
      registers,
    }),
    outboxLag: new Gauge({
      name: 'outbox_lag_seconds',
      help: 'Age in seconds of the oldest outbox event not yet delivered (0 when empty)',
      registers,
    }),
    dbPoolInUse: new Gauge({
      name: 'db_pool_connections_in_use',
      help: 'Database connections checked out, by pool',
      labelNames: ['pool'] as const,
      registers,
    }),
  };
}

declare module 'fastify' {
  interface FastifyInstance {
    metrics: AppMetrics;
  }
}

export interface MetricsPluginOptions extends MetricsOptions {
  /** Use these instruments instead of creating new ones. */
  metrics?: AppMetrics;
}

const plugin: FastifyPluginAsync<MetricsPluginOptions> = async (app, opts) => {
  const metrics = opts.metrics ?? createMetrics(opts);
  app.decorate('metrics', metrics);

  app.addHook('onResponse', async (request, reply) => {
    // The route pattern (`/items/:id`), never the raw URL: label values must stay bounded.
    const labels = {
      method: request.method,
      route: request.routeOptions.url ?? 'unmatched',
      status_code: String(reply.statusCode),
    };
    metrics.httpRequests.inc(labels);
    metrics.httpDuration.observe(labels, reply.elapsedTime / 1000);
    if (reply.statusCode >= 500) metrics.httpErrors.inc(labels);
  });

  app.get('/metrics', { schema: { hide: true } }, async (_request, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });
};

export const metricsPlugin = fp(plugin, { name: 'metrics', fastify: '5.x' });
