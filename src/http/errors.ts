/**
 * One error type with stable codes, rendered by one handler as RFC 9457
 * problem details: {type, title, status, detail, code, error}. Handlers throw
 * `errors.xxx(...)`; anything unexpected becomes a 500 without internals.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { STATUS_CODES } from 'node:http';
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

/** Fastify's own errors (body parsing, validation, limits) mapped to stable codes. */
function fromFastifyError(err: FastifyError): AppError | null {
  if (err.validation) {
    const first = err.validation[0];
    const where = err.validationContext ?? 'body';
    const field = first?.instancePath ? first.instancePath.replace(/^\//, '').replace(/\//g, '.') : (first?.params as any)?.missingProperty;
    const detail = field ? `${where}.${field} ${first?.message ?? 'is invalid'}` : `${where} ${first?.message ?? 'is invalid'}`;
    return new AppError(400, 'validation_error', detail, {}, {
      errors: err.validation.map((v) => ({ path: v.instancePath || (v.params as any)?.missingProperty || '', message: v.message })),
    });
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
    return new AppError(err.statusCode, err.code?.toLowerCase() ?? 'bad_request', err.message);
  }
  return null;
}

export const errorHandlerPlugin = fp(
  async (app: FastifyInstance) => {
    app.addSchema(ProblemSchema);
    app.setErrorHandler((err: FastifyError | AppError, request: FastifyRequest, reply: FastifyReply) => {
      const appErr = err instanceof AppError ? err : (fromFastifyError(err as FastifyError) ?? dependencyFailure(err));
      if (appErr) {
        if (appErr.statusCode >= 500) request.log.error({ err }, appErr.message);
        reply.headers(appErr.headers);
        return sendProblem(reply, problem(appErr.statusCode, appErr.code, appErr.message, appErr.extra));
      }
      request.log.error({ err }, 'unhandled error');
      return sendProblem(reply, problem(500, 'internal_error', 'An unexpected error occurred'));
    });
    app.setNotFoundHandler((request, reply) =>
      sendProblem(reply, problem(404, 'not_found', `No route for ${request.method} ${request.url.split('?')[0]}`)),
    );
  },
  { name: 'errors' },
);
