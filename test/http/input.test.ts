/**
 * Bad input never gets a 5xx and every error is problem+json: NUL and unpaired
 * surrogates in any string, unknown body fields, non-finite and huge
 * integers, empty tenant segments, PostgreSQL data errors, and the errors
 * Fastify and Node's HTTP parser answer themselves.
 */
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorHandlerPlugin, fromDatabaseDataError } from '../../src/http/errors.js';
import { buildValidator } from '../../src/http/validation.js';
import { buildTestApp, dbModes, type Session, type TestApp } from '../helpers/app.js';
import { markReady, newOrg, quietJobs, upload, type Org } from '../documents/helpers.js';

function expectProblem(res: LightMyRequestResponse, status: number, code?: string) {
  expect(res.statusCode, res.body).toBe(status);
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
  const body = res.json();
  expect(body).toMatchObject({ status, code: expect.any(String), error: expect.any(String) });
  if (code) expect(body.code).toBe(code);
  return body;
}

/** One HTTP/1.1 exchange on a raw socket: whatever the server answers before it closes. */
function rawRequest(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let got = '';
    socket.on('data', (c) => (got += c.toString('latin1')));
    socket.on('error', (err) => (got ? resolve(got) : reject(err)));
    socket.on('close', () => resolve(got));
    socket.write(request);
  });
}

/** A raw HTTP answer: status, lower-cased headers, body. */
function parseRaw(raw: string) {
  const [head, ...rest] = raw.split('\r\n\r\n');
  const [statusLine, ...lines] = head.split('\r\n');
  const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
  return { status: Number(statusLine.split(' ')[1]), headers, body: rest.join('\r\n\r\n') };
}

describe.each(dbModes())('bad input on %s', (mode) => {
  let t: TestApp;
  let app: FastifyInstance;
  let org: Org;
  let docId: string;
  const json = { 'content-type': 'application/json' };
  const send = (method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', url: string, s?: Session, payload?: unknown) =>
    app.inject({ method, url, headers: { ...(s?.auth ?? {}), ...(payload !== undefined ? json : {}) }, payload: payload === undefined ? undefined : typeof payload === 'string' ? payload : JSON.stringify(payload) });

  beforeAll(async () => {
    t = await buildTestApp({ mode });
    app = t.app;
    await quietJobs(app);
    org = await newOrg(app, 'Input');
    const up = await upload(app, org.admin, org.tid, 'some text', { filename: 'input.txt' });
    expect(up.statusCode).toBe(201);
    docId = up.json().id;
    await markReady(app, org.tid, docId);
  });
  afterAll(async () => t?.close());

  describe('NUL bytes and unpaired surrogates are 400 validation_error wherever they are', () => {
    const NUL = 'a\u0000b';
    // Raw JSON text: JSON.stringify would keep "\ud800" as an escape, which is what clients send.
    const LONE = '"a\\ud800b"';

    it('in JSON bodies: login, register, profile, webhooks', async () => {
      const cases: Array<[string, string, unknown, boolean]> = [
        ['POST', '/api/auth/login', { email: `x${NUL}@example.com`, password: 'whatever it is' }, false],
        ['POST', '/api/auth/register', { email: 'nul1@example.com', password: 'correct horse battery', first_name: NUL }, false],
        ['POST', '/api/auth/register', { email: 'nul2@example.com', password: 'correct horse battery', last_name: NUL }, false],
        ['POST', '/api/auth/register', { email: 'nul3@example.com', password: 'correct horse battery', organization_name: NUL }, false],
        ['PUT', '/api/users/me', { first_name: NUL }, true],
        ['PUT', '/api/users/me', { last_name: NUL }, true],
        ['POST', `/api/tenants/${org.tid}/webhooks`, { url: `https://hooks.example.com/${NUL}`, event_types: ['*'] }, true],
        ['POST', `/api/tenants/${org.tid}/webhooks`, { url: 'https://hooks.example.com/x', event_types: ['*'], description: NUL }, true],
        ['POST', '/api/tenants', { name: NUL }, true],
      ];
      for (const [method, url, body, authed] of cases) {
        const res = await send(method as 'POST', url, authed ? org.admin : undefined, body);
        const p = expectProblem(res, 400, 'validation_error');
        expect(p.detail, `${method} ${url}`).toMatch(/NUL/);
      }
      // Keys count as input too.
      expectProblem(await send('PUT', '/api/users/me', org.admin, { [`first${NUL}`]: 'x' }), 400, 'validation_error');
    });

    it('in query strings: both document lists and the audit log', async () => {
      for (const url of [`/api/tenants/${org.tid}/documents?filename=%00`, '/api/files?filename=%00', `/api/tenants/${org.tid}/audit?action=%00`]) {
        expectProblem(await send('GET', url, org.admin), 400, 'validation_error');
      }
    });

    it('a lone surrogate in a tenant name, on PUT as on POST', async () => {
      expectProblem(await send('PUT', `/api/tenants/${org.tid}`, org.admin, `{"name":${LONE}}`), 400, 'validation_error');
      expectProblem(await send('POST', '/api/tenants', org.admin, `{"name":${LONE}}`), 400, 'validation_error');
      expectProblem(await send('PUT', '/api/users/me', org.admin, '{"first_name":"\\udc00"}'), 400, 'validation_error');
      // A surrogate pair is one character (an emoji), not an error.
      const ok = await send('PUT', '/api/users/me', org.admin, '{"first_name":"Ada \\ud83d\\ude00"}');
      expect(ok.statusCode, ok.body).toBe(200);
      expect(ok.json().first_name).toBe('Ada \u{1F600}');
    });

    it('a PostgreSQL data error that gets past validation is 400 invalid_value, not 500', async () => {
      const probe = Fastify();
      await probe.register(errorHandlerPlugin);
      const cases: Record<string, (db: typeof app.db) => Promise<unknown>> = {
        nul: (db) => sql`SELECT ${'a\u0000b'}::text`.execute(db), // 22021
        bigint: (db) => sql`SELECT ${'1e21'}::bigint`.execute(db), // 22P02
        range: (db) => sql`SELECT ${'40000'}::smallint`.execute(db), // 22003
        date: (db) => sql`SELECT ${'2024-13-45'}::date`.execute(db), // 22008 / 22007
        json: (db) => sql`SELECT ${'"\\ud800"'}::jsonb`.execute(db), // 22P02 / 22P05
      };
      for (const [name, run] of Object.entries(cases)) probe.get(`/${name}`, async () => run(app.db));
      probe.get('/other', async () => sql`SELECT * FROM no_such_table`.execute(app.db)); // 42P01: a bug, stays 500
      await probe.ready();
      try {
        for (const name of Object.keys(cases)) expectProblem(await probe.inject({ url: `/${name}` }), 400, 'invalid_value');
        expectProblem(await probe.inject({ url: '/other' }), 500, 'internal_error');
      } finally {
        await probe.close();
      }
      expect(fromDatabaseDataError(Object.assign(new Error('x'), { code: '22021', severity: 'ERROR' }))?.statusCode).toBe(400);
      expect(fromDatabaseDataError(Object.assign(new Error('x'), { code: '57P01', severity: 'FATAL' }))).toBeNull();
    });
  });

  describe('unknown body fields are 400 unknown_field naming them', () => {
    it('register with organisation_name (and another) names both and creates nothing', async () => {
      const res = await send('POST', '/api/auth/register', undefined, {
        email: 'typo@example.com', password: 'correct horse battery', organisation_name: 'Acme', colour: 'red',
      });
      const p = expectProblem(res, 400, 'unknown_field');
      expect(p.fields).toEqual(['organisation_name', 'colour']);
      expect(p.detail).toMatch(/organisation_name, colour/);
      const login = await send('POST', '/api/auth/login', undefined, { email: 'typo@example.com', password: 'correct horse battery' });
      expect(login.statusCode).toBe(401);
    });

    it('on every route with a JSON body (the OpenAPI document says additionalProperties: false)', async () => {
      const doc = (await app.inject({ url: '/api/docs/openapi.json' })).json();
      let bodies = 0;
      for (const [p, ops] of Object.entries<Record<string, any>>(doc.paths)) {
        for (const [method, op] of Object.entries<any>(ops)) {
          const schema = op.requestBody?.content?.['application/json']?.schema;
          if (!schema) continue;
          bodies += 1;
          expect(schema.additionalProperties, `${method} ${p}`).toBe(false);
        }
      }
      expect(bodies).toBeGreaterThanOrEqual(12);
      for (const [method, url, body] of [
        ['POST', '/api/auth/login', { email: 'a@example.com', password: 'x', remember: true }],
        ['POST', '/api/auth/refresh', { refresh_token: 'x', extra: 1 }],
        ['POST', '/api/tenants', { name: 'Extra Co', plan: 'gold' }],
        ['POST', `/api/tenants/${org.tid}/invitations`, { email: 'inv@example.com', role: 'user', note: 'hi' }],
        ['PUT', `/api/tenants/${org.tid}/documents/${docId}`, { filename: 'x.txt', size: 3 }],
        ['PATCH', `/api/tenants/${org.tid}/webhooks/00000000-0000-4000-8000-000000000000`, { is_active: true, secret: 'x' }],
      ] as const) {
        const p = expectProblem(await send(method, url, org.admin, body), 400, 'unknown_field');
        expect(p.fields.length, `${method} ${url}`).toBe(1);
      }
    });
  });

  describe('integers in the query are integers within bounds, or 400', () => {
    const odd = ['Infinity', '-Infinity', '1e309', '99999999999999999999', '1e3', '0x10', '1.5', '', 'NaN', '-1', '0'];

    it('page, per_page and limit on every list', async () => {
      const lists = [
        '/api/tenants',
        '/api/files',
        `/api/tenants/${org.tid}/documents`,
        `/api/tenants/${org.tid}/files`,
        `/api/tenants/${org.tid}/audit`,
        `/api/tenants/${org.tid}/webhooks/00000000-0000-4000-8000-000000000000/deliveries`,
      ];
      for (const list of lists) {
        for (const param of ['page', 'per_page', 'limit']) {
          for (const v of odd) {
            const res = await send('GET', `${list}?${param}=${encodeURIComponent(v)}`, org.admin);
            expect(res.statusCode, `${list}?${param}=${v}: ${res.body}`).toBe(400);
            expectProblem(res, 400, 'validation_error');
          }
        }
        expectProblem(await send('GET', `${list}?per_page=10&limit=Infinity`, org.admin), 400, 'validation_error');
        expectProblem(await send('GET', `${list}?per_page=10&limit=101`, org.admin), 400, 'validation_error');
      }
      const ok = await send('GET', `/api/tenants/${org.tid}/documents?page=1&per_page=100`, org.admin);
      expect(ok.statusCode).toBe(200);
      expect((await send('GET', '/api/tenants?page=1000000', org.admin)).statusCode).toBe(200);
    });

    it('expires_in on download-url', async () => {
      for (const v of odd) {
        const res = await send('GET', `/api/tenants/${org.tid}/documents/${docId}/download-url?expires_in=${encodeURIComponent(v)}`, org.admin);
        expectProblem(res, 400, 'validation_error');
      }
      const ok = await send('GET', `/api/tenants/${org.tid}/documents/${docId}/download-url?expires_in=60`, org.admin);
      expect(ok.statusCode, ok.body).toBe(200);
    });

    it('every integer query parameter in the OpenAPI document has a minimum and a maximum', async () => {
      const doc = (await app.inject({ url: '/api/docs/openapi.json' })).json();
      let ints = 0;
      for (const [p, ops] of Object.entries<Record<string, any>>(doc.paths)) {
        for (const [method, op] of Object.entries<any>(ops)) {
          for (const param of op.parameters ?? []) {
            if (param.schema?.type !== 'integer') continue;
            ints += 1;
            expect(Number.isFinite(param.schema.maximum), `${method} ${p} ${param.name}`).toBe(true);
            expect(Number.isFinite(param.schema.minimum), `${method} ${p} ${param.name}`).toBe(true);
          }
        }
      }
      expect(ints).toBeGreaterThanOrEqual(19);
    });
  });

  it('an empty tenant segment is 404 problem+json on every tenant route', async () => {
    for (const [method, url] of [
      ['GET', '/api/tenants//documents/'],
      ['GET', '/api/tenants//documents'],
      ['GET', '/api/tenants//files'],
      ['GET', '/api/tenants//audit'],
      ['GET', '/api/tenants//webhooks'],
      ['DELETE', '/api/tenants//documents/x'],
      ['POST', '/api/tenants//invitations'],
    ] as const) {
      const res = await send(method, url, org.admin, method === 'POST' ? { email: 'x@example.com', role: 'user' } : undefined);
      expect(res.statusCode, `${method} ${url}: ${res.body}`).toBe(404);
      expectProblem(res, 404);
    }
  });

  describe("Fastify's and Node's own errors are problem+json with a code", () => {
    it('a path parameter over 100 characters is 414, bad percent-encoding 400', async () => {
      expectProblem(await send('GET', `/api/tenants/${'a'.repeat(150)}`, org.admin), 414, 'path_parameter_too_long');
      expectProblem(await send('GET', `/api/tenants/${org.tid}/documents/${'b'.repeat(101)}`, org.admin), 414, 'path_parameter_too_long');
      expectProblem(await send('GET', '/api/tenants/%ff', org.admin), 400, 'bad_url');
      expectProblem(await send('GET', `/api/tenants/${org.tid}/documents/%c3%28`, org.admin), 400, 'bad_url');
    });

    it('headers over 16 KB are 431 and malformed HTTP 400, answered by the server itself', async () => {
      const port = await listen(app);
      const big = parseRaw(await rawRequest(port, `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20 * 1024)}\r\n\r\n`));
      expect(big.status).toBe(431);
      expect(big.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(JSON.parse(big.body)).toMatchObject({ status: 431, code: 'headers_too_large', error: expect.any(String) });
      const bad = parseRaw(await rawRequest(port, 'GARBAGE\r\n\r\n'));
      expect(bad.status).toBe(400);
      expect(JSON.parse(bad.body)).toMatchObject({ status: 400, code: 'bad_request', error: expect.any(String) });
      // The server is still there.
      const ok = parseRaw(await rawRequest(port, 'GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
      expect(ok.status).toBe(200);
    });
  });
});

const listening = new WeakMap<FastifyInstance, number>();
async function listen(app: FastifyInstance): Promise<number> {
  if (!listening.has(app)) {
    await app.listen({ port: 0, host: '127.0.0.1' });
    listening.set(app, (app.server.address() as AddressInfo).port);
  }
  return listening.get(app) as number;
}

describe('the validation and error mechanisms', () => {
  it('maps any other Fastify error code to a stable snake_case code, without the FST_ prefix', async () => {
    const probe = Fastify();
    await probe.register(errorHandlerPlugin);
    probe.get('/x', async () => {
      throw Object.assign(new Error('something Fastify says'), { code: 'FST_ERR_SOMETHING_NEW', statusCode: 409 });
    });
    const res = await probe.inject({ url: '/x' });
    expectProblem(res, 409, 'something_new');
    await probe.close();
  });

  it('refuses non-finite coerced numbers (Ajv lets them past minimum/maximum)', async () => {
    const probe = Fastify({ schemaController: { compilersFactory: { buildValidator: buildValidator() as any } } });
    await probe.register(errorHandlerPlugin);
    probe.get('/n', { schema: { querystring: { type: 'object', properties: { x: { type: 'number', minimum: 0, maximum: 10 } } } } }, async (r) => r.query);
    for (const v of ['Infinity', '-Infinity', '1e309']) expectProblem(await probe.inject({ url: `/n?x=${v}` }), 400, 'validation_error');
    expect((await probe.inject({ url: '/n?x=2.5' })).json()).toEqual({ x: 2.5 });
    await probe.close();
  });

  it('answers requests that arrive while the server closes with 503 problem+json and Retry-After', async () => {
    // buildApp turns Fastify's own closing answer (plain JSON) off for this one.
    const probe = Fastify({ return503OnClosing: false });
    await probe.register(errorHandlerPlugin);
    let release = () => {};
    probe.get('/slow', () => new Promise((r) => (release = () => r({ ok: true }))));
    probe.get('/fast', async () => ({ ok: true }));
    await probe.listen({ port: 0, host: '127.0.0.1' });
    const socket = net.connect((probe.server.address() as AddressInfo).port, '127.0.0.1');
    let got = '';
    socket.on('data', (c) => (got += c.toString()));
    socket.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n');
    await new Promise((r) => setTimeout(r, 100));
    const closed = probe.close();
    await new Promise((r) => setTimeout(r, 50));
    socket.write('GET /fast HTTP/1.1\r\nHost: x\r\n\r\n');
    await new Promise((r) => setTimeout(r, 100));
    release();
    await closed;
    await new Promise((r) => socket.on('close', r));
    const second = got.slice(got.indexOf('HTTP/1.1', 1));
    const answer = parseRaw(second);
    expect(answer.status).toBe(503);
    expect(answer.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(answer.headers['retry-after']).toBe('1');
    expect(JSON.parse(answer.body)).toMatchObject({ code: 'shutting_down', error: expect.any(String) });
  });

  it('walks deep input without overflowing the stack', async () => {
    const probe = Fastify({ schemaController: { compilersFactory: { buildValidator: buildValidator() as any } }, bodyLimit: 10 * 1024 * 1024 });
    await probe.register(errorHandlerPlugin);
    probe.post('/b', { schema: { body: { type: 'object', properties: { a: {} } } } }, async () => ({ ok: true }));
    const deep = `{"a":${'['.repeat(200_000)}"\\u0000"${']'.repeat(200_000)}}`;
    const res = await probe.inject({ method: 'POST', url: '/b', headers: { 'content-type': 'application/json' }, payload: deep });
    expect(res.statusCode).toBeLessThan(500);
    await probe.close();
  });
});
