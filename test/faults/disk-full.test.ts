/**
 * A full disk (ENOSPC) or an exhausted disk quota (EDQUOT) during an upload
 * answers 507 `insufficient_storage` (never a 400 that blames the client's
 * body, never a 500), logged at error, with nothing left behind; /ready
 * reports storage with less free space than STORAGE_MIN_FREE_MB.
 *
 * Two ways: a blob store that fails like a full disk at a chosen step (always),
 * and a real 1 MB tmpfs (where this process may mount one, e.g. as root).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { IN_CI } from '../helpers/env.js';
import { createLocalStore, type BlobStore } from '../../src/storage/index.js';
import { countRows, multipart, newOrg, quietJobs, usedBytes, type Org } from '../documents/helpers.js';

function fsError(code: 'ENOSPC' | 'EDQUOT', syscall: string): NodeJS.ErrnoException {
  const text = code === 'ENOSPC' ? 'no space left on device' : 'disk quota exceeded';
  return Object.assign(new Error(`${code}: ${text}, ${syscall}`), { code, errno: code === 'ENOSPC' ? -28 : -122, syscall });
}

/** The local store, failing as a full disk would at the step named by `fail.at`. */
function failingStore(root: string, fail: { at: 'none' | 'stage' | 'commit'; code: 'ENOSPC' | 'EDQUOT'; freeBytes: number }): BlobStore {
  const real = createLocalStore({ root, durable: false });
  return {
    ...real,
    async stage(source, opts) {
      const staged = await real.stage(source, opts);
      if (fail.at === 'stage') {
        // The whole body was read and written, and the last write (or the fsync) failed: the
        // client's body has ended by the time the error is seen.
        await staged.discard();
        throw fsError(fail.code, 'write');
      }
      if (fail.at !== 'commit') return staged;
      return { ...staged, commit: async () => { throw fsError(fail.code, 'link'); } };
    },
    freeBytes: async () => fail.freeBytes,
  };
}

/** Every file under `dir`, relative. */
function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true, withFileTypes: true }) as fs.Dirent[])
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath ?? (e as { path: string }).path, e.name)));
}

function logLines(): { stream: Writable; lines: Array<Record<string, any>> } {
  const lines: Array<Record<string, any>> = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line.trim()) lines.push(JSON.parse(line));
      cb();
    },
  });
  return { stream, lines };
}

async function listen(app: FastifyInstance): Promise<string> {
  await app.listen({ host: '127.0.0.1', port: 0 });
  return `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
}

function post(base: string, org: Org, bytes: Buffer) {
  const body = multipart([{ name: 'file', filename: 'big.bin', contentType: 'application/octet-stream', data: bytes }]);
  return fetch(`${base}/api/tenants/${org.tid}/documents`, { method: 'POST', headers: { ...org.admin.auth, ...body.headers }, body: body.payload });
}

describe('storage full (a store failing like a full disk), over a real connection', () => {
  let t: TestApp;
  let base: string;
  let root: string;
  const fail: { at: 'none' | 'stage' | 'commit'; code: 'ENOSPC' | 'EDQUOT'; freeBytes: number } = { at: 'none', code: 'ENOSPC', freeBytes: 10 * 1024 ** 3 };
  const logs = logLines();

  beforeAll(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-full-'));
    t = await buildTestApp({
      env: { STORAGE_MIN_FREE_MB: '50' },
      build: { storage: failingStore(root, fail), logger: { level: 'error', stream: logs.stream } },
    });
    await quietJobs(t.app);
    base = await listen(t.app);
  });
  afterAll(async () => {
    await t?.close();
    fs.rmSync(root, { recursive: true, force: true });
  });

  it.each([
    ['ENOSPC', 'stage'],
    ['EDQUOT', 'stage'],
    ['ENOSPC', 'commit'],
    ['EDQUOT', 'commit'],
  ] as const)('%s while %s: 507 insufficient_storage, logged at error, no blob, row, staging file or quota left', async (code, at) => {
    const org = await newOrg(t.app);
    fail.at = at;
    fail.code = code;
    const before = logs.lines.length;
    const res = await post(base, org, randomBytes(2 * 1024 * 1024));
    fail.at = 'none';
    expect(res.status).toBe(507);
    expect(res.headers.get('content-type')).toMatch(/application\/problem\+json/);
    const body = await res.json();
    expect(body).toMatchObject({ status: 507, code: 'insufficient_storage' });
    expect(JSON.stringify(body)).not.toMatch(/ENOSPC|EDQUOT|no space|quota exceeded/i);
    const logged = logs.lines.slice(before).filter((l) => l.level === 50);
    expect(logged.some((l) => l.err?.code === code)).toBe(true);

    expect(await countRows(t.app, org.tid)).toEqual({ files: 0, documents: 0 });
    expect(await usedBytes(t.app, org.tid)).toBe(0);
    expect(filesUnder(path.join(root, 'tenants', org.tid))).toEqual([]);
    expect(filesUnder(path.join(root, '.tmp'))).toEqual([]);
    // The same upload succeeds once there is room again.
    expect((await post(base, org, randomBytes(1000))).status).toBe(201);
  });

  it('/ready reports storage with less free space than STORAGE_MIN_FREE_MB, and ok again with room', async () => {
    fail.freeBytes = 10 * 1024 * 1024;
    const low = await fetch(`${base}/ready`);
    expect(low.status).toBe(503);
    expect((await low.json()).checks.storage).toMatch(/^failed: 10\.0 MB free, below STORAGE_MIN_FREE_MB=50/);
    fail.freeBytes = 100 * 1024 * 1024;
    const ok = await fetch(`${base}/ready`);
    expect(ok.status).toBe(200);
    expect((await ok.json()).checks.storage).toBe('ok');
  });
});

/** Whether this process may mount a tmpfs (root): probed once, nothing left mounted. */
function canMountTmpfs(): boolean {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-tmpfs-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir], { stdio: 'ignore' });
    execFileSync('umount', [dir], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// CI runs as root on machines that can mount: there the test runs (and fails if mounting fails).
const CAN_MOUNT = IN_CI || canMountTmpfs();
if (!CAN_MOUNT) console.warn('[tests] the real full-disk test was not run: this process cannot mount a tmpfs (needs root)');

describe.skipIf(!CAN_MOUNT)('storage full (a real 1 MB tmpfs)', () => {
  let t: TestApp;
  let base: string;
  let tmpfs: string;

  beforeAll(async () => {
    tmpfs = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-tmpfs-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', tmpfs]);
    t = await buildTestApp({ env: { UPLOAD_FOLDER: tmpfs, STORAGE_MIN_FREE_MB: '2' } });
    await quietJobs(t.app);
    base = await listen(t.app);
  });
  afterAll(async () => {
    await t?.close();
    execFileSync('umount', [tmpfs]);
    fs.rmSync(tmpfs, { recursive: true, force: true });
  });

  it('an upload larger than the free space answers 507 and leaves the disk as it was; a small one still fits', async () => {
    const org = await newOrg(t.app);
    // The storage root's own files (its deployment marker) are there before any upload.
    const before = filesUnder(tmpfs);
    for (const size of [2 * 1024 * 1024, 5 * 1024 * 1024]) {
      const res = await post(base, org, randomBytes(size));
      expect(res.status).toBe(507);
      expect((await res.json()).code).toBe('insufficient_storage');
      expect(filesUnder(tmpfs)).toEqual(before);
    }
    expect((await post(base, org, randomBytes(10_000))).status).toBe(201);
  });

  it('/ready reports the tmpfs as too full for STORAGE_MIN_FREE_MB=2', async () => {
    const res = await fetch(`${base}/ready`);
    expect(res.status).toBe(503);
    expect((await res.json()).checks.storage).toMatch(/MB free, below STORAGE_MIN_FREE_MB=2/);
  });
});
