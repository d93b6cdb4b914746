/**
 * Render a compiled query's `$n` parameters as SQL literals, so that a query
 * can travel in one simple-protocol message together with the statement that
 * scopes it to a tenant (src/db/tenant-db.ts, `read`). Each value becomes the
 * untyped string literal of exactly the text node-postgres would have sent as
 * that parameter, so PostgreSQL infers its type from context the same way.
 *
 * Only what is certainly safe is rendered: strings, finite numbers, bigints,
 * booleans, valid dates and null. Anything else (buffers, arrays, objects),
 * a string with a NUL, or SQL this scanner does not fully understand (comments,
 * dollar quoting) throws `NotInlinable`; callers then use the ordinary
 * parameterised path. The SQL text itself comes from Kysely, never from input.
 */
export class NotInlinable extends Error {}

/** A string literal: `'...'` with quotes doubled; `E'...'` with backslashes doubled when it has any. */
export function quoteLiteral(value: string): string {
  if (value.includes('\0')) throw new NotInlinable('a string parameter contains NUL');
  const body = value.replace(/'/g, "''");
  return value.includes('\\') ? ` E'${body.replace(/\\/g, '\\\\')}'` : `'${body}'`;
}

function literal(value: unknown): string {
  if (value === null || value === undefined) return 'NULL';
  switch (typeof value) {
    case 'string':
      return quoteLiteral(value);
    case 'number':
      if (!Number.isFinite(value)) throw new NotInlinable('a number parameter is not finite');
      return quoteLiteral(String(value));
    case 'bigint':
      return quoteLiteral(value.toString());
    case 'boolean':
      return value ? "'true'" : "'false'";
    default:
      if (value instanceof Date) {
        if (Number.isNaN(value.getTime())) throw new NotInlinable('a date parameter is invalid');
        return quoteLiteral(value.toISOString());
      }
      throw new NotInlinable(`a parameter of type ${Object.prototype.toString.call(value)} is not inlined`);
  }
}

/**
 * `sql` with every `$n` outside quoted literals and identifiers replaced by
 * the literal of `parameters[n - 1]`.
 */
export function inlineParameters(sql: string, parameters: readonly unknown[]): string {
  let out = '';
  let i = 0;
  const n = sql.length;
  while (i < n) {
    const c = sql[i];
    if (c === "'" || c === '"') {
      // A quoted literal or identifier, with the quote doubled inside (standard_conforming_strings).
      let j = i + 1;
      for (;;) {
        if (j >= n) throw new NotInlinable('unterminated quote in SQL');
        if (sql[j] === c) {
          if (sql[j + 1] === c) { j += 2; continue; }
          break;
        }
        j += 1;
      }
      if (c === "'" && i > 0 && /[eE]/.test(sql[i - 1])) throw new NotInlinable('escape-string literal in SQL');
      out += sql.slice(i, j + 1);
      i = j + 1;
    } else if (c === '$') {
      const m = /^\$(\d+)/.exec(sql.slice(i, i + 12));
      if (!m) throw new NotInlinable('dollar quoting in SQL');
      const index = Number(m[1]) - 1;
      if (index < 0 || index >= parameters.length) throw new NotInlinable(`no value for $${m[1]}`);
      out += literal(parameters[index]);
      i += m[0].length;
    } else if ((c === '-' && sql[i + 1] === '-') || (c === '/' && sql[i + 1] === '*')) {
      throw new NotInlinable('comment in SQL');
    } else {
      out += c;
      i += 1;
    }
  }
  return out;
}
