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
      const appErr = err instanceof AppError ? err : fromFastifyError(err as FastifyError);
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
