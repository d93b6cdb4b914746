/**
 * Request validation: JSON bodies are validated strictly (a number is not a
 * string: `{"password": 12345678}` is a 400), while querystring, params and
 * headers keep Fastify's type coercion (`?page=2` is an integer).
 */
import { AjvCompiler } from '@fastify/ajv-compiler';

type ExternalSchemas = Record<string, unknown>;
interface AjvServerOption { customOptions?: Record<string, unknown>; plugins?: unknown[] }
interface RouteContext { schema: unknown; method: string; url: string; httpPart?: string }

export function buildValidator() {
  const strictFactory = AjvCompiler();
  const coercingFactory = AjvCompiler();
  return (externalSchemas: ExternalSchemas, ajvOpts: AjvServerOption = {}) => {
    const base = { ...ajvOpts, customOptions: { ...ajvOpts.customOptions } };
    const strict = strictFactory(externalSchemas as any, { ...base, customOptions: { ...base.customOptions, coerceTypes: false } } as any);
    const coercing = coercingFactory(externalSchemas as any, base as any);
    return (ctx: RouteContext) => (ctx.httpPart === 'body' ? strict(ctx as any) : coercing(ctx as any));
  };
}
