/**
 * A request answered before its body was read to the end (a bad token or a
 * missing CSRF header refused by an onRequest hook, an upload over the size
 * limit, an unknown tenant) keeps its connection open after the answer, and
 * the rest of the body is read and thrown away: a client still sending (Node's
 * fetch, curl) then reads the answer. Closing at once instead makes the
 * client's next write fail (EPIPE/ECONNRESET) before it sees the response.
 *
 * The discarding is bounded: once more than `maxBytes` arrived from the answer
 * on and GRACE_MS have passed (a fast client finishing a body over the bound
 * still reads the answer), the connection is closed; a client that stops
 * sending is closed by the server's keep-alive and request timeouts. An answer
 * that says `Connection: close` (a stalled upload's 408) is left to Node to close.
 */
import type { IncomingMessage } from 'node:http';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';

const GRACE_MS = 2_000;

function discardRest(req: IncomingMessage, maxBytes: number): void {
  if (req.complete || req.destroyed) return;
  const since = Date.now();
  let seen = 0;
  const onData = (chunk: Buffer) => {
    seen += chunk.length;
    if (seen > maxBytes && Date.now() - since > GRACE_MS) {
      stop();
      req.destroy(); // and its connection
    }
  };
  const stop = () => {
    req.off('data', onData);
    req.off('end', stop);
    req.off('close', stop);
  };
  // A parser that stopped midway (an upload refused after some bytes) lets go of the body first.
  req.unpipe();
  req.on('data', onData);
  req.once('end', stop);
  req.once('close', stop);
  req.resume();
}

export const unreadBodyPlugin = fp(
  async (app: FastifyInstance, opts: { maxBytes: number }) => {
    app.addHook('onSend', async (request, reply, payload) => {
      const req = request.raw;
      if (req.complete || String(reply.getHeader('connection') ?? '').toLowerCase() === 'close') return payload;
      // Started here rather than left to Node (which discards an untouched body after the answer
      // without counting it), so the bound applies.
      discardRest(req, opts.maxBytes);
      return payload;
    });
  },
  { name: 'unread-body' },
);
