/**
 * A query built and compiled by Kysely once, then run with new values.
 * Building and compiling a query costs ~60-80 µs of CPU per call on the
 * request hot path (bench/http.ts profile of the document GET); a template
 * pays it once. The builder gets placeholder strings for its arguments and
 * must use them only as values (parameters): if one ends up in the SQL text,
 * or is not used at all, the template refuses to be made. All databases here
 * use Kysely's PostgreSQL dialect, so one compiled text serves every handle.
 */
import type { Compilable, CompiledQuery, Kysely } from 'kysely';

type Slot = { arg: number } | { constant: unknown };

export function queryTemplate<DB, A extends string[], R>(
  build: (db: Kysely<DB>, ...args: A) => Compilable<R>,
): (db: Kysely<DB>, ...args: A) => Compilable<R> {
  let made: { query: CompiledQuery<R>; slots: Slot[] } | null = null;

  function make(db: Kysely<DB>, arity: number) {
    const placeholders = Array.from({ length: arity }, (_, i) => `\u0000tb-template-arg-${i}\u0000`);
    const query = build(db, ...(placeholders as A)).compile();
    if (query.sql.includes('\u0000')) throw new Error('queryTemplate: an argument was used in the SQL text, not as a value');
    const slots: Slot[] = query.parameters.map((p) => {
      const i = placeholders.indexOf(p as string);
      return i >= 0 ? { arg: i } : { constant: p };
    });
    for (let i = 0; i < arity; i++) {
      if (!slots.some((s) => 'arg' in s && s.arg === i)) throw new Error(`queryTemplate: argument ${i} is not used as a value`);
    }
    return { query, slots };
  }

  return (db, ...args) => {
    made ??= make(db, args.length);
    const { query, slots } = made;
    const parameters = slots.map((s) => ('arg' in s ? args[s.arg] : s.constant));
    return { compile: () => ({ ...query, parameters }) };
  };
}
