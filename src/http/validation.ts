/**
 * Request validation, for every route at once:
 *
 * - JSON bodies are validated strictly (a number is not a string:
 *   `{"password": 12345678}` is a 400) and their objects reject unknown
 *   properties (a schema that does not say otherwise gets
 *   `additionalProperties: false`, in place, so the OpenAPI document says the
 *   same); querystring, params and headers keep Fastify's type coercion
 *   (`?page=2` is an integer).
 * - Before the schema: every string and object key of the input is
 *   well-formed text, i.e. no NUL (PostgreSQL text cannot hold it) and no
 *   unpaired UTF-16 surrogate (it has no UTF-8 encoding).
 * - Coerced integers are written in decimal digits (`0x10`, `1e3`, ` 5` are not
 *   integers) and every coerced number is finite: Ajv turns `Infinity` and
 *   `1e309` into numbers and then skips `minimum`/`maximum` for them.
 *
 * A failed check is reported like a schema error (400 `validation_error`, see
 * src/http/errors.ts); unknown properties as `additionalProperties` errors
 * (400 `unknown_field`).
 */
import { AjvCompiler } from '@fastify/ajv-compiler';

type ExternalSchemas = Record<string, unknown>;
interface AjvServerOption { customOptions?: Record<string, unknown>; plugins?: unknown[] }
interface RouteContext { schema: unknown; method: string; url: string; httpPart?: string }
interface InputError { instancePath: string; keyword: string; params: Record<string, unknown>; message: string }
type Validate = ((data: unknown, ctx?: unknown) => unknown) & { errors?: unknown; schemaEnv?: unknown };
type Schema = Record<string, unknown>;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;

/** JSON pointer segment of a key (RFC 6901). */
const pointer = (key: string | number) => `/${String(key).replace(/~/g, '~0').replace(/\//g, '~1')}`;

const badText = (s: string) => s.includes('\0') || !s.isWellFormed();

/** The path of the first string or key with a NUL or an unpaired surrogate; iterative, so deep input cannot overflow the stack. */
export function illFormedTextAt(data: unknown): string | null {
  if (typeof data === 'string') return badText(data) ? '' : null;
  const stack: Array<[unknown, string]> = [[data, '']];
  while (stack.length > 0) {
    const [value, path] = stack.pop() as [unknown, string];
    if (!isObject(value)) continue;
    const entries: Array<[string | number, unknown]> = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
    for (const [key, v] of entries) {
      if (typeof key === 'string' && badText(key)) return path;
      if (typeof v === 'string') {
        if (badText(v)) return path + pointer(key);
      } else if (isObject(v)) {
        stack.push([v, path + pointer(key)]);
      }
    }
  }
  return null;
}

/** The first non-finite number in coerced input (querystring, params, headers are flat: values and arrays of values). */
function nonFiniteAt(data: unknown): string | null {
  if (!isObject(data)) return null;
  for (const [key, v] of Object.entries(data)) {
    const values = Array.isArray(v) ? v : [v];
    if (values.some((x) => typeof x === 'number' && !Number.isFinite(x))) return pointer(key);
  }
  return null;
}

const DECIMAL = /^[+-]?\d+$/;

/** The first top-level integer property given as a string that is not decimal digits. */
function nonDecimalIntegerAt(intKeys: string[], data: unknown): string | null {
  if (!isObject(data)) return null;
  for (const key of intKeys) {
    const v = data[key];
    const values = Array.isArray(v) ? v : [v];
    if (values.some((x) => typeof x === 'string' && !DECIMAL.test(x))) return pointer(key);
  }
  return null;
}

function integerKeys(schema: unknown): string[] {
  const props = isObject(schema) && isObject(schema.properties) ? schema.properties : {};
  return Object.entries(props).filter(([, s]) => isObject(s) && s.type === 'integer').map(([k]) => k);
}

/** Sets `additionalProperties: false` on every object schema of a body that does not decide it. */
export function rejectUnknownProperties(schema: unknown): void {
  const stack: unknown[] = [schema];
  const seen = new Set<unknown>();
  while (stack.length > 0) {
    const s = stack.pop();
    if (!isObject(s) || seen.has(s)) continue;
    seen.add(s);
    if ((s.type === 'object' || isObject(s.properties)) && s.additionalProperties === undefined && s.patternProperties === undefined) {
      (s as Schema).additionalProperties = false;
    }
    if (isObject(s.properties)) stack.push(...Object.values(s.properties));
    for (const k of ['items', 'additionalProperties', 'not', 'if', 'then', 'else'] as const) if (isObject(s[k])) stack.push(s[k]);
    for (const k of ['anyOf', 'allOf', 'oneOf', 'prefixItems'] as const) if (Array.isArray(s[k])) stack.push(...(s[k] as unknown[]));
  }
}

function inputError(instancePath: string, message: string): InputError {
  return { instancePath, keyword: 'input', params: {}, message };
}

/** The compiled schema validator, with the input checks before it and (coerced parts) after it. */
function guard(inner: Validate, coerced: boolean, intKeys: string[]): Validate {
  const validate: Validate = (data, ctx) => {
    const bad = illFormedTextAt(data);
    if (bad !== null) {
      validate.errors = [inputError(bad, 'must not contain NUL characters or unpaired surrogates')];
      return false;
    }
    if (coerced) {
      const notDecimal = nonDecimalIntegerAt(intKeys, data);
      if (notDecimal !== null) {
        validate.errors = [inputError(notDecimal, 'must be an integer in decimal digits')];
        return false;
      }
    }
    const ok = inner(data, ctx);
    if (ok !== true) {
      validate.errors = inner.errors;
      return ok;
    }
    const infinite = coerced ? nonFiniteAt(data) : null;
    if (infinite !== null) {
      validate.errors = [inputError(infinite, 'must be a finite number')];
      return false;
    }
    validate.errors = null;
    return true;
  };
  // Fastify passes the parent object (so Ajv can coerce a root value) only to validators that have schemaEnv.
  if (inner.schemaEnv) validate.schemaEnv = inner.schemaEnv;
  return validate;
}

export function buildValidator() {
  const strictFactory = AjvCompiler();
  const coercingFactory = AjvCompiler();
  return (externalSchemas: ExternalSchemas, ajvOpts: AjvServerOption = {}) => {
    const base = { ...ajvOpts, customOptions: { ...ajvOpts.customOptions } };
    // verbose: an additionalProperties error carries its object and schema, so the answer can name every unknown field.
    const strict = strictFactory(externalSchemas as any, {
      ...base,
      customOptions: { ...base.customOptions, coerceTypes: false, removeAdditional: false, verbose: true },
    } as any);
    const coercing = coercingFactory(externalSchemas as any, base as any);
    return (ctx: RouteContext) => {
      if (ctx.httpPart === 'body') {
        rejectUnknownProperties(ctx.schema);
        return guard(strict(ctx as any) as Validate, false, []);
      }
      return guard(coercing(ctx as any) as Validate, true, integerKeys(ctx.schema));
    };
  };
}
