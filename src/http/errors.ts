/**
 * One error type with stable codes, rendered by one handler as RFC 9457
 * problem details: {type, title, status, detail, code, error}. Handlers throw
 * `errors.xxx(...)`; anything unexpected becomes a 500 without internals.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { ProblemSchema } from './schemas.js';

export class AppError extends Error {
  constructor(
    public readonly statusCode: number,
    public readonly code: string,
    message: string,
    public readonly headers: Record<string, string> = {},
    public readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'AppError';
  }
}

const make = (status: number, defaultCode: string, defaultMessage: string) =>
  (message: string = defaultMessage, code: string = defaultCode, extra?: Record<string, unknown>) =>
    new AppError(status, code, message, {}, extra);

export const errors = {
  badRequest: make(400, 'bad_request', 'Bad request'),
  validation: make(400, 'validation_error', 'The request is not valid'),
  unauthorized: make(401, 'unauthorized', 'Authentication required'),
  forbidden: make(403, 'forbidden', 'You do not have permission to do this'),
  notFound: make(404, 'not_found', 'Not found'),
  conflict: make(409, 'conflict', 'Conflict'),
  payloadTooLarge: make(413, 'payload_too_large', 'The request body is too large'),
  unsupportedMediaType: make(415, 'unsupported_media_type', 'Unsupported media type'),
  unprocessable: make(422, 'unprocessable', 'The request cannot be processed'),
  tooManyRequests: (retryAfterSec: number, message = 'Too many requests, try again later') =>
    new AppError(429, 'rate_limited', message, { 'retry-after': String(Math.max(1, Math.ceil(retryAfterSec))) }),
  unavailable: make(503, 'unavailable', 'Service unavailable'),
};

/** Seconds a client is asked to wait (Retry-After) when a dependency is down. */
export const RETRY_AFTER_SEC = 5;

type Dependency = 'database' | 'redis';
const DEPENDENCY = Symbol('dependency');
type ErrorLike = { code?: unknown; name?: unknown; message?: unknown; cause?: unknown; errors?: unknown; [DEPENDENCY]?: Dependency };

/**
 * Record that `err` is a failure to reach `dependency` (a pool marks the errors of its connection
 * attempts, which are plain socket errors such as ECONNREFUSED). Returns `err`.
 */
export function markDependency<T>(err: T, dependency: Dependency): T {
  if (err && typeof err === 'object') {
    Object.defineProperty(err, DEPENDENCY, { value: dependency, enumerable: false, configurable: true });
  }
  return err;
}

/** The error and what it wraps (`cause`, AggregateError's `errors`), a few levels deep. */
function* errorChain(err: unknown, depth = 0): Generator<ErrorLike> {
  if (!err || typeof err !== 'object' || depth > 4) return;
  const e = err as ErrorLike;
  yield e;
  yield* errorChain(e.cause, depth + 1);
  if (Array.isArray(e.errors)) for (const inner of e.errors) yield* errorChain(inner, depth + 1);
}

/** Socket-level failures to reach a server (Node's errno codes). */
const NETWORK_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE',
]);
/**
 * PostgreSQL SQLSTATEs of a lost or refused connection: class 08 (connection exception), admin/crash
 * shutdown and "starting up" (57P01-57P03), idle-session and idle-in-transaction timeouts (57P05,
 * 25P03), too many connections (53300).
 */
const PG_CONNECTION_STATES = new Set(['57P01', '57P02', '57P03', '57P05', '25P03', '53300']);
/** node-postgres and the tenant pools (src/tenants/pool.ts) report these without a code. */
const PG_CONNECTION_MESSAGES = [
  /^Connection terminated/, // "... unexpectedly", "... due to connection timeout"
  /is not queryable/, // a client whose connection failed, used again (the rest of a transaction)
  /^timeout exceeded when trying to connect/, // pg-pool: no connection within connectionTimeoutMillis
  /waiting for a tenant database connection/,
];
/** ioredis: a command while disconnected (no offline queue), flushed at a reconnect, or unanswered. */
const REDIS_MESSAGES = [/^Connection is closed/, /^Stream isn't writeable/, /^Command timed out/];

/**
 * Which dependency a failure to reach it comes from, or null when `err` is
 * something else (a bug, bad data). Used by the error handler (503) and by
 * code that has a fallback while a dependency is away (the login limiter).
 */
export function connectionFailure(err: unknown): Dependency | 'network' | null {
  let network = false;
  let marked: Dependency | undefined;
  for (const e of errorChain(err)) {
    marked ??= e[DEPENDENCY];
    const code = typeof e.code === 'string' ? e.code : '';
    const message = typeof e.message === 'string' ? e.message : '';
    if (e.name === 'MaxRetriesPerRequestError' || REDIS_MESSAGES.some((re) => re.test(message))) return 'redis';
    if (/^08[0-9A-Z]{3}$/.test(code) || PG_CONNECTION_STATES.has(code)) return 'database';
    if (PG_CONNECTION_MESSAGES.some((re) => re.test(message))) return 'database';
    if (NETWORK_CODES.has(code)) {
      if (marked) return marked;
      network = true;
    }
  }
  // A socket error nobody marked: some server (S3, ...) could not be reached.
  return network ? 'network' : null;
}

/** A full disk or an exhausted quota of the storage (ENOSPC, EDQUOT). */
export function isStorageFull(err: unknown): boolean {
  for (const e of errorChain(err)) if (e.code === 'ENOSPC' || e.code === 'EDQUOT') return true;
  return false;
}

/**
 * Failures of a dependency rather than of the request: a database or Redis
 * that cannot be reached answers 503 with Retry-After (`database_unavailable`,
 * `service_unavailable`), full storage 507 `insufficient_storage`. Null for
 * anything else.
 */
export function dependencyFailure(err: unknown): AppError | null {
  const retry = { 'retry-after': String(RETRY_AFTER_SEC) };
  if (isStorageFull(err)) {
    return new AppError(507, 'insufficient_storage', 'The storage is full; try again later', retry);
  }
  switch (connectionFailure(err)) {
    case 'database':
      return new AppError(503, 'database_unavailable', 'The database is unavailable; try again shortly', retry);
    case 'redis':
    case 'network':
      return new AppError(503, 'service_unavailable', 'A service this request needs is unavailable; try again shortly', retry);
  }
  return null;
}

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  error: string;
  [k: string]: unknown;
}

export function problem(status: number, code: string, detail: string, extra: Record<string, unknown> = {}): Problem {
  return {
    type: `https://httpstatuses.io/${status}`,
    title: STATUS_CODES[status] ?? 'Error',
    status,
    detail,
    code,
    error: detail,
    ...extra,
  };
}

export function sendProblem(reply: FastifyReply, p: Problem): FastifyReply {
  return reply.status(p.status).type('application/problem+json').send(p);
}

/** `/a/b` (a JSON pointer) as `.a.b`. */
const dotted = (instancePath: string) => instancePath.replace(/\//g, '.');

/** Every property of the object an `additionalProperties` error is about that its schema does not know (Ajv `verbose` gives both). */
function unknownFields(e: { params?: Record<string, any>; data?: unknown; parentSchema?: any }): string[] {
  const known = e.parentSchema?.properties;
  if (known && e.data && typeof e.data === 'object') {
    const extra = Object.keys(e.data).filter((k) => !Object.hasOwn(known, k));
    if (extra.length > 0) return extra;
  }
  return [String(e.params?.additionalProperty)];
}

/** A Fastify error code as a stable snake_case code: `FST_ERR_CTP_BAD_THING` -> `ctp_bad_thing`. */
const snakeCode = (code: string | undefined) =>
  code ? code.replace(/^FST_(ERR_)?/, '').replace(/[^A-Za-z0-9]+/g, '_').toLowerCase() : 'bad_request';

/** Fastify's own errors (body parsing, validation, limits) mapped to stable codes. */
function fromFastifyError(err: FastifyError): AppError | null {
  if (err.validation) {
    const where = err.validationContext ?? 'body';
    const errors = err.validation.map((v) => ({ path: v.instancePath || (v.params as any)?.missingProperty || '', message: v.message }));
    const first = err.validation[0];
    if (first?.keyword === 'additionalProperties') {
      const fields = unknownFields(first);
      const at = first.instancePath ? `${where}${dotted(first.instancePath)}` : where;
      return new AppError(400, 'unknown_field', `${at} has unknown field${fields.length > 1 ? 's' : ''}: ${fields.join(', ')}`, {}, { fields, errors });
    }
    const field = first?.instancePath ? dotted(first.instancePath) : (first?.params as any)?.missingProperty ? `.${(first?.params as any).missingProperty}` : '';
    return new AppError(400, 'validation_error', `${where}${field} ${first?.message ?? 'is invalid'}`, {}, { errors });
  }
  switch (err.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new AppError(400, 'invalid_json', 'The request body is not valid JSON');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new AppError(413, 'payload_too_large', 'The request body is too large');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new AppError(415, 'unsupported_media_type', 'Unsupported content type');
    case 'FST_INVALID_MULTIPART_CONTENT_TYPE':
      return new AppError(415, 'unsupported_media_type', 'The request must be multipart/form-data');
    case 'FST_REQ_FILE_TOO_LARGE':
      return new AppError(413, 'file_too_large', 'The file is larger than the allowed maximum');
    case 'FST_PARTS_LIMIT':
    case 'FST_FILES_LIMIT':
    case 'FST_FIELDS_LIMIT':
      return new AppError(400, 'too_many_parts', 'The multipart body has too many parts');
    case 'FST_PROTO_VIOLATION':
      return new AppError(400, 'bad_request', 'Malformed request body');
  }
  if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
    return new AppError(err.statusCode, snakeCode(err.code), err.message);
  }
  return null;
}

/**
 * PostgreSQL's data exceptions (SQLSTATE class 22: invalid text encoding 22021,
 * untranslatable character 22P05, invalid input syntax 22P02, numeric out of
 * range 22003, bad datetime 22007, ...) are caused by a value from the request
 * that validation let through: 400, never 500.
 */
export function fromDatabaseDataError(err: unknown): AppError | null {
  for (const e of [err, (err as { cause?: unknown } | null)?.cause]) {
    const code = (e as { code?: unknown; severity?: unknown } | null)?.code;
    if (typeof code === 'string' && /^22[0-9A-Z]{3}$/.test(code) && (e as { severity?: unknown }).severity !== undefined) {
      return new AppError(400, 'invalid_value', 'The request contains a value that cannot be stored');
    }
  }
  return null;
}

/**
 * Errors the router answers before a route runs (Fastify's `frameworkErrors`):
 * a path that is not valid percent-encoding, a path parameter over maxParamLength.
 */
export function frameworkErrors(err: FastifyError, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  switch (err.code) {
    case 'FST_ERR_BAD_URL':
      return sendProblem(reply, problem(400, 'bad_url', 'The request path is not valid percent-encoded UTF-8'));
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return sendProblem(reply, problem(414, 'path_parameter_too_long', 'A path segment of the request is too long'));
  }
  request.log.error({ err }, 'router error');
  return sendProblem(reply, problem(500, 'internal_error', 'An unexpected error occurred'));
}

/**
 * Requests Node's HTTP parser refuses before Fastify sees them (headers over
 * the size limit, malformed HTTP, a request timeout): the server's
 * `clientError` handler answers them as problem+json too, then closes.
 */
export function clientErrorHandler(this: FastifyInstance, err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, code, detail] =
    err.code === 'HPE_HEADER_OVERFLOW' ? [431, 'headers_too_large', 'The request headers are too large'] as const
    : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'request_timeout', 'The request was not received in time'] as const
    : [400, 'bad_request', 'Malformed HTTP request'] as const;
  this.log.debug({ err }, 'client error');
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const body = JSON.stringify(problem(status, code, detail));
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/problem+json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

export const errorHandlerPlugin = fp(
  async (app: FastifyInstance) => {
    app.addSchema(ProblemSchema);
    app.setErrorHandler((err: FastifyError | AppError, request: FastifyRequest, reply: FastifyReply) => {
      const appErr = err instanceof AppError ? err : (fromFastifyError(err as FastifyError) ?? fromDatabaseDataError(err) ?? dependencyFailure(err));
      if (appErr) {
        if (appErr.statusCode >= 500) request.log.error({ err }, appErr.message);
        else if (!(err instanceof AppError) && appErr.code === 'invalid_value') request.log.warn({ err }, 'a request value reached the database unvalidated');
        reply.headers(appErr.headers);
        return sendProblem(reply, problem(appErr.statusCode, appErr.code, appErr.message, appErr.extra));
      }
      request.log.error({ err }, 'unhandled error');
      return sendProblem(reply, problem(500, 'internal_error', 'An unexpected error occurred'));
    });
    // Fastify's own answer while closing (return503OnClosing) is not problem+json: this one is.
    let closing = false;
    app.addHook('preClose', async () => {
      closing = true;
    });
    app.addHook('onRequest', (_request, reply, done) => {
      if (!closing) return done();
      reply.header('connection', 'close');
      done(new AppError(503, 'shutting_down', 'The server is shutting down, try again', { 'retry-after': '1' }));
    });
    app.setNotFoundHandler((request, reply) =>
      sendProblem(reply, problem(404, 'not_found', `No route for ${request.method} ${request.url.split('?')[0]}`)),
    );
  },
  { name: 'errors' },
);
