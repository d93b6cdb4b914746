/**
 * Several statements in one round trip on one pg connection: each is sent as
 * a named prepared statement (Parse once per connection, then Bind/Execute),
 * all followed by a single Sync. PostgreSQL runs everything before a Sync as
 * one implicit transaction, so `set_config(..., true)` in the first statement
 * scopes the ones after it and ends with them; an error skips the rest.
 * Used by TenantDatabases.read (src/db/tenant-db.ts).
 *
 * node-postgres sends one query per round trip and has no pipelining API;
 * this is a `pg.Query` whose `submit` writes the whole pipeline instead of one
 * statement. The replies are what a multi-statement query gets (one result per
 * statement) and go through pg's own Query handlers and type parsers.
 */
import crypto from 'node:crypto';
import pg from 'pg';
// pg's own parameter serialisation (the same as every other query's).
import pgUtils from 'pg/lib/utils.js';

export interface PipelineStep {
  text: string;
  values: readonly unknown[];
}

export interface PipelineClient {
  query(query: pg.Query): unknown;
}

/** Statement names this connection has parsed (known only once a pipeline succeeded). */
const parsedOn = new WeakMap<object, Set<string>>();
const names = new Map<string, string>();

function statementName(text: string): string {
  let name = names.get(text);
  if (!name) {
    name = `tb_p_${crypto.createHash('sha1').update(text).digest('hex').slice(0, 20)}`;
    if (names.size < 1000) names.set(text, name);
  }
  return name;
}

/** An error of the pipeline: the connection's prepared statements are then unknown, so it must be discarded. */
export class PipelineError extends Error {
  constructor(override readonly cause: Error & { code?: string }) {
    super(cause.message);
    this.name = 'PipelineError';
  }
  get code(): string | undefined {
    return this.cause.code;
  }
}

/**
 * Run `steps` in one round trip on `client` (a pg client checked out of a
 * pool); resolves with each step's rows. On any error, rejects with a
 * PipelineError and the caller must release the client as broken.
 */
export function runPipeline(client: PipelineClient, steps: readonly PipelineStep[]): Promise<unknown[][]> {
  // Serialised up front, so a value pg cannot send fails here rather than inside the client's queue.
  const named = steps.map((s) => ({ text: s.text, name: statementName(s.text), values: s.values.map((v) => pgUtils.prepareValue(v)) }));
  return new Promise((resolve, reject) => {
    let connection: object | null = null;
    const query = new pg.Query({ text: named[named.length - 1].text }, (err: Error | undefined, result: unknown) => {
      if (err) return reject(new PipelineError(err));
      const results = (Array.isArray(result) ? result : [result]) as pg.QueryResult[];
      if (results.length !== steps.length) return reject(new PipelineError(new Error(`pipeline returned ${results.length} results for ${steps.length} statements`)));
      if (connection) {
        let set = parsedOn.get(connection);
        if (!set) parsedOn.set(connection, (set = new Set()));
        for (const s of named) set.add(s.name);
      }
      resolve(results.map((r) => r.rows));
    });
    (query as unknown as { submit(c: pg.Connection): Error | null }).submit = (c: pg.Connection) => {
      connection = c;
      const parsed = parsedOn.get(c);
      const stream = c.stream as { cork?(): void; uncork?(): void };
      stream.cork?.();
      try {
        const inThisPipeline = new Set<string>();
        for (const s of named) {
          if (!parsed?.has(s.name) && !inThisPipeline.has(s.name)) {
            c.parse({ text: s.text, name: s.name, types: [] }, true);
            inThisPipeline.add(s.name);
          }
          c.bind({ statement: s.name, values: s.values } as pg.BindConfig, true);
          c.describe({ type: 'P', name: '' }, true);
          c.execute({ portal: '' }, true);
        }
        c.sync();
      } finally {
        stream.uncork?.();
      }
      return null;
    };
    client.query(query);
  });
}
