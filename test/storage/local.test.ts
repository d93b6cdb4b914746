import { createHash, randomBytes } from 'node:crypto';
import { readlinkSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BlobNotFoundError, FileTooLargeError, fileKey, type BlobStore } from '../../src/storage/blob-store.js';
import { createBlobStore } from '../../src/storage/index.js';
import { createLocalStore } from '../../src/storage/local.js';
import { collect, digest, endlessSource, failingSource, readAll, sourceOf, TENANT } from './helpers.js';

let root: string;
let store: BlobStore;

beforeEach(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'blob-local-'));
  store = createLocalStore({ root });
});

afterEach(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

async function tmpFiles(): Promise<string[]> {
  return fs.readdir(path.join(root, '.tmp')).catch(() => []);
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
}

describe('fileKey', () => {
  const sha = 'ab'.repeat(32);
  it('builds a sharded, content-addressed key', () => {
    expect(fileKey(TENANT, sha)).toBe(`tenants/${TENANT}/files/ab/ab/${sha}`);
    expect(fileKey(TENANT.toUpperCase(), sha)).toBe(fileKey(TENANT, sha));
  });
  it('rejects anything that is not a UUID and a lowercase sha256', () => {
    expect(() => fileKey('../../etc', sha)).toThrow(TypeError);
    expect(() => fileKey(`${TENANT}/..`, sha)).toThrow(TypeError);
    expect(() => fileKey(TENANT, sha.toUpperCase())).toThrow(TypeError);
    expect(() => fileKey(TENANT, sha.slice(1))).toThrow(TypeError);
    expect(() => fileKey(TENANT, `${sha.slice(2)}/.`)).toThrow(TypeError);
  });
});

describe('local blob store', () => {
  it('is chosen by createBlobStore without s3 options', async () => {
    expect((await createBlobStore({ localRoot: root, s3: null })).kind).toBe('local');
  });

  it('stages and commits with the right size and digests', async () => {
    const bytes = randomBytes(300_000);
    const staged = await store.stage(sourceOf(bytes), { maxBytes: 1_000_000 });
    expect(staged.size).toBe(bytes.length);
    expect({ sha256: staged.sha256, md5: staged.md5 }).toEqual(digest(bytes));
    expect(await tmpFiles()).toHaveLength(1);

    const key = fileKey(TENANT, staged.sha256);
    expect(await staged.commit(key)).toEqual({ stored: true });
    expect(await tmpFiles()).toEqual([]);
    expect(await store.head(key)).toEqual({ size: bytes.length });
    expect((await readAll(await store.get(key))).equals(bytes)).toBe(true);
    await expect(staged.commit(key)).rejects.toThrow(/already committed/);
  });

  it('deduplicates: a second identical commit stores nothing and leaves one file', async () => {
    const bytes = Buffer.from('same bytes, twice');
    const first = await store.stage(sourceOf(bytes), { maxBytes: 100 });
    const key = fileKey(TENANT, first.sha256);
    expect(await first.commit(key)).toEqual({ stored: true });
    const second = await store.stage(sourceOf(bytes), { maxBytes: 100 });
    expect(second.sha256).toBe(first.sha256);
    expect(await second.commit(key)).toEqual({ stored: false });
    expect(await tmpFiles()).toEqual([]);
    expect(await filesUnder(path.join(root, 'tenants'))).toHaveLength(1);
  });

  it('is durable: flushes the staged file, the new key\'s directory and every directory created for it (and only when asked)', async () => {
    const probe = await fs.open(path.join(root, 'probe'), 'w');
    const proto = Object.getPrototypeOf(probe) as { sync(): Promise<void> };
    await probe.close();
    const realRoot = await fs.realpath(root);
    const synced: string[] = [];
    const original = proto.sync;
    proto.sync = function (this: { fd: number }) {
      const target = readlinkSync(`/proc/self/fd/${this.fd}`);
      synced.push(path.relative(realRoot, target).split(path.sep).join('/').replace(/^\.tmp\/.*/, '(staged file)') || '(root)');
      return original.call(this);
    };
    const keyOf = (data: Buffer) => fileKey(TENANT, digest(data).sha256);
    const dirOf = (key: string) => path.posix.dirname(key);
    try {
      const data = randomBytes(1000);
      const key = keyOf(data);
      const staged = await store.stage(sourceOf(data), { maxBytes: 10_000 });
      expect(synced).toEqual(['(staged file)']);
      expect(await staged.commit(key)).toEqual({ stored: true });
      // A fresh root: tenants/<t>/files/xx/yy was created, so each new directory's entry in its parent is flushed too.
      const t = `tenants/${TENANT}`;
      expect(synced.slice(1)).toEqual([dirOf(key), path.posix.dirname(dirOf(key)), `${t}/files`, t, 'tenants', '(root)']);

      synced.length = 0;
      const again = await store.stage(sourceOf(data), { maxBytes: 10_000 });
      expect(await again.commit(key)).toEqual({ stored: false });
      expect(synced).toEqual(['(staged file)']); // an existing key needs no directory sync

      // Same tenant, other content: only the directories this commit created (and its own) are flushed.
      let other = randomBytes(1000);
      while (keyOf(other).slice(0, `${t}/files/xx`.length) === key.slice(0, `${t}/files/xx`.length)) other = randomBytes(1000);
      synced.length = 0;
      await (await store.stage(sourceOf(other), { maxBytes: 10_000 })).commit(keyOf(other));
      expect(synced).toEqual(['(staged file)', dirOf(keyOf(other)), path.posix.dirname(dirOf(keyOf(other))), `${t}/files`]);

      synced.length = 0;
      const scratch = createLocalStore({ root, durable: false });
      const third = randomBytes(1000);
      await (await scratch.stage(sourceOf(third), { maxBytes: 10_000 })).commit(keyOf(third));
      expect(synced).toHaveLength(0);
    } finally {
      proto.sync = original;
    }
  });

  it('purges staging files older than the cutoff, keeping fresh ones, with a dry run', async () => {
    const old = await store.stage(sourceOf(randomBytes(300)), { maxBytes: 10_000 });
    const fresh = await store.stage(sourceOf(randomBytes(200)), { maxBytes: 10_000 });
    const files = await tmpFiles();
    expect(files).toHaveLength(2);
    const hourAgo = new Date(Date.now() - 2 * 3_600_000);
    // Age one of them (the one with 300 bytes).
    const sizes = await Promise.all(files.map(async (f) => [f, (await fs.stat(path.join(root, '.tmp', f))).size] as const));
    const oldName = sizes.find(([, size]) => size === 300)![0];
    await fs.utimes(path.join(root, '.tmp', oldName), hourAgo, hourAgo);
    const cutoff = new Date(Date.now() - 3_600_000);
    expect(await store.purgeStaging(cutoff, { dryRun: true })).toEqual({ removed: [`.tmp/${oldName}`], bytes: 300 });
    expect(await tmpFiles()).toHaveLength(2);
    expect(await store.purgeStaging(cutoff)).toEqual({ removed: [`.tmp/${oldName}`], bytes: 300 });
    expect(await tmpFiles()).toEqual(files.filter((f) => f !== oldName));
    await old.discard(); // idempotent after the purge
    await fresh.discard();
    expect(await tmpFiles()).toEqual([]);
    expect(await createLocalStore({ root: path.join(root, 'nothing-here') }).purgeStaging(new Date())).toEqual({ removed: [], bytes: 0 });
  });

  it('concurrent identical commits store exactly once', async () => {
    const bytes = randomBytes(10_000);
    const staged = await Promise.all([1, 2, 3].map(() => store.stage(sourceOf(bytes), { maxBytes: 20_000 })));
    const key = fileKey(TENANT, staged[0].sha256);
    const results = await Promise.all(staged.map((s) => s.commit(key)));
    expect(results.filter((r) => r.stored)).toHaveLength(1);
    expect(await tmpFiles()).toEqual([]);
  });

  it('accepts exactly maxBytes and rejects one byte more, leaving no temp files', async () => {
    const ok = await store.stage(sourceOf(randomBytes(1000), 100), { maxBytes: 1000 });
    expect(ok.size).toBe(1000);
    await ok.discard();
    await ok.discard(); // idempotent
    expect(await tmpFiles()).toEqual([]);

    const err = await store.stage(sourceOf(randomBytes(1001), 100), { maxBytes: 1000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FileTooLargeError);
    expect((err as FileTooLargeError).limit).toBe(1000);
    expect(await tmpFiles()).toEqual([]);
  });

  it('stops reading an endless source at the limit', async () => {
    const source = endlessSource();
    await expect(store.stage(source, { maxBytes: 1024 * 1024 })).rejects.toBeInstanceOf(FileTooLargeError);
    expect(source.destroyed).toBe(true);
    expect(await tmpFiles()).toEqual([]);
  });

  it('removes temp data and rethrows when the source errors mid-way', async () => {
    const boom = new Error('client went away');
    await expect(store.stage(failingSource(200_000, boom), { maxBytes: 1_000_000 })).rejects.toBe(boom);
    expect(await tmpFiles()).toEqual([]);
  });

  it('discard removes staged bytes; commit after discard fails', async () => {
    const staged = await store.stage(sourceOf(Buffer.from('x')), { maxBytes: 10 });
    await staged.discard();
    expect(await tmpFiles()).toEqual([]);
    await expect(staged.commit(fileKey(TENANT, staged.sha256))).rejects.toThrow(/discarded/);
  });

  it('gets byte ranges (inclusive) and reports missing blobs', async () => {
    const bytes = Buffer.from('0123456789abcdefghij');
    const staged = await store.stage(sourceOf(bytes, 3), { maxBytes: 100 });
    const key = fileKey(TENANT, staged.sha256);
    await staged.commit(key);
    expect((await readAll(await store.get(key, { start: 0, end: 0 }))).toString()).toBe('0');
    expect((await readAll(await store.get(key, { start: 5, end: 9 }))).toString()).toBe('56789');
    expect((await readAll(await store.get(key, { start: 15, end: 19 }))).toString()).toBe('fghij');
    await expect(store.get(key, { start: 5, end: 4 })).rejects.toBeInstanceOf(RangeError);
    await expect(store.get(fileKey(TENANT, 'c'.repeat(64)))).rejects.toBeInstanceOf(BlobNotFoundError);
    expect(await store.head(fileKey(TENANT, 'c'.repeat(64)))).toBeNull();
    await expect(store.get('tenants')).rejects.toBeInstanceOf(BlobNotFoundError); // a directory is no blob
    expect(await store.head('tenants')).toBeNull();
  });

  it('delete is idempotent', async () => {
    const staged = await store.stage(sourceOf(Buffer.from('delete me')), { maxBytes: 100 });
    const key = fileKey(TENANT, staged.sha256);
    await staged.commit(key);
    await store.delete(key);
    expect(await store.head(key)).toBeNull();
    await store.delete(key);
    await expect(store.get(key)).rejects.toBeInstanceOf(BlobNotFoundError);
  });

  it('lists keys under a prefix, skipping temp data', async () => {
    const other = '0e0e0e0e-1111-4222-8333-444455556666';
    const keys: string[] = [];
    for (const [tenant, text] of [
      [TENANT, 'a'],
      [TENANT, 'bb'],
      [other, 'ccc'],
    ]) {
      const staged = await store.stage(sourceOf(Buffer.from(text)), { maxBytes: 10 });
      const key = fileKey(tenant, staged.sha256);
      await staged.commit(key);
      keys.push(key);
    }
    const pending = await store.stage(sourceOf(Buffer.from('not committed')), { maxBytes: 100 });

    const all = await collect(store.list(''));
    expect(all.map((o) => o.key).sort()).toEqual([...keys].sort());
    const mine = await collect(store.list(`tenants/${TENANT}/`));
    expect(mine.map((o) => o.key).sort()).toEqual(keys.slice(0, 2).sort());
    expect(mine.find((o) => o.key === keys[1])?.size).toBe(2);
    // A prefix that ends mid-name works like S3's.
    const partial = await collect(store.list(`tenants/${other.slice(0, 4)}`));
    expect(partial.map((o) => o.key)).toEqual([keys[2]]);
    expect(await collect(store.list('tenants/nobody/'))).toEqual([]);
    await pending.discard();
  });

  it('refuses keys that could leave the root or reach temp data', async () => {
    for (const key of ['../outside', 'a/../../b', '/etc/passwd', '.tmp/x', 'a//b', 'a\\b', 'a\u0000b', '']) {
      await expect(store.head(key), key).rejects.toBeInstanceOf(TypeError);
      await expect(store.delete(key), key).rejects.toBeInstanceOf(TypeError);
    }
    const staged = await store.stage(sourceOf(Buffer.from('x')), { maxBytes: 10 });
    await expect(staged.commit('../escape')).rejects.toBeInstanceOf(TypeError);
    await staged.discard();
    expect(() => store.list('../')).toThrow(TypeError);
  });

  it('ping succeeds on a usable root and presignGet returns null', async () => {
    await store.ping();
    expect(await store.presignGet('a/b', { expiresIn: 60, filename: 'a.txt', contentType: 'text/plain' })).toBeNull();
    const blocker = path.join(root, 'not-a-dir');
    await fs.writeFile(blocker, 'x');
    await expect(createLocalStore({ root: blocker }).ping()).rejects.toThrow();
  });

  it('writes every byte in order across its write blocks (odd chunk sizes, chunks straddling blocks)', async () => {
    // 2.6 blocks of 512 KB, in chunks that never line up with a block edge, plus one tiny chunk.
    const bytes = randomBytes(1_363_157);
    for (const chunkSize of [70_001, 1, 524_289]) {
      const staged = await store.stage(sourceOf(bytes.subarray(0, chunkSize === 1 ? 4099 : bytes.length), chunkSize), {
        maxBytes: bytes.length,
      });
      const expected = chunkSize === 1 ? bytes.subarray(0, 4099) : bytes;
      expect(staged.size).toBe(expected.length);
      expect({ sha256: staged.sha256, md5: staged.md5 }).toEqual(digest(expected));
      const key = fileKey(TENANT, staged.sha256);
      await staged.commit(key);
      expect((await readAll(await store.get(key))).equals(expected), `chunks of ${chunkSize}`).toBe(true);
    }
  });

  it('keeps concurrent uploads apart (write blocks are reused between uploads)', async () => {
    const inputs = Array.from({ length: 6 }, (_, i) => randomBytes(700_000 + i * 123_457));
    const staged = await Promise.all(inputs.map((b, i) => store.stage(sourceOf(b, 30_000 + i * 7_001), { maxBytes: 10_000_000 })));
    for (const [i, s] of staged.entries()) {
      const key = fileKey(TENANT, s.sha256);
      await s.commit(key);
      expect((await readAll(await store.get(key))).equals(inputs[i]), `upload ${i}`).toBe(true);
    }
  });

  it('on a slow disk, a block is refilled only after its write finished', async () => {
    const probe = await fs.open(path.join(root, 'probe'), 'w');
    const fileHandleProto = Object.getPrototypeOf(probe) as { write: (...args: unknown[]) => Promise<unknown> };
    await probe.close();
    const realWrite = fileHandleProto.write;
    // Each write starts 5 ms late, as on a busy disk: the bytes are read from the block only then.
    const spy = vi.spyOn(fileHandleProto, 'write').mockImplementation(function (this: unknown, ...args: unknown[]) {
      return new Promise((r) => setTimeout(r, 5)).then(() => realWrite.apply(this, args));
    });
    try {
      const bytes = randomBytes(3 * 1024 * 1024 + 5);
      const staged = await store.stage(sourceOf(bytes, 65_536), { maxBytes: bytes.length });
      const key = fileKey(TENANT, staged.sha256);
      await staged.commit(key);
      expect((await readAll(await store.get(key))).equals(bytes)).toBe(true);
    } finally {
      spy.mockRestore();
    }
  });

  it('a failing disk write fails the staging: the error is thrown, the source destroyed, nothing left behind', async () => {
    const probe = await fs.open(path.join(root, 'probe'), 'w');
    const fileHandleProto = Object.getPrototypeOf(probe) as { write: (...args: unknown[]) => Promise<unknown> };
    await probe.close();
    const realWrite = fileHandleProto.write;
    let writes = 0;
    const spy = vi.spyOn(fileHandleProto, 'write').mockImplementation(function (this: unknown, ...args: unknown[]) {
      if (++writes === 2) return Promise.reject(Object.assign(new Error('no space left on device'), { code: 'ENOSPC' }));
      return realWrite.apply(this, args);
    });
    try {
      const source = endlessSource();
      const err = await store.stage(source, { maxBytes: 100 * 1024 * 1024 }).catch((e: unknown) => e);
      expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC');
      expect(source.destroyed).toBe(true);
      expect(await tmpFiles()).toEqual([]);
    } finally {
      spy.mockRestore();
    }
    // The next upload is whole (the failed one's blocks went back to the pool only once its writes had settled).
    const bytes = randomBytes(1_100_000);
    const staged = await store.stage(sourceOf(bytes, 65_536), { maxBytes: bytes.length });
    const key = fileKey(TENANT, staged.sha256);
    await staged.commit(key);
    expect((await readAll(await store.get(key))).equals(bytes)).toBe(true);
  });

  it('stages a 50 MB stream in bounded memory', async () => {
    const total = 50 * 1024 * 1024;
    const chunk = randomBytes(64 * 1024);
    const expected = createHash('sha256');
    let sent = 0;
    let peakRss = process.memoryUsage.rss();
    const baseline = peakRss;
    const source = new Readable({
      read() {
        if (sent >= total) {
          this.push(null);
          return;
        }
        chunk.writeUInt32BE(sent / chunk.length, 0); // every chunk differs
        const copy = Buffer.from(chunk);
        expected.update(copy);
        sent += copy.length;
        peakRss = Math.max(peakRss, process.memoryUsage.rss());
        this.push(copy);
      },
    });
    const staged = await store.stage(source, { maxBytes: total });
    expect(staged.size).toBe(total);
    expect(staged.sha256).toBe(expected.digest('hex'));
    expect(peakRss - baseline).toBeLessThan(64 * 1024 * 1024);
    await staged.discard();
  });
});
