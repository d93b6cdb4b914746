/**
 * A pg-Pool-shaped adapter over one in-process PGlite database, for Kysely's
 * PostgresDialect. PGlite is a single connection, so transactions are
 * serialised: a client that opens a transaction (BEGIN) holds an exclusive
 * lock until COMMIT/ROLLBACK, and every query outside a transaction waits for
 * that lock, so no statement of another request ever runs inside someone
 * else's transaction.
 *
 * Consequence worth knowing: code that, inside a transaction, runs a query on
 * the outer `db` instead of the transaction object would wait for itself. The
 * lock wait is bounded and fails with an error that says so.
 */
import type { PGlite } from '@electric-sql/pglite';

const LOCK_TIMEOUT_MS = 30_000;

class Lock {
  private held = false;
  private waiters: Array<() => void> = [];

  async acquire(): Promise<void> {
    if (!this.held) {
      this.held = true;
      return;
    }
    await new Promise<void>((resolve, reject) => {
      const grant = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== grant);
        reject(
          new Error(
            'PGlite lock wait timed out: a transaction is open for too long, or code inside a transaction ' +
              'queried the outer database handle instead of the transaction',
          ),
        );
      }, LOCK_TIMEOUT_MS);
      this.waiters.push(grant);
    });
  }

  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.held = false;
  }
}

const TX_START = /^\s*(begin|start\s+transaction)\b/i;
const TX_END = /^\s*(commit|rollback|end|abort)\b(?!\s+to\b)/i;

export interface PgliteQueryResult {
  command: string;
  rowCount: number;
  rows: unknown[];
}

export function createPglitePool(pg: PGlite) {
  const lock = new Lock();

  async function run(text: string, params: readonly unknown[]): Promise<PgliteQueryResult> {
    if (params.length === 0) {
      // Simple protocol: allows several statements (migrations); the last result counts.
      const results = await pg.exec(text);
      const last = results[results.length - 1] ?? { rows: [], affectedRows: 0 };
      return { command: resultCommand(last, text), rowCount: last.affectedRows ?? last.rows.length, rows: last.rows };
    }
    const r = await pg.query(text, params as unknown[]);
    return { command: resultCommand(r, text), rowCount: r.affectedRows ?? r.rows.length, rows: r.rows };
  }

  function makeClient() {
    let inTx = false;
    return {
      async query(text: string, params: readonly unknown[] = []): Promise<PgliteQueryResult> {
        if (!inTx && TX_START.test(text)) {
          await lock.acquire();
          inTx = true;
          try {
            return await run(text, params);
          } catch (err) {
            inTx = false;
            lock.release();
            throw err;
          }
        }
        if (inTx) {
          try {
            return await run(text, params);
          } finally {
            if (TX_END.test(text)) {
              inTx = false;
              lock.release();
            }
          }
        }
        await lock.acquire();
        try {
          return await run(text, params);
        } finally {
          lock.release();
        }
      },
      release(): void {
        if (inTx) {
          // A client given back mid-transaction: roll it back so the lock is not lost.
          inTx = false;
          pg.exec('rollback').finally(() => lock.release());
        }
      },
    };
  }

  return {
    async connect() {
      return makeClient();
    },
    async end() {
      if (!pg.closed) await pg.close();
    },
    pglite: pg,
  };
}

/** PGlite reports the command tag (INSERT, UPDATE...) like pg does; Kysely needs it for affected-row counts. */
function resultCommand(result: object, text: string): string {
  const tag = (result as { command?: string }).command;
  return tag ?? (/^\s*([a-z]+)/i.exec(text)?.[1] ?? '').toUpperCase();
}
