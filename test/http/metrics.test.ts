import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { createMetrics, metricsPlugin } from '../../src/http/metrics.js';

const apps: FastifyInstance[] = [];

async function build(opts: Parameters<typeof metricsPlugin>[1] = {}) {
  const app = Fastify({ logger: false });
  apps.push(app);
  await app.register(metricsPlugin, opts);
  app.get('/health', async () => ({ status: 'healthy' }));
  app.get('/items/:id', async (request) => ({ id: (request.params as { id: string }).id }));
  app.get('/boom', async () => {
    throw new Error('boom');
  });
  await app.ready();
  return app;
}

async function scrape(app: FastifyInstance) {
  const res = await app.inject({ method: 'GET', url: '/metrics' });
  expect(res.statusCode).toBe(200);
  expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
  return res.body;
}

afterEach(async () => {
  await Promise.all(apps.splice(0).map((a) => a.close()));
});

describe('metrics plugin', () => {
  it('counts requests by route pattern, never by raw URL', async () => {
    const app = await build();
    await app.inject('/health');
    for (const id of ['8f14e45f-ceea-467f-a0e6-7a0c5d6b9b1e', '42', '43']) await app.inject(`/items/${id}`);
    await app.inject('/nowhere/7f3a9c');

    const text = await scrape(app);
    expect(text).toContain('http_requests_total{method="GET",route="/health",status_code="200"} 1');
    expect(text).toContain('http_requests_total{method="GET",route="/items/:id",status_code="200"} 3');
    expect(text).toContain('http_requests_total{method="GET",route="unmatched",status_code="404"} 1');
    expect(text).toMatch(/http_request_duration_seconds_bucket\{le="0\.005",method="GET",route="\/items\/:id",status_code="200"\} \d+/);
    expect(text).toContain('http_request_duration_seconds_count{method="GET",route="/items/:id",status_code="200"} 3');
    expect(text).toMatch(/http_request_duration_seconds_sum\{method="GET",route="\/items\/:id",status_code="200"\} [\d.e-]+/);
    for (const raw of ['8f14e45f', '/items/42', '/items/43', '7f3a9c', '/nowhere']) expect(text).not.toContain(raw);
  });

  it('counts 5xx answers as errors', async () => {
    const app = await build();
    expect((await app.inject('/boom')).statusCode).toBe(500);
    await app.inject('/health');
    const text = await scrape(app);
    expect(text).toContain('http_request_errors_total{method="GET",route="/boom",status_code="500"} 1');
    expect(text).not.toMatch(/http_request_errors_total\{[^}]*route="\/health"/);
  });

  it('serves default process metrics and the ready-made instruments', async () => {
    const app = await build();
    app.metrics.queueDepth.set({ queue: 'documents', state: 'waiting' }, 5);
    app.metrics.jobDuration.observe({ job: 'process-document', outcome: 'success' }, 0.3);
    app.metrics.outboxLag.set(12);
    app.metrics.dbPoolInUse.set({ pool: 'control' }, 2);
    const text = await scrape(app);
    expect(text).toContain('process_cpu_user_seconds_total');
    expect(text).toContain('nodejs_heap_size_used_bytes');
    expect(text).toContain('queue_depth{queue="documents",state="waiting"} 5');
    expect(text).toContain('job_duration_seconds_count{job="process-document",outcome="success"} 1');
    expect(text).toContain('outbox_lag_seconds 12');
    expect(text).toContain('db_pool_connections_in_use{pool="control"} 2');
  });

  it('keeps one registry per app, and lets the app register its own metrics', async () => {
    const a = await build();
    const b = await build({ defaultMetrics: false });
    expect(a.metrics.registry).not.toBe(b.metrics.registry);
    await a.inject('/health');
    await a.inject('/health');
    await b.inject('/health');
    expect(await scrape(a)).toContain('http_requests_total{method="GET",route="/health",status_code="200"} 2');
    const textB = await scrape(b);
    expect(textB).toContain('http_requests_total{method="GET",route="/health",status_code="200"} 1');
    expect(textB).not.toContain('process_cpu_user_seconds_total');

    const { Counter } = await import('prom-client');
    new Counter({ name: 'logins_total', help: 'Logins', registers: [a.metrics.registry] }).inc();
    expect(await scrape(a)).toContain('logins_total 1');
    expect(await scrape(b)).not.toContain('logins_total');
  });

  it('accepts instruments created beforehand', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const app = await build({ metrics });
    expect(app.metrics).toBe(metrics);
    await app.inject('/health');
    expect(await metrics.registry.metrics()).toContain('route="/health"');
  });
});
