/**
 * Connections to dedicated tenant databases: one small pool per database, all
 * drawing from one budget of `maxTotal` open connections (TENANT_POOL_MAX_TOTAL).
 *
 * - A checkout reuses an idle connection of that database, else opens one when
 *   the database is under `maxPerDatabase` and the budget has room.
 * - When the budget is spent, the least recently used idle connection of
 *   another database is closed to make room (LRU); when every connection is
 *   busy the caller waits (FIFO, bounded by `acquireTimeoutMs`).
 * - Idle connections are closed after `idleTimeoutMs`; a database left with
 *   no connections is forgotten.
 *
 * Each database is exposed as a pg-Pool-shaped object for Kysely's PostgresDialect.
 */
import pg from 'pg';
import { markDependency } from '../http/errors.js';

export interface TenantPoolOptions {
  /** Upper bound on open connections over all tenant databases. */
  maxTotal: number;
  /** Upper bound per database (default: min(10, maxTotal)). */
  maxPerDatabase?: number;
  idleTimeoutMs?: number;
  acquireTimeoutMs?: number;
  connectTimeoutMs?: number;
}

export interface PoolLike {
  connect(): Promise<PoolClientLike>;
  end(): Promise<void>;
}

export interface PoolClientLike {
  query(...args: any[]): any;
  release(destroy?: boolean | Error): void;
}

interface Slot {
  client: pg.Client;
  db: DbState;
  idleSince: number;
  busy: boolean;
  broken: boolean;
  handle: PoolClientLike;
}

interface DbState {
  url: string;
  idle: Slot[];
  /** Open connections, including those still connecting. */
  open: number;
  lastUsed: number;
  /** Set by closeDatabase: connections are closed on release instead of kept. */
  closing: boolean;
}

interface Waiter {
  db: DbState;
  resolve(slot: Slot): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

export interface TenantPoolStats {
  open: number;
  idle: number;
  busy: number;
  waiting: number;
  databases: number;
  maxTotal: number;
}

export class TenantConnectionPools {
  readonly maxTotal: number;
  readonly maxPerDatabase: number;
  private readonly idleTimeoutMs: number;
  private readonly acquireTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly dbs = new Map<string, DbState>();
  private waiters: Waiter[] = [];
  private total = 0;
  private closed = false;
  private readonly reaper: NodeJS.Timeout;

  constructor(opts: TenantPoolOptions) {
    this.maxTotal = Math.max(1, opts.maxTotal);
    this.maxPerDatabase = Math.max(1, Math.min(opts.maxPerDatabase ?? 10, this.maxTotal));
    this.idleTimeoutMs = opts.idleTimeoutMs ?? 30_000;
    this.acquireTimeoutMs = opts.acquireTimeoutMs ?? 10_000;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 10_000;
    this.reaper = setInterval(() => this.reap(), Math.max(100, Math.min(this.idleTimeoutMs / 2, 10_000)));
    this.reaper.unref();
  }

  /** A pg-Pool-shaped view of one database. `end()` is a no-op: the pools close together in close(). */
  pool(url: string): PoolLike {
    return {
      connect: async () => (await this.acquire(url)).handle,
      end: async () => {},
    };
  }

  stats(): TenantPoolStats {
    let idle = 0;
    for (const db of this.dbs.values()) idle += db.idle.length;
    return { open: this.total, idle, busy: this.total - idle, waiting: this.waiters.length, databases: this.dbs.size, maxTotal: this.maxTotal };
  }

  /** Connections of one database (tests, diagnostics). */
  connectionsOf(url: string): { open: number; idle: number } {
    const db = this.dbs.get(url);
    return { open: db?.open ?? 0, idle: db?.idle.length ?? 0 };
  }

  /** Close this database's connections (idle now, busy ones when released), e.g. before dropping it. */
  closeDatabase(url: string): void {
    const db = this.dbs.get(url);
    if (!db) return;
    db.closing = true;
    for (const slot of db.idle.splice(0)) this.destroy(slot);
    this.waiters = this.waiters.filter((w) => {
      if (w.db !== db) return true;
      clearTimeout(w.timer);
      w.reject(new Error('the tenant database is being closed'));
      return false;
    });
    if (db.open === 0) this.dbs.delete(url);
    this.dispatch();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.reaper);
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new Error('tenant connection pools are closed'));
    }
    const ends: Promise<void>[] = [];
    for (const db of this.dbs.values()) {
      for (const slot of db.idle.splice(0)) ends.push(this.destroy(slot));
    }
    await Promise.all(ends);
  }

  private state(url: string): DbState {
    let db = this.dbs.get(url);
    if (!db || db.closing) {
      // (Reopened while a closing database's connections drain: a fresh state; the old one is forgotten.)
      db = { url, idle: [], open: 0, lastUsed: Date.now(), closing: false };
      this.dbs.set(url, db);
    }
    return db;
  }

  private async acquire(url: string): Promise<Slot> {
    if (this.closed) throw new Error('tenant connection pools are closed');
    const db = this.state(url);
    db.lastUsed = Date.now();
    const idle = db.idle.pop();
    if (idle) return this.checkout(idle);
    if (this.waiters.length === 0 && this.canOpen(db)) return this.open(db);
    return new Promise<Slot>((resolve, reject) => {
      const waiter: Waiter = {
        db,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          reject(new Error(
            `timed out after ${this.acquireTimeoutMs} ms waiting for a tenant database connection ` +
            `(${this.total} open, limit ${this.maxTotal} in total and ${this.maxPerDatabase} per database)`,
          ));
        }, this.acquireTimeoutMs),
      };
      this.waiters.push(waiter);
      this.dispatch();
    });
  }

  /** Room for one more connection to `db`, closing another database's LRU idle connection if needed. */
  private canOpen(db: DbState): boolean {
    if (db.open >= this.maxPerDatabase) return false;
    if (this.total < this.maxTotal) return true;
    let victim: Slot | undefined;
    for (const other of this.dbs.values()) {
      if (other === db) continue;
      for (const slot of other.idle) if (!victim || slot.idleSince < victim.idleSince) victim = slot;
    }
    if (!victim) return false;
    victim.db.idle.splice(victim.db.idle.indexOf(victim), 1);
    void this.destroy(victim);
    return true;
  }

  private async open(db: DbState): Promise<Slot> {
    this.total += 1;
    db.open += 1;
    const client = new pg.Client({ connectionString: db.url, connectionTimeoutMillis: this.connectTimeoutMs });
    const slot: Slot = {
      client,
      db,
      idleSince: Date.now(),
      busy: true,
      broken: false,
      handle: {
        query: (...args: any[]) => (client.query as (...a: any[]) => any)(...args),
        release: (destroy?: boolean | Error) => this.release(slot, Boolean(destroy)),
      },
    };
    client.on('error', () => {
      slot.broken = true;
      const i = db.idle.indexOf(slot);
      if (i >= 0) {
        db.idle.splice(i, 1);
        void this.destroy(slot);
        this.dispatch();
      }
    });
    try {
      await client.connect();
    } catch (err) {
      this.total -= 1;
      db.open -= 1;
      client.end().catch(() => {});
      this.forgetIfEmpty(db);
      this.dispatch();
      throw markDependency(err, 'database');
    }
    return slot;
  }

  private checkout(slot: Slot): Slot {
    slot.busy = true;
    slot.db.lastUsed = Date.now();
    return slot;
  }

  private release(slot: Slot, destroy: boolean): void {
    if (!slot.busy) return;
    slot.busy = false;
    if (destroy || slot.broken || slot.db.closing || this.closed) {
      void this.destroy(slot);
    } else {
      slot.idleSince = Date.now();
      slot.db.idle.push(slot);
    }
    this.dispatch();
  }

  private destroy(slot: Slot): Promise<void> {
    this.total -= 1;
    slot.db.open -= 1;
    this.forgetIfEmpty(slot.db);
    return slot.client.end().catch(() => {});
  }

  private forgetIfEmpty(db: DbState): void {
    if (db.open === 0 && db.idle.length === 0 && (db.closing || this.closed) && this.dbs.get(db.url) === db) {
      this.dbs.delete(db.url);
    }
  }

  /** Serve waiters in order: an idle connection of their database, or a new one when there is room. */
  private dispatch(): void {
    for (let i = 0; i < this.waiters.length;) {
      const w = this.waiters[i];
      const idle = w.db.idle.pop();
      if (idle) {
        this.waiters.splice(i, 1);
        clearTimeout(w.timer);
        w.resolve(this.checkout(idle));
        continue;
      }
      if (this.canOpen(w.db)) {
        this.waiters.splice(i, 1);
        clearTimeout(w.timer);
        this.open(w.db).then(w.resolve, w.reject);
        continue;
      }
      i += 1;
    }
  }

  /** Close connections idle for too long; forget databases with none left. */
  private reap(): void {
    const cutoff = Date.now() - this.idleTimeoutMs;
    for (const db of [...this.dbs.values()]) {
      const keep: Slot[] = [];
      for (const slot of db.idle) {
        if (slot.idleSince < cutoff) void this.destroy(slot);
        else keep.push(slot);
      }
      db.idle = keep;
      if (db.open === 0 && db.lastUsed < cutoff && this.dbs.get(db.url) === db && !this.waiters.some((w) => w.db === db)) {
        this.dbs.delete(db.url);
      }
    }
  }
}
