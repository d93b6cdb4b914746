/** Helpers of the fault tests: timing, and a real listening server for raw-socket clients. */
import net from 'node:net';
import { performance } from 'node:perf_hooks';

export async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const start = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - start };
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * A client on a bare TCP socket: `write` sends bytes as given (a body may stop
 * anywhere); `response` resolves with the first complete HTTP response and
 * `responses(n)` with the first n (keep-alive), or they reject when the
 * connection closes first; `closed` resolves when the connection is closed.
 */
export function rawClient(port: number): {
  write(data: string | Buffer): void;
  response: Promise<RawResponse>;
  responses(n: number): Promise<RawResponse[]>;
  closed: Promise<void>;
  destroy(): void;
} {
  const socket = net.connect({ host: '127.0.0.1', port });
  let buf = Buffer.alloc(0);
  const got: RawResponse[] = [];
  let isClosed = false;
  const waiters: Array<() => void> = [];
  const wake = () => { for (const w of [...waiters]) w(); };
  const parse = () => {
    for (;;) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const [statusLine, ...lines] = buf.subarray(0, end).toString('latin1').split('\r\n');
      const headers: Record<string, string> = {};
      for (const l of lines) {
        const i = l.indexOf(':');
        headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      const length = Number(headers['content-length'] ?? 0);
      if (buf.length < end + 4 + length) return;
      got.push({ status: Number(statusLine.split(' ')[1]), headers, body: buf.subarray(end + 4, end + 4 + length).toString() });
      buf = buf.subarray(end + 4 + length);
    }
  };
  socket.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    parse();
    wake();
  });
  const closed = new Promise<void>((resolve) => socket.once('close', () => {
    isClosed = true;
    wake();
    resolve();
  }));
  socket.on('error', () => undefined);
  const responses = (n: number) => new Promise<RawResponse[]>((resolve, reject) => {
    const check = () => {
      if (got.length >= n) {
        waiters.splice(waiters.indexOf(check), 1);
        resolve(got.slice(0, n));
      } else if (isClosed) {
        waiters.splice(waiters.indexOf(check), 1);
        reject(new Error(`connection closed after ${got.length} of ${n} responses: ${buf.toString('latin1').slice(0, 200)}`));
      }
    };
    waiters.push(check);
    check();
  });
  const response = responses(1).then(([r]) => r);
  response.catch(() => undefined);
  return { write: (data) => socket.write(data), response, responses, closed, destroy: () => socket.destroy() };
}
