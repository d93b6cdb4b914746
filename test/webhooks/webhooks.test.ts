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
import { createWebhookDispatcher } from '../../src/webhooks/dispatcher.js';
import { fanOut, insertEndpoint } from '../../src/webhooks/store.js';
import { guardedLookup, isPublicAddress, webhookUrlProblem } from '../../src/webhooks/url.js';
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

// Each of these reaches loopback, a private network or the cloud metadata service.
const BYPASSES = [
  'https://[::ffff:127.0.0.1]/h', 'https://[::ffff:169.254.169.254]/latest', 'https://[::ffff:10.0.0.1]/h',
  'https://[0:0:0:0:0:ffff:7f00:1]/h', 'https://localhost./h', 'https://LOCALHOST../h', 'https://api.localhost./h',
  'https://2130706433/h', 'https://0177.0.0.1/h', 'https://0x7f.0.0.1/h', 'https://127.1/h', 'https://127.0.0.1./h',
  'https://[::127.0.0.1]/h', 'https://[64:ff9b::a9fe:a9fe]/h', 'https://169.254.169.254/latest', 'https://0.0.0.0/h',
  'https://[::]/h', 'https://100.64.0.1/h', 'https://172.31.255.255/h', 'https://192.168.1.1/h', 'https://[fd00::1]/h',
  'https://[fe80::1]/h', 'https://224.0.0.1/h', 'https://[ff02::1]/h', 'https://255.255.255.255/h',
  'https://metadata.google.internal/computeMetadata', 'https://redis/h', 'https://printer.local/h',
];

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

  it('normalises the host before the check: IPv4 inside IPv6, trailing dots, numeric IPv4 forms', () => {
    for (const url of BYPASSES) expect(webhookUrlProblem(url, false), url).toMatch(/^must point to a public (address|host)$/);
    for (const url of ['https://93.184.216.34/h', 'https://[2606:4700:4700::1111]/h', 'https://hooks.example.com./h', 'https://[64:ff9b::5db8:d822]/h', 'https://[::ffff:93.184.216.34]/h']) {
      expect(webhookUrlProblem(url, false), url).toBeNull();
    }
    for (const url of BYPASSES) expect(webhookUrlProblem(url.replace('https:', 'http:'), true), url).toBeNull();
    expect(webhookUrlProblem('ftp://hooks.example.com/x', true)).toBe('must use https');
  });

  it('checks every resolved address, refusing the name when one of them is not public', async () => {
    const answers: Record<string, Array<{ address: string; family: number }>> = {
      'public.example.com': [{ address: '93.184.216.34', family: 4 }, { address: '2606:4700:4700::1111', family: 6 }],
      'mixed.example.com': [{ address: '93.184.216.34', family: 4 }, { address: '10.1.2.3', family: 4 }],
      'mapped.example.com': [{ address: '::ffff:169.254.169.254', family: 6 }],
    };
    const resolve = (host: string, _o: unknown, cb: (e: NodeJS.ErrnoException | null, a: Array<{ address: string; family: number }>) => void) => cb(null, answers[host] ?? []);
    const look = (allowInsecure: boolean, host: string, all: boolean) =>
      new Promise<{ err: NodeJS.ErrnoException | null; address: unknown }>((r) => guardedLookup(allowInsecure, resolve)(host, { all }, (err, address) => r({ err, address })));
    expect(await look(false, 'public.example.com', false)).toEqual({ err: null, address: '93.184.216.34' });
    expect((await look(false, 'public.example.com', true)).address).toEqual(answers['public.example.com']);
    expect((await look(false, 'mixed.example.com', true)).err?.message).toMatch(/non-public address \(10\.1\.2\.3\)/);
    expect((await look(false, 'mapped.example.com', false)).err?.code).toBe('ERR_WEBHOOK_ADDRESS');
    expect((await look(true, 'mixed.example.com', false)).err).toBeNull();
    expect(isPublicAddress('not an ip')).toBe(false);
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

describe.each(dbModes())('webhook SSRF on %s (WEBHOOK_ALLOW_INSECURE unset)', (mode) => {
  let t: TestApp;
  let app: FastifyInstance;
  let org: Org;
  let port: number;
  let connections = 0;
  let requests = 0;
  // A receiver on loopback: no delivery may reach it unless insecure endpoints are allowed.
  const server = http.createServer((req, res) => {
    requests += 1;
    req.resume();
    req.on('end', () => res.writeHead(200).end('ok'));
  });
  server.on('connection', () => (connections += 1));
  const quiet = { warn() {}, error() {}, debug() {} };

  beforeAll(async () => {
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
    t = await buildTestApp({ mode });
    app = t.app;
    org = await newOrg(app, 'Ssrf');
  });
  afterAll(async () => {
    await t?.close();
    await new Promise<void>((r) => server.close(() => r()));
  });

  const register = (url: string) =>
    app.inject({ method: 'POST', url: `/api/tenants/${org.tenant.id}/webhooks`, headers: org.session.auth, payload: { url, event_types: ['*'] } });

  /** An endpoint row as stored (registered through the API when `viaApi`), one event fanned out to it, one dispatcher pass. */
  async function deliverTo(url: string, opts: { viaApi: boolean; allowInsecure?: boolean; resolve?: Parameters<typeof guardedLookup>[1] }) {
    let id: string;
    if (opts.viaApi) {
      const res = await register(url);
      expect(res.statusCode, res.body).toBe(201);
      id = res.json().id;
    } else {
      id = (await insertEndpoint(app.db, { tenantId: org.tenant.id, url, eventTypes: ['*'], secret: 'whsec_x', description: null, createdBy: null })).id;
    }
    await fanOut(app.db, [makeEvent('audit.log', { tenantId: org.tenant.id, userId: null, data: { action: 'x' } })]);
    const dispatcher = createWebhookDispatcher({
      db: app.db, log: quiet, allowInsecure: opts.allowInsecure ?? false, resolve: opts.resolve, timeoutMs: 500, maxAttempts: 1,
    });
    await dispatcher.runOnce();
    const res = await app.inject({ method: 'GET', url: `/api/tenants/${org.tenant.id}/webhooks/${id}/deliveries`, headers: org.session.auth });
    await app.inject({ method: 'DELETE', url: `/api/tenants/${org.tenant.id}/webhooks/${id}`, headers: org.session.auth });
    return res.json().deliveries[0];
  }

  it('refuses the bypass forms at registration (400 invalid_webhook_url), and names WEBHOOK_ALLOW_INSECURE for http', async () => {
    for (const url of BYPASSES) {
      const res = await register(url);
      expect(res.statusCode, url).toBe(400);
      expect(res.json()).toMatchObject({ code: 'invalid_webhook_url' });
    }
    const http_ = await register('http://hooks.example.com/h');
    expect(http_.statusCode).toBe(400);
    expect(http_.json().detail).toMatch(/WEBHOOK_ALLOW_INSECURE/);
  });

  it('a public name that resolves to a private address is refused at delivery, without a connection', async () => {
    connections = 0;
    const resolve = (_h: string, _o: unknown, cb: (e: null, a: Array<{ address: string; family: number }>) => void) => cb(null, [{ address: '127.0.0.1', family: 4 }]);
    const d = await deliverTo(`https://hooks.example.com:${port}/x`, { viaApi: true, resolve });
    expect(d).toMatchObject({ status: 'failed', last_status_code: null });
    expect(d.last_error).toMatch(/hooks\.example\.com resolves to a non-public address \(127\.0\.0\.1\)/);
    expect(connections).toBe(0);
  });

  it('DNS rebinding: the name is resolved once, and the connection goes to the address that was checked', async () => {
    connections = 0;
    let calls = 0;
    // First answer public, every later one loopback: a check-then-connect with two lookups would reach the receiver.
    const resolve = (_h: string, _o: unknown, cb: (e: null, a: Array<{ address: string; family: number }>) => void) =>
      cb(null, [{ address: calls++ === 0 ? '93.184.216.34' : '127.0.0.1', family: 4 }]);
    const d = await deliverTo(`https://rebind.example.com:${port}/x`, { viaApi: true, resolve });
    expect(calls).toBe(1);
    expect(connections).toBe(0);
    expect(d.status).toBe('failed');
  });

  it('an endpoint stored with a non-public literal address is refused at delivery too', async () => {
    connections = 0;
    const d = await deliverTo(`https://[::ffff:127.0.0.1]:${port}/x`, { viaApi: false });
    expect(d).toMatchObject({ status: 'failed', last_error: 'the endpoint URL must point to a public address' });
    const plain = await deliverTo(`http://hooks.example.com:${port}/x`, { viaApi: false });
    expect(plain.last_error).toMatch(/WEBHOOK_ALLOW_INSECURE/);
    expect(connections).toBe(0);
  });

  it('with WEBHOOK_ALLOW_INSECURE the same name is delivered to the address the lookup answered', async () => {
    requests = 0;
    const resolve = (_h: string, _o: unknown, cb: (e: null, a: Array<{ address: string; family: number }>) => void) => cb(null, [{ address: '127.0.0.1', family: 4 }]);
    const d = await deliverTo(`http://hooks.example.com:${port}/x`, { viaApi: false, allowInsecure: true, resolve });
    expect(d).toMatchObject({ status: 'succeeded', last_status_code: 200 });
    expect(requests).toBe(1);
  });
});
