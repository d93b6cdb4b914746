import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import S3rver from 's3rver';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlobNotFoundError, FileTooLargeError, fileKey } from '../../src/storage/blob-store.js';
import { contentDisposition } from '../../src/storage/filename.js';
import { createBlobStore } from '../../src/storage/index.js';
import { createS3Store, type S3BlobStore, type S3StoreOptions } from '../../src/storage/s3.js';
import { collect, digest, endlessSource, failingSource, readAll, sourceOf, TENANT } from './helpers.js';

let server: S3rver;
let dir: string;
let options: S3StoreOptions;
let store: S3BlobStore;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'blob-s3rver-'));
  server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: dir });
  const { port } = await server.run();
  options = {
    endpoint: `http://127.0.0.1:${port}`,
    // Clients reach the store under another host name: presigned URLs must be signed for it.
    publicUrl: `http://localhost:${port}`,
    bucket: 'blob-test',
    region: 'us-east-1',
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    forcePathStyle: true,
  };
  store = createS3Store(options);
  await store.ensureBucket();
  await store.ensureBucket(); // idempotent
});

afterAll(async () => {
  await store?.close?.();
  await server?.close();
  await fs.rm(dir, { recursive: true, force: true });
});

async function tmpObjects(): Promise<string[]> {
  return (await collect(store.list('tmp/'))).map((o) => o.key);
}

async function put(bytes: Buffer): Promise<string> {
  const staged = await store.stage(sourceOf(bytes), { maxBytes: bytes.length });
  const key = fileKey(TENANT, staged.sha256);
  await staged.commit(key);
  return key;
}

describe('S3 blob store (s3rver)', () => {
  it('is chosen by createBlobStore when s3 options are given', async () => {
    const chosen = await createBlobStore({ s3: options, localRoot: '/nonexistent' });
    expect(chosen.kind).toBe('s3');
    await chosen.ping();
    await chosen.close?.();
  });

  it('stages to a temp object and commits with the right size and digests', async () => {
    const bytes = randomBytes(200_000);
    const staged = await store.stage(sourceOf(bytes), { maxBytes: 1_000_000 });
    expect(staged.size).toBe(bytes.length);
    expect({ sha256: staged.sha256, md5: staged.md5 }).toEqual(digest(bytes));
    expect(await tmpObjects()).toHaveLength(1);

    const key = fileKey(TENANT, staged.sha256);
    expect(await staged.commit(key)).toEqual({ stored: true });
    expect(await tmpObjects()).toEqual([]);
    expect(await store.head(key)).toEqual({ size: bytes.length });
    expect((await readAll(await store.get(key))).equals(bytes)).toBe(true);
  });

  it('streams a multipart upload (larger than one part) intact', async () => {
    const bytes = randomBytes(12 * 1024 * 1024);
    const staged = await store.stage(sourceOf(bytes, 256 * 1024), { maxBytes: bytes.length });
    expect(staged.sha256).toBe(digest(bytes).sha256);
    const key = fileKey(TENANT, staged.sha256);
    expect(await staged.commit(key)).toEqual({ stored: true });
    expect(await store.head(key)).toEqual({ size: bytes.length });
    expect(digest(await readAll(await store.get(key))).sha256).toBe(staged.sha256);
    await store.delete(key);
  });

  it('deduplicates: a second identical commit stores nothing and leaves one object', async () => {
    const bytes = Buffer.from(`dedup ${Date.now()}`);
    const first = await store.stage(sourceOf(bytes), { maxBytes: 1000 });
    const key = fileKey(TENANT, first.sha256);
    expect(await first.commit(key)).toEqual({ stored: true });
    const second = await store.stage(sourceOf(bytes), { maxBytes: 1000 });
    expect(await second.commit(key)).toEqual({ stored: false });
    expect(await tmpObjects()).toEqual([]);
    const listed = await collect(store.list(`tenants/${TENANT}/files/${first.sha256.slice(0, 2)}/`));
    expect(listed.filter((o) => o.key === key)).toEqual([{ key, size: bytes.length }]);
  });

  it('accepts exactly maxBytes, rejects one byte more and leaves no temp object', async () => {
    const ok = await store.stage(sourceOf(randomBytes(1000), 100), { maxBytes: 1000 });
    expect(ok.size).toBe(1000);
    await ok.discard();
    await ok.discard();
    expect(await tmpObjects()).toEqual([]);

    const err = await store.stage(sourceOf(randomBytes(1001), 100), { maxBytes: 1000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FileTooLargeError);
    expect((err as FileTooLargeError).limit).toBe(1000);
    expect(await tmpObjects()).toEqual([]);
  });

  it('cleans up when the limit is hit after a multipart upload has started', async () => {
    const source = endlessSource();
    await expect(store.stage(source, { maxBytes: 10 * 1024 * 1024 })).rejects.toBeInstanceOf(FileTooLargeError);
    expect(source.destroyed).toBe(true);
    expect(await tmpObjects()).toEqual([]);
  });

  it('purges staged objects left behind (crash between stage and commit) that are older than the cutoff', async () => {
    const left = await store.stage(sourceOf(randomBytes(1234), 100), { maxBytes: 10_000 }); // never committed
    expect(await tmpObjects()).toHaveLength(1);
    expect(await store.purgeStaging(new Date(Date.now() - 3_600_000))).toEqual({ removed: [], bytes: 0 }); // too recent
    const dry = await store.purgeStaging(new Date(Date.now() + 60_000), { dryRun: true });
    expect(dry.removed).toHaveLength(1);
    expect(dry.bytes).toBe(1234);
    expect(await tmpObjects()).toHaveLength(1);
    expect(await store.purgeStaging(new Date(Date.now() + 60_000))).toEqual(dry);
    expect(await tmpObjects()).toEqual([]);
    await left.discard(); // idempotent after the purge
  });

  it('removes temp data and rethrows when the source errors mid-way', async () => {
    const boom = new Error('client went away');
    await expect(store.stage(failingSource(100_000, boom), { maxBytes: 1_000_000 })).rejects.toBe(boom);
    expect(await tmpObjects()).toEqual([]);
  });

  it('gets byte ranges and reports missing objects', async () => {
    const key = await put(Buffer.from('0123456789abcdefghij'));
    expect((await readAll(await store.get(key, { start: 5, end: 9 }))).toString()).toBe('56789');
    // (bytes=0-0 is not used here: s3rver treats an end of 0 as "to the end"; real S3 does not.)
    expect((await readAll(await store.get(key, { start: 0, end: 1 }))).toString()).toBe('01');
    expect((await readAll(await store.get(key, { start: 15, end: 19 }))).toString()).toBe('fghij');
    const missing = fileKey(TENANT, 'd'.repeat(64));
    await expect(store.get(missing)).rejects.toBeInstanceOf(BlobNotFoundError);
    expect(await store.head(missing)).toBeNull();
  });

  it('delete is idempotent', async () => {
    const key = await put(Buffer.from(`delete me ${Date.now()}`));
    await store.delete(key);
    expect(await store.head(key)).toBeNull();
    await store.delete(key);
    await expect(store.get(key)).rejects.toBeInstanceOf(BlobNotFoundError);
  });

  it('lists objects under a prefix without temp objects', async () => {
    const other = '0e0e0e0e-1111-4222-8333-444455556666';
    const bytes = Buffer.from('other tenant');
    const staged = await store.stage(sourceOf(bytes), { maxBytes: 100 });
    const key = fileKey(other, staged.sha256);
    await staged.commit(key);
    const pending = await store.stage(sourceOf(Buffer.from('pending')), { maxBytes: 100 });
    expect(await collect(store.list(`tenants/${other}/`))).toEqual([{ key, size: bytes.length }]);
    const all = await collect(store.list(''));
    expect(all.some((o) => o.key === key)).toBe(true);
    expect(all.some((o) => o.key.startsWith('tmp/'))).toBe(false);
    await pending.discard();
  });

  it('presigns a GET that works without credentials, through the public host', async () => {
    const bytes = Buffer.from(`presigned ${Date.now()}`);
    const key = await put(bytes);
    const filename = 'Café report (final).txt';
    const url = await store.presignGet(key, { expiresIn: 60, filename, contentType: 'text/plain; charset=utf-8' });
    expect(url).not.toBeNull();
    expect(new URL(url!).hostname).toBe('localhost');

    const res = await fetch(url!);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-disposition')).toBe(contentDisposition(filename));
    expect(res.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(Buffer.from(await res.arrayBuffer()).equals(bytes)).toBe(true);

    await expect(
      store.presignGet(key, { expiresIn: 0, filename, contentType: 'text/plain' }),
    ).rejects.toBeInstanceOf(RangeError);
  });

  it('refuses a presigned URL once it has expired', async () => {
    const key = await put(Buffer.from(`expiring ${Date.now()}`));
    const url = await store.presignGet(key, { expiresIn: 1, filename: 'a.txt', contentType: 'text/plain' });
    await new Promise((resolve) => setTimeout(resolve, 2100));
    const res = await fetch(url!);
    expect(res.status).toBe(403);
    await res.arrayBuffer();
  });

  it('ping rejects when the bucket does not exist', async () => {
    const missing = createS3Store({ ...options, bucket: 'no-such-bucket' });
    await expect(missing.ping()).rejects.toThrow();
    await missing.close?.();
  });
});
