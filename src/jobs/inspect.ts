/**
 * One streaming pass over a stored blob: byte count and SHA-256, the first
 * bytes for content sniffing, and (when asked) whether the whole content is
 * text (valid UTF-8, no NUL byte). Memory stays bounded by `headBytes`.
 */
import { createHash } from 'node:crypto';
import { fileTypeFromBuffer } from 'file-type';
import type { BlobStore } from '../storage/blob-store.js';
import type { Sniffed } from './content-type.js';

export interface BlobInspection {
  size: number;
  sha256: string;
  /** The first bytes (up to headBytes). */
  head: Buffer;
  sniffed: Sniffed | undefined;
  /** Only when textCheck was asked for. */
  isText: boolean | undefined;
}

export async function inspectBlob(
  storage: BlobStore,
  key: string,
  opts: { textCheck: boolean; headBytes?: number },
): Promise<BlobInspection> {
  const headBytes = opts.headBytes ?? 64 * 1024;
  const stream = await storage.get(key);
  const hash = createHash('sha256');
  const head: Buffer[] = [];
  let headLen = 0;
  let size = 0;
  let isText: boolean | undefined = opts.textCheck ? true : undefined;
  const decoder = opts.textCheck ? new TextDecoder('utf-8', { fatal: true }) : null;
  try {
    for await (const raw of stream) {
      const chunk = Buffer.isBuffer(raw) ? raw : Buffer.from(raw as Uint8Array);
      size += chunk.length;
      hash.update(chunk);
      if (headLen < headBytes) {
        const part = chunk.subarray(0, headBytes - headLen);
        head.push(part);
        headLen += part.length;
      }
      if (decoder && isText) {
        if (chunk.includes(0)) isText = false;
        else {
          try {
            decoder.decode(chunk, { stream: true });
          } catch {
            isText = false;
          }
        }
      }
    }
    if (decoder && isText) {
      try {
        decoder.decode();
      } catch {
        isText = false; // truncated multi-byte sequence at the end
      }
    }
  } finally {
    stream.destroy();
  }
  const headBuf = Buffer.concat(head, headLen);
  const sniffed = headLen > 0 ? await fileTypeFromBuffer(headBuf) : undefined;
  return { size, sha256: hash.digest('hex'), head: headBuf, sniffed: sniffed ? { ext: sniffed.ext, mime: sniffed.mime } : undefined, isText };
}
