/** multipart/form-data bodies for upload benchmarks: every body distinct (no dedup short-circuit). */
import crypto from 'node:crypto';

export function multipartFactory(opts: { field?: string; size: number; mime?: string; ext?: string }) {
  const boundary = `----tbbench${crypto.randomBytes(12).toString('hex')}`;
  const field = opts.field ?? 'file';
  const mime = opts.mime ?? 'text/plain';
  // Printable content (a text file that any content sniffing accepts as text/plain).
  const template = Buffer.from(crypto.randomBytes(Math.ceil((opts.size * 3) / 4)).toString('base64').slice(0, opts.size), 'ascii');
  const run = crypto.randomBytes(6).toString('hex');
  let seq = 0;
  return {
    contentType: `multipart/form-data; boundary=${boundary}`,
    /** A new body: the first bytes of the file carry a unique id, so no two files hash the same. */
    next(): Buffer {
      seq += 1;
      const id = `bench-${run}-${seq}`;
      const head = Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="${field}"; filename="${id}.${opts.ext ?? 'txt'}"\r\n` +
        `Content-Type: ${mime}\r\n\r\n`,
      );
      const content = Buffer.from(template);
      content.write(`${id}\n`, 0, 'ascii');
      return Buffer.concat([head, content, Buffer.from(`\r\n--${boundary}--\r\n`)]);
    },
  };
}
