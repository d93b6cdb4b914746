/**
 * A stalled upload: a client that sends the headers and 256 KB of a 1 MB
 * multipart body, then nothing, gets 408 `request_timeout` after
 * BODY_IDLE_TIMEOUT_MS and the connection is closed; its staging file is gone.
 * A slow client that keeps sending, and a pause on the server's own side (a
 * slow disk holding the body back), are not cut. The server's own timeouts
 * are the configured ones.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { createLocalStore, type BlobStore } from '../../src/storage/index.js';
import { countRows, newOrg, quietJobs, type Org } from '../documents/helpers.js';
import { rawClient, timed } from './helpers.js';

const IDLE_MS = 600;
const BOUNDARY = 'tbstalled';

function uploadHead(org: Org, fileBytes: number, port: number) {
  const preamble = Buffer.from(
    `--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`,
  );
  const epilogue = Buffer.from(`\r\n--${BOUNDARY}--\r\n`);
  const length = preamble.length + fileBytes + epilogue.length;
  const head =
    `POST /api/tenants/${org.tid}/documents HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
    `Authorization: Bearer ${org.admin.accessToken}\r\nContent-Type: multipart/form-data; boundary=${BOUNDARY}\r\n` +
    `Content-Length: ${length}\r\n\r\n`;
  return { head, preamble, epilogue };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('stalled and slow upload bodies', () => {
  let t: TestApp;
  let port: number;
  let root: string;
  let staging: string;
  /** Set by a test: the next staging pauses this long after its first chunk (a slow disk). */
  let diskPauseMs = 0;

  beforeAll(async () => {
    const env = {
      BODY_IDLE_TIMEOUT_MS: String(IDLE_MS),
      HTTP_REQUEST_TIMEOUT_MS: '120000',
      HTTP_HEADERS_TIMEOUT_MS: '20000',
      HTTP_KEEP_ALIVE_TIMEOUT_MS: '5000',
      HTTP_CONNECTION_TIMEOUT_MS: '90000',
    };
    // The local store, with a pause on cue while it reads the body.
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-stall-'));
    const real = createLocalStore({ root, durable: false });
    const storage: BlobStore = {
      ...real,
      stage(source, opts) {
        const pause = diskPauseMs;
        diskPauseMs = 0;
        if (!pause) return real.stage(source, opts);
        async function* slow() {
          let first = true;
          for await (const chunk of source as AsyncIterable<Buffer>) {
            yield chunk;
            if (first) await sleep(pause);
            first = false;
          }
        }
        return real.stage(Readable.from(slow()), opts);
      },
    };
    t = await buildTestApp({ env: { ...env, UPLOAD_FOLDER: root }, build: { storage } });
    await quietJobs(t.app);
    await t.app.listen({ host: '127.0.0.1', port: 0 });
    port = (t.app.server.address() as { port: number }).port;
    staging = path.join(root, '.tmp');
  });
  afterAll(async () => {
    await t?.close();
    fs.rmSync(root, { recursive: true, force: true });
  });

  const stagingFiles = () => (fs.existsSync(staging) ? fs.readdirSync(staging) : []);

  it('applies the configured server timeouts', () => {
    const server = t.app.server;
    expect(server.requestTimeout).toBe(120_000);
    expect(server.headersTimeout).toBe(20_000);
    expect(server.keepAliveTimeout).toBe(5_000);
    expect(server.timeout).toBe(90_000);
  });

  it('answers 408 request_timeout to a body that stops after 256 KB of 1 MB, closes, and removes the staging file', async () => {
    const org = await newOrg(t.app);
    const { head, preamble } = uploadHead(org, 1024 * 1024, port);
    const client = rawClient(port);
    client.write(head);
    client.write(Buffer.concat([preamble, randomBytes(256 * 1024)]));
    // The bytes sent are being staged.
    await expect.poll(() => stagingFiles().length, { timeout: 5_000 }).toBe(1);

    const { value: res, ms } = await timed(() => client.response);
    expect(res.status).toBe(408);
    expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
    expect(JSON.parse(res.body)).toMatchObject({ status: 408, code: 'request_timeout' });
    expect(res.headers.connection).toBe('close');
    expect(ms).toBeGreaterThan(IDLE_MS / 2);
    expect(ms).toBeLessThan(IDLE_MS + 3_000);
    await client.closed;
    expect(stagingFiles()).toEqual([]);
    expect(await countRows(t.app, org.tid)).toEqual({ files: 0, documents: 0 });
  });

  it('answers 408 to a body that stops before its file part starts', async () => {
    const org = await newOrg(t.app);
    const { head } = uploadHead(org, 1024 * 1024, port);
    const client = rawClient(port);
    client.write(head);
    client.write(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="filename"\r\n\r\nname.txt\r\n`);
    const res = await client.response;
    expect(res.status).toBe(408);
    await client.closed;
    expect(stagingFiles()).toEqual([]);
  });

  it('does not cut a slow client that keeps sending (a chunk every third of the idle timeout)', async () => {
    const org = await newOrg(t.app);
    const size = 64 * 1024 * 6;
    const { head, preamble, epilogue } = uploadHead(org, size, port);
    const client = rawClient(port);
    client.write(head);
    client.write(preamble);
    for (let i = 0; i < 6; i++) {
      await sleep(IDLE_MS / 3);
      client.write(randomBytes(64 * 1024));
    }
    client.write(epilogue);
    const res = await client.response;
    expect(res.status, res.body).toBe(201);
    client.destroy();
  });

  it('does not take a pause of the server\'s own storage (holding the body back) for a stalled client', async () => {
    const org = await newOrg(t.app);
    const size = 8 * 1024 * 1024;
    const { head, preamble, epilogue } = uploadHead(org, size, port);
    diskPauseMs = IDLE_MS * 2;
    const client = rawClient(port);
    client.write(head);
    client.write(Buffer.concat([preamble, randomBytes(size), epilogue]));
    const res = await client.response;
    expect(res.status, res.body).toBe(201);
    client.destroy();
  });
});
