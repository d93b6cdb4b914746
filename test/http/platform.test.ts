import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.js';

describe('platform: health, readiness, docs, conventions', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp({ mode: 'pglite', env: { CORS_ORIGINS: 'https://app.example.com' } });
  });
  afterAll(async () => t?.close());

  it('GET /health answers healthy without touching auth', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/health' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ status: 'healthy' });
    expect(res.headers['set-cookie']).toBeUndefined();
  });

  it('GET /ready reports each dependency, and 503 names the one that failed', async () => {
    const ok = await t.app.inject({ method: 'GET', url: '/ready' });
    expect(ok.statusCode).toBe(200);
    expect(ok.json().checks.database).toBe('ok');
    t.app.readiness.push({ name: 'broken', check: async () => { throw new Error('connection refused'); } });
    try {
      const bad = await t.app.inject({ method: 'GET', url: '/ready' });
      expect(bad.statusCode).toBe(503);
      expect(bad.json().checks).toMatchObject({ database: 'ok', broken: 'failed: connection refused' });
    } finally {
      t.app.readiness.pop();
    }
  });

  it('puts a request id on every answer, keeping a well-formed caller id', async () => {
    const generated = await t.app.inject({ method: 'GET', url: '/health' });
    expect(generated.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    const given = await t.app.inject({ method: 'GET', url: '/health', headers: { 'x-request-id': 'trace-abc.123' } });
    expect(given.headers['x-request-id']).toBe('trace-abc.123');
    const hostile = await t.app.inject({ method: 'GET', url: '/health', headers: { 'x-request-id': 'bad id\twith "quotes"' } });
    expect(hostile.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('serves the OpenAPI 3.1 document generated from the routes, and Swagger UI', async () => {
    const doc = await t.app.inject({ method: 'GET', url: '/api/docs/openapi.json' });
    expect(doc.statusCode).toBe(200);
    const spec = doc.json();
    expect(spec.openapi).toBe('3.1.0');
    for (const p of ['/api/auth/register', '/api/auth/login', '/api/auth/refresh', '/api/auth/logout', '/api/auth/me', '/api/auth/csrf', '/api/users/me', '/api/users/me/tenants']) {
      expect(spec.paths, p).toHaveProperty([p]);
    }
    expect(spec.paths['/api/auth/register'].post.requestBody.content['application/json'].schema.required).toEqual(['email', 'password']);
    expect(spec.components.securitySchemes).toHaveProperty('bearerAuth');
    const ui = await t.app.inject({ method: 'GET', url: '/api/docs/' });
    expect(ui.statusCode).toBe(200);
    expect(ui.headers['content-type']).toMatch(/text\/html/);
  });

  it('answers unknown routes with a 404 problem', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/api/nope?x=1' });
    expect(res.statusCode).toBe(404);
    expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
    expect(res.json()).toMatchObject({ status: 404, code: 'not_found', title: 'Not Found' });
  });

  it('sends security headers and CORS only for configured origins', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/health', headers: { origin: 'https://app.example.com' } });
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.headers['strict-transport-security']).toBeDefined();
    expect(res.headers['access-control-allow-origin']).toBe('https://app.example.com');
    expect(res.headers['access-control-allow-credentials']).toBe('true');
    const other = await t.app.inject({ method: 'GET', url: '/health', headers: { origin: 'https://evil.example.com' } });
    expect(other.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('exposes Prometheus metrics by route pattern', async () => {
    await t.app.inject({ method: 'GET', url: '/health' });
    const res = await t.app.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    expect(res.body).toMatch(/http_requests_total\{[^}]*route="\/health"[^}]*\} \d+/);
  });
});
