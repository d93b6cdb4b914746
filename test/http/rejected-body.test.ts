/**
 * An upload refused before its body is read (a bad bearer token 401, a cookie
 * without its CSRF header 403, an organization of someone else 404, a file
 * over the limit 413) reaches a well-behaved client as that answer, not as a
 * connection error (EPIPE/ECONNRESET) while it is still sending: Node's fetch
 * (undici, in a process of its own) and curl, small and large bodies, against
 * a real listening server. The rest of the body is read and discarded, up to
 * a bound past which the connection is closed.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { newOrg, quietJobs, type Org } from '../documents/helpers.js';
import { rawClient } from '../faults/helpers.js';

const run = promisify(execFile);
const MAX_MB = 1;
const KB = 1024;
const MB = 1024 * 1024;
const OTHER_TENANT = '00000000-0000-4000-8000-000000000000';

describe('uploads refused before their body is read, over a real connection', () => {
  let t: TestApp;
  let base: string;
  let port: number;
  let org: Org;
  let dir: string;
  const files = new Map<number, string>();

  beforeAll(async () => {
    t = await buildTestApp({ env: { MAX_FILE_SIZE_MB: String(MAX_MB) } });
    await quietJobs(t.app);
    org = await newOrg(t.app);
    await t.app.listen({ host: '127.0.0.1', port: 0 });
    port = (t.app.server.address() as { port: number }).port;
    base = `http://127.0.0.1:${port}`;
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-reject-'));
  });
  afterAll(async () => {
    await t?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function file(size: number): string {
    let f = files.get(size);
    if (!f) {
      f = path.join(dir, `${size}.bin`);
      fs.writeFileSync(f, Buffer.alloc(size, 7));
      files.set(size, f);
    }
    return f;
  }

  type Case = [label: string, status: number, size: number, tenant: 'own' | 'other', headers: () => Record<string, string>];
  const bearer = () => org.admin.auth;
  const cases: Case[] = [
    ['bad bearer token', 401, KB, 'own', () => ({ authorization: 'Bearer not-a-token' })],
    ['bad bearer token', 401, MB, 'own', () => ({ authorization: 'Bearer not-a-token' })],
    ['bad bearer token', 401, 20 * MB, 'own', () => ({ authorization: 'Bearer not-a-token' })],
    ['cookie without CSRF header', 403, KB, 'own', () => ({ cookie: `session=${org.admin.cookie}` })],
    ['cookie without CSRF header', 403, MB, 'own', () => ({ cookie: `session=${org.admin.cookie}` })],
    ['cookie without CSRF header', 403, 20 * MB, 'own', () => ({ cookie: `session=${org.admin.cookie}` })],
    ['another organization', 404, MB, 'other', bearer],
    ['another organization', 404, 20 * MB, 'other', bearer],
    // Over the 1 MB limit: found while reading (1.5 MB), or from the declared length (20 MB).
    ['file over the limit', 413, 1.5 * MB, 'own', bearer],
    ['file over the limit', 413, 20 * MB, 'own', bearer],
  ];
  const urlOf = (tenant: 'own' | 'other') => `${base}/api/tenants/${tenant === 'own' ? org.tid : OTHER_TENANT}/documents`;

  it.each(cases)('%s (%i), %d bytes: Node fetch in another process gets the answer every time', async (_label, status, size, tenant, headers) => {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', 'test/http/fixtures/upload-client.ts'], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', URL: urlOf(tenant), HEADERS: JSON.stringify(headers()), SIZE: String(size), COUNT: '8' },
      timeout: 60_000,
    });
    const { statuses, errors } = JSON.parse(stdout.trim().split('\n').at(-1)!) as { statuses: number[]; errors: string[] };
    expect(errors).toEqual([]);
    expect(statuses).toEqual(Array(8).fill(status));
  }, 90_000);

  it.each(cases)('%s (%i), %d bytes: curl gets the answer', async (_label, status, size, tenant, headers) => {
    const args = ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '30'];
    for (const [k, v] of Object.entries(headers())) args.push('-H', `${k}: ${v}`);
    for (let i = 0; i < 3; i++) {
      const { stdout } = await run('curl', [...args, '-F', `file=@${file(size)}`, urlOf(tenant)]);
      expect(stdout).toBe(String(status));
    }
  }, 90_000);

  it('keeps the connection after the answer, discarding the rest of the body, and serves the next request on it', async () => {
    const client = rawClient(port);
    const length = 512 * KB;
    client.write(`POST /api/tenants/${org.tid}/documents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n` +
      `Content-Type: multipart/form-data; boundary=b\r\nContent-Length: ${length}\r\n\r\n`);
    const res = await client.response;
    expect(res.status).toBe(401);
    expect(res.headers.connection).not.toBe('close');
    // The rest of the body is discarded; the same connection answers the next request.
    client.write(Buffer.alloc(length, 1));
    client.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
    const [, health] = await client.responses(2);
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body)).toEqual({ status: 'healthy' });
    client.destroy();
  });

  it('closes the connection once more than the bound (the largest upload) arrived and a grace period passed', async () => {
    const client = rawClient(port);
    const length = 50 * MB;
    client.write(`POST /api/tenants/${org.tid}/documents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n` +
      `Content-Type: multipart/form-data; boundary=b\r\nContent-Length: ${length}\r\n\r\n`);
    expect((await client.response).status).toBe(401);
    const chunk = Buffer.alloc(256 * KB, 1);
    let sent = 0;
    let open = true;
    void client.closed.then(() => { open = false; });
    const started = Date.now();
    // About 12 MB/s: the bound (MAX_FILE_SIZE_MB + 1 MB of multipart room) is passed within 0.2 s, the 50 MB would take 4 s.
    while (open && sent < length) {
      client.write(chunk);
      sent += chunk.length;
      await new Promise((r) => setTimeout(r, 20));
    }
    await client.closed;
    expect(sent).toBeGreaterThan((MAX_MB + 1) * MB);
    expect(sent).toBeLessThan(length);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_900);
  });
});
