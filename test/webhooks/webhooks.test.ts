/**
 * Webhooks: admins register endpoints for event types; events become signed
 * deliveries to a receiver on loopback (WEBHOOK_ALLOW_INSECURE=true here),
 * retried with backoff, listed with their status.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildTestApp, dbModes, type TestApp } from '../helpers/app.js';
import { makeEvent } from '../../src/events/envelope.js';
import { processPendingJobs } from '../../src/jobs/index.js';
import { signPayload, verifySignature } from '../../src/webhooks/signature.js';
import { fanOut } from '../../src/webhooks/store.js';
import { webhookUrlProblem } from '../../src/webhooks/url.js';
import { member } from '../documents/helpers.js';
import { createDocument, newOrg, PNG_1PX, waitFor, type Org } from '../jobs/helpers.js';

interface Received {
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function receiver() {
  const got: Received[] = [];
  const plan: Record<string, number[]> = {}; // per path: status codes to answer, in order; 200 after
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      got.push({ path: req.url ?? '', headers: req.headers, body });
      res.writeHead(plan[req.url ?? '']?.shift() ?? 200).end('ok');
    });
  });
  return {
    got,
    plan,
    async listen(): Promise<string> {
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

describe('webhook URLs and signatures', () => {
  it('accepts public https endpoints only (unless insecure endpoints are allowed)', () => {
    expect(webhookUrlProblem('https://hooks.example.com/x', false)).toBeNull();
    expect(webhookUrlProblem('http://hooks.example.com/x', false)).toMatch(/^must use https .*WEBHOOK_ALLOW_INSECURE/);
    expect(webhookUrlProblem('https://127.0.0.1/x', false)).toBe('must point to a public address');
    expect(webhookUrlProblem('https://10.1.2.3/x', false)).toBe('must point to a public address');
    expect(webhookUrlProblem('https://[::1]/x', false)).toBe('must point to a public address');
    expect(webhookUrlProblem('https://localhost/x', false)).toBe('must point to a public host');
    expect(webhookUrlProblem('https://user:pw@hooks.example.com/', false)).toBe('must not contain credentials');
    expect(webhookUrlProblem('not a url', false)).toBe('must be an absolute URL');
    expect(webhookUrlProblem('http://127.0.0.1:9/x', true)).toBeNull();
  });

  it('signs t.body with HMAC-SHA256 and rejects tampering and old timestamps', () => {
    const now = 1_700_000_000;
    const header = signPayload('whsec_x', '{"a":1}', now);
    expect(verifySignature('whsec_x', header, '{"a":1}', { nowSec: now + 10 })).toBe(true);
    expect(verifySignature('whsec_x', header, '{"a":2}', { nowSec: now })).toBe(false);
    expect(verifySignature('whsec_y', header, '{"a":1}', { nowSec: now })).toBe(false);
    expect(verifySignature('whsec_x', header, '{"a":1}', { nowSec: now + 3600 })).toBe(false);
    expect(verifySignature('whsec_x', 'garbage', '{"a":1}')).toBe(false);
  });
});

describe.each(dbModes())('webhooks on %s', (mode) => {
  let t: TestApp;
  let app: FastifyInstance;
  let org: Org;
  const rx = receiver();
  let base: string;

  beforeAll(async () => {
    base = await rx.listen();
    t = await buildTestApp({ mode, env: { WEBHOOK_ALLOW_INSECURE: 'true' } });
    app = t.app;
    org = await newOrg(app, 'Hooks');
  });
  afterAll(async () => {
    await app?.jobs.stop();
    await t?.close();
    await rx.close();
  });

  const hooks = (method: 'GET' | 'POST' | 'PATCH' | 'DELETE', path = '', payload?: object, auth = org.session.auth) =>
    app.inject({ method, url: `/api/tenants/${org.tenant.id}/webhooks${path}`, headers: auth, payload });

  it('admins register endpoints; others cannot', async () => {
    const user = await member(app, org.tenant.id, 'user');
    expect((await hooks('GET', '', undefined, user.auth)).statusCode).toBe(403);
    expect((await hooks('POST', '', { url: `${base}/x`, event_types: ['document.processed'] }, user.auth)).statusCode).toBe(403);
    const bad = await hooks('POST', '', { url: `${base}/x`, event_types: ['no.such.event'] });
    expect(bad.statusCode).toBe(400);
  });

  it('delivers a subscribed event, signed, once; other event types are not sent', async () => {
    const created = await hooks('POST', '', { url: `${base}/processed`, event_types: ['document.processed'], description: 'ci' });
    expect(created.statusCode).toBe(201);
    const ep = created.json();
    expect(ep).toMatchObject({ url: `${base}/processed`, event_types: ['document.processed'], is_active: true });
    expect(ep.secret).toMatch(/^whsec_[0-9a-f]{64}$/);
    expect((await hooks('GET')).json().webhooks[0]).not.toHaveProperty('secret');

    const d = await createDocument(app, org, PNG_1PX, { filename: 'w.png', mimeType: 'image/png' });
    await processPendingJobs(app);
    const mine = rx.got.filter((r) => r.path === '/processed');
    expect(mine).toHaveLength(1);
    const [req] = mine;
    expect(verifySignature(ep.secret, req.headers['x-webhook-signature'] as string, req.body)).toBe(true);
    const event = JSON.parse(req.body);
    expect(event).toMatchObject({ event_type: 'document.processed', tenant_id: org.tenant.id, data: { document_id: d.documentId, status: 'ready' } });
    expect(req.headers).toMatchObject({ 'x-webhook-event': 'document.processed', 'x-webhook-event-id': event.event_id, 'content-type': 'application/json' });

    const list = (await hooks('GET', `/${ep.id}/deliveries`)).json();
    expect(list.total).toBe(1);
    expect(list.deliveries[0]).toMatchObject({ event_id: event.event_id, status: 'succeeded', attempts: 1, last_status_code: 200, last_error: null });

    // The same event consumed again (at-least-once) adds no delivery.
    expect(await fanOut(app.db, [event])).toBe(0);
  });

  it('retries a failing endpoint with backoff, then gives up and says why', async () => {
    const flaky = (await hooks('POST', '', { url: `${base}/flaky`, event_types: ['document.updated', 'user.registered'] })).json();
    const dead = (await hooks('POST', '', { url: `${base}/dead`, event_types: ['audit.log'] })).json();
    await app.jobs.start('embedded', { pollMs: 20, webhooks: { backoffMs: 20, maxAttempts: 3, idleMs: 20 } });
    try {
      rx.plan['/flaky'] = [500, 503]; // the first two attempts fail
      const e = makeEvent('document.updated', { tenantId: org.tenant.id, userId: null, data: { n: 1 } });
      await fanOut(app.db, [e]);
      app.jobs.drain().catch(() => undefined);
      const got = await waitFor(
        async () => (await hooks('GET', `/${flaky.id}/deliveries`)).json().deliveries[0],
        (x) => x?.status === 'succeeded',
      );
      expect(got).toMatchObject({ attempts: 3, last_status_code: 200 });
      expect(rx.got.filter((r) => r.path === '/flaky').map((r) => r.headers['x-webhook-attempt'])).toEqual(['1', '2', '3']);

      await app.inject({ method: 'PATCH', url: `/api/tenants/${org.tenant.id}/webhooks/${dead.id}`, headers: org.session.auth, payload: { url: 'http://127.0.0.1:1/closed' } });
      await fanOut(app.db, [makeEvent('audit.log', { tenantId: org.tenant.id, userId: null, data: { action: 'x' } })]);
      const failed = await waitFor(
        async () => (await hooks('GET', `/${dead.id}/deliveries?status=failed`)).json().deliveries[0],
        (x) => Boolean(x),
      );
      expect(failed).toMatchObject({ status: 'failed', attempts: 3, last_status_code: null });
      expect(failed.last_error).toBeTruthy();
    } finally {
      await app.jobs.stop();
    }
  });

  it('stops sending to a disabled endpoint, and deleting one removes it', async () => {
    const ep = (await hooks('POST', '', { url: `${base}/off`, event_types: ['document.deleted'] })).json();
    expect((await hooks('PATCH', `/${ep.id}`, { is_active: false })).json().is_active).toBe(false);
    expect(await fanOut(app.db, [makeEvent('document.deleted', { tenantId: org.tenant.id, userId: null })])).toBe(0);
    expect((await hooks('DELETE', `/${ep.id}`)).statusCode).toBe(204);
    expect((await hooks('GET', `/${ep.id}`)).statusCode).toBe(404);
  });
});
