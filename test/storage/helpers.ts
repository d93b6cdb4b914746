import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';

export const TENANT = '6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f';

export function digest(buf: Buffer): { sha256: string; md5: string } {
  return {
    sha256: createHash('sha256').update(buf).digest('hex'),
    md5: createHash('md5').update(buf).digest('hex'),
  };
}

/** A readable that yields `buf` in chunks of `chunkSize`. */
export function sourceOf(buf: Buffer, chunkSize = 16 * 1024): Readable {
  const chunks: Buffer[] = [];
  for (let i = 0; i < buf.length; i += chunkSize) chunks.push(buf.subarray(i, i + chunkSize));
  return Readable.from(chunks, { objectMode: false });
}

/** A readable that sends `bytesBeforeError` bytes, then errors (like an aborted upload). */
export function failingSource(bytesBeforeError: number, error = new Error('client went away')): Readable {
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= bytesBeforeError) {
        this.destroy(error);
        return;
      }
      const n = Math.min(4096, bytesBeforeError - sent);
      sent += n;
      this.push(Buffer.alloc(n, 7));
    },
  });
}

/** An endless readable (never ends by itself). */
export function endlessSource(): Readable {
  const chunk = Buffer.alloc(64 * 1024, 1);
  return new Readable({
    read() {
      this.push(chunk);
    },
  });
}

export async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(chunks);
}

export async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}
