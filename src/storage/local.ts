import { randomUUID } from 'node:crypto';
import { constants } from 'node:fs';
import fs, { type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import {
  assertKey,
  assertRange,
  BlobNotFoundError,
  createHashMeter,
  type BlobStore,
  type StagedBlob,
} from './blob-store.js';

const TMP_DIR = '.tmp';

function errorCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

async function removeQuietly(file: string): Promise<void> {
  await fs.rm(file, { force: true });
}

/** Make a directory's entries (a new link) durable. */
async function syncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Staged bytes are written in blocks of this size, from two buffers per upload that take turns. */
const BLOCK_BYTES = 512 * 1024;
/** Idle write buffers kept for the next uploads (4 MB at most). */
const SPARE_BLOCKS = 8;
const spareBlocks: Buffer[] = [];

function takeBlock(): Buffer {
  return spareBlocks.pop() ?? Buffer.allocUnsafeSlow(BLOCK_BYTES);
}

function returnBlock(block: Buffer): void {
  if (spareBlocks.length < SPARE_BLOCKS) spareBlocks.push(block);
}

async function writeFully(handle: FileHandle, block: Buffer, length: number): Promise<void> {
  for (let done = 0; done < length; ) {
    const { bytesWritten } = await handle.write(block, done, length - done, null);
    done += bytesWritten;
  }
}

/**
 * Copy `source` into `handle` through two reusable blocks: one fills while the
 * other is being written, so the disk write of one block overlaps the receipt
 * of the next. Every chunk goes to `onChunk` (hash, size limit) before it is
 * copied. Nothing is allocated per chunk, so the memory an upload holds is the
 * two blocks, and the writes are few and large. If `onChunk`, a write or the
 * source fails, the source is destroyed (the loop leaves it) and the error is thrown.
 */
async function copyInBlocks(source: AsyncIterable<Buffer>, handle: FileHandle, onChunk: (chunk: Buffer) => void): Promise<void> {
  const blocks = [takeBlock(), takeBlock()];
  let current = 0;
  let filled = 0;
  // The write in flight settles to its error (or null), so a failure is never left unhandled while the loop waits on the source.
  let writing: Promise<unknown> | null = null;
  const settle = async () => {
    const failure = await writing;
    writing = null;
    if (failure) throw failure;
  };
  const flush = async () => {
    await settle();
    writing = writeFully(handle, blocks[current], filled).then(() => null, (err: unknown) => err ?? new Error('write failed'));
    current ^= 1;
    filled = 0;
  };
  try {
    for await (const chunk of source) {
      onChunk(chunk);
      for (let offset = 0; offset < chunk.length; ) {
        const n = chunk.copy(blocks[current], filled, offset);
        filled += n;
        offset += n;
        if (filled === BLOCK_BYTES) await flush();
      }
    }
    if (filled > 0) await flush();
    await settle();
  } finally {
    await writing; // settles to a value, never rejects
    blocks.forEach(returnBlock);
  }
}

/**
 * Blob store on the local filesystem: `${root}/<key>`, staging in `${root}/.tmp`.
 * Durable like the database row that points at a blob: the staged file is
 * flushed to disk before it is closed, and a new key's directory entry (with the
 * entries of any directories created for it) before commit() returns, so a row
 * committed after commit() never outlives its bytes in a power loss
 * (`durable: false` skips both, for tests and scratch data).
 */
export function createLocalStore(opts: { root: string; durable?: boolean }): BlobStore {
  const durable = opts.durable ?? true;
  const root = path.resolve(opts.root);
  const tmpDir = path.join(root, TMP_DIR);

  /** The staging directory is created by the first upload (and again if something removed it), not by every one. */
  let tmpDirReady: Promise<unknown> | null = null;
  async function openStagingFile(file: string): Promise<FileHandle> {
    tmpDirReady ??= fs.mkdir(tmpDir, { recursive: true }).catch((err: unknown) => {
      tmpDirReady = null;
      throw err;
    });
    await tmpDirReady;
    try {
      return await fs.open(file, 'wx');
    } catch (err) {
      if (errorCode(err) !== 'ENOENT') throw err;
      await fs.mkdir(tmpDir, { recursive: true });
      return fs.open(file, 'wx');
    }
  }

  /** Absolute path of a key; it always stays inside root and never reaches the staging directory. */
  function keyPath(key: string): string {
    assertKey(key);
    const full = path.resolve(root, ...key.split('/'));
    if (!full.startsWith(root + path.sep) || full === tmpDir || full.startsWith(tmpDir + path.sep)) {
      throw new TypeError('invalid storage key');
    }
    return full;
  }

  /**
   * Link the staged file at `target` unless something is there already. Returns
   * whether it was stored, and the directories to flush for that: the target's
   * own, and the parent of every directory this call had to create (each new
   * directory is an entry in its parent).
   */
  async function commitFile(tmp: string, target: string): Promise<{ stored: boolean; dirsToSync: string[] }> {
    const dir = path.dirname(target);
    const firstCreated = await fs.mkdir(dir, { recursive: true });
    const dirsToSync = [dir];
    if (firstCreated) {
      for (let d = dir; d.length > root.length; d = path.dirname(d)) {
        dirsToSync.push(path.dirname(d));
        if (d === firstCreated) break;
      }
    }
    try {
      // link() is an atomic "create unless it exists", so concurrent identical
      // commits cannot both report stored:true.
      await fs.link(tmp, target);
    } catch (err) {
      const code = errorCode(err);
      if (code === 'EEXIST') return { stored: false, dirsToSync };
      if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw err;
      // Filesystem without hard links: check, then rename.
      if (await exists(target)) return { stored: false, dirsToSync };
      await fs.rename(tmp, target);
    }
    return { stored: true, dirsToSync };
  }

  async function exists(file: string): Promise<boolean> {
    try {
      await fs.stat(file);
      return true;
    } catch (err) {
      if (errorCode(err) === 'ENOENT') return false;
      throw err;
    }
  }

  async function* walk(dir: string, dirKey: string, prefix: string): AsyncGenerator<{ key: string; size: number }> {
    let entries;
    try {
      entries = await fs.readdir(dir, { withFileTypes: true });
    } catch (err) {
      const code = errorCode(err);
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw err;
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      if (dirKey === '' && entry.name === TMP_DIR) continue;
      const key = dirKey === '' ? entry.name : `${dirKey}/${entry.name}`;
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        if (`${key}/`.startsWith(prefix) || prefix.startsWith(`${key}/`)) yield* walk(full, key, prefix);
      } else if (entry.isFile() && key.startsWith(prefix)) {
        try {
          const st = await fs.stat(full);
          yield { key, size: st.size };
        } catch (err) {
          if (errorCode(err) !== 'ENOENT') throw err; // deleted while listing
        }
      }
      // Symlinks and other special files are never listed.
    }
  }

  return {
    kind: 'local',

    async stage(source, { maxBytes }): Promise<StagedBlob> {
      const meter = createHashMeter(maxBytes);
      const tmp = path.join(tmpDir, randomUUID());
      // Open (create) the temp file before reading the source, so a failing source never leaves one behind.
      const handle = await openStagingFile(tmp);
      try {
        await copyInBlocks(source as AsyncIterable<Buffer>, handle, meter.update);
        if (durable) await handle.sync();
        await handle.close();
      } catch (err) {
        await handle.close().catch(() => {});
        await removeQuietly(tmp);
        throw err;
      }
      const { size, sha256, md5 } = meter.digest();
      let state: 'staged' | 'committed' | 'discarded' = 'staged';
      return {
        size,
        sha256,
        md5,
        async commit(key) {
          if (state !== 'staged') throw new Error(`staged blob already ${state}`);
          const target = keyPath(key);
          const { stored, dirsToSync } = await commitFile(tmp, target);
          if (stored && durable) for (const dir of dirsToSync) await syncDir(dir);
          state = 'committed';
          await removeQuietly(tmp);
          return { stored };
        },
        async discard() {
          if (state !== 'staged') return;
          state = 'discarded';
          await removeQuietly(tmp);
        },
      };
    },

    async purgeStaging(olderThan, { dryRun = false } = {}) {
      const removed: string[] = [];
      let bytes = 0;
      let names: string[];
      try {
        names = await fs.readdir(tmpDir);
      } catch (err) {
        if (errorCode(err) === 'ENOENT') return { removed, bytes };
        throw err;
      }
      for (const name of names.sort()) {
        const file = path.join(tmpDir, name);
        try {
          const st = await fs.lstat(file);
          if (!st.isFile() || st.mtime >= olderThan) continue;
          if (!dryRun) await fs.rm(file, { force: true });
          removed.push(`${TMP_DIR}/${name}`);
          bytes += st.size;
        } catch (err) {
          if (errorCode(err) !== 'ENOENT') throw err; // committed or discarded meanwhile
        }
      }
      return { removed, bytes };
    },

    async head(key) {
      try {
        const st = await fs.stat(keyPath(key));
        return st.isFile() ? { size: st.size } : null;
      } catch (err) {
        if (errorCode(err) === 'ENOENT' || errorCode(err) === 'ENOTDIR') return null;
        throw err;
      }
    },

    async get(key, range): Promise<Readable> {
      const file = keyPath(key);
      if (range) assertRange(range);
      let handle;
      try {
        handle = await fs.open(file, constants.O_RDONLY);
      } catch (err) {
        if (errorCode(err) === 'ENOENT' || errorCode(err) === 'ENOTDIR') throw new BlobNotFoundError(key);
        throw err;
      }
      if (!(await handle.stat()).isFile()) {
        await handle.close();
        throw new BlobNotFoundError(key);
      }
      // The stream owns the handle and closes it when done or destroyed.
      return handle.createReadStream(range ? { start: range.start, end: range.end } : {});
    },

    async delete(key) {
      await removeQuietly(keyPath(key));
    },

    list(prefix) {
      // eslint-disable-next-line no-control-regex
      if (typeof prefix !== 'string' || /[\u0000\\]/.test(prefix) || prefix.startsWith('/')) {
        throw new TypeError('invalid storage prefix');
      }
      const slash = prefix.lastIndexOf('/');
      const dirKey = slash >= 0 ? prefix.slice(0, slash) : '';
      const dir = dirKey === '' ? root : keyPath(dirKey);
      return walk(dir, dirKey, prefix);
    },

    async presignGet() {
      return null;
    },

    async ping() {
      await fs.mkdir(tmpDir, { recursive: true });
      await fs.access(tmpDir, constants.R_OK | constants.W_OK);
    },

    async freeBytes() {
      const st = await fs.statfs(root);
      return st.bavail * st.bsize;
    },
  };
}
