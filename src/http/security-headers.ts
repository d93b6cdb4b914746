/**
 * Security headers on every response: helmet's defaults with the project's
 * Content-Security-Policy. They are the same for every request, so they are
 * computed once at start-up, by the very helmet that @fastify/helmet uses, and
 * set from that list on each request. (@fastify/helmet rebuilds the helmet
 * middleware, CSP parsing included, on every request: ~3% of the server's CPU
 * on an authenticated GET in bench/http.ts.) No CSP nonces or per-route helmet
 * options are used in this project; a route that needs other headers sets them
 * with `reply.header`, which overrides these.
 */
import { createRequire } from 'node:module';
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import fp from 'fastify-plugin';

type HelmetMiddleware = (req: unknown, res: unknown, next: (err?: unknown) => void) => void;
type Helmet = (options: object) => HelmetMiddleware;

// helmet resolved from @fastify/helmet's own location: the same version, however node_modules is laid out.
const requireHere = createRequire(import.meta.url);
const helmet = createRequire(requireHere.resolve('@fastify/helmet'))('helmet') as Helmet;

/**
 * helmet's options (https://helmetjs.github.io). Not @fastify/helmet's types: importing them would
 * declare `reply.helmet()` / `reply.cspNonce`, which this plugin does not provide.
 */
export type SecurityHeadersOptions = { contentSecurityPolicy?: { directives?: Record<string, string[]>; useDefaults?: boolean } | false } & Record<string, unknown>;

/** The project's options: the Swagger UI needs inline styles/scripts from its own origin only. */
export const SECURITY_HEADERS: SecurityHeadersOptions = {
  contentSecurityPolicy: {
    directives: { defaultSrc: ["'self'"], scriptSrc: ["'self'"], styleSrc: ["'self'", "'unsafe-inline'"], imgSrc: ["'self'", 'data:'] },
  },
};

/** Run helmet once against a recording response: the headers it sets, in order (lower-case names). */
export function computeSecurityHeaders(options: SecurityHeadersOptions = SECURITY_HEADERS): Array<[string, string]> {
  const headers = new Map<string, string>();
  const res = {
    setHeader(name: string, value: unknown) {
      headers.set(name.toLowerCase(), Array.isArray(value) ? value.join(', ') : String(value));
    },
    removeHeader(name: string) {
      headers.delete(name.toLowerCase());
    },
    getHeader(name: string) {
      return headers.get(name.toLowerCase());
    },
  };
  let finished = false;
  helmet(options)({ headers: {} }, res, (err?: unknown) => {
    if (err) throw err instanceof Error ? err : new Error(String(err));
    finished = true;
  });
  if (!finished) throw new Error('helmet did not finish synchronously');
  return [...headers];
}

export const securityHeadersPlugin = fp(
  async (app: FastifyInstance, opts: SecurityHeadersOptions) => {
    const headers = computeSecurityHeaders(Object.keys(opts).length ? opts : SECURITY_HEADERS);
    // On the raw response, like @fastify/helmet: present on every answer, errors and 404s included.
    app.addHook('onRequest', (_request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) => {
      const raw = reply.raw;
      for (let i = 0; i < headers.length; i++) raw.setHeader(headers[i][0], headers[i][1]);
      done();
    });
  },
  { name: 'security-headers' },
);
