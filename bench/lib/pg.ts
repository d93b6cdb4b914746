/** PostgreSQL for benchmarks: scratch databases on the admin URL, and pgbench as the machine's yardstick. */
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { promisify } from 'node:util';
import pg from 'pg';

const run = promisify(execFile);

export const PG_ADMIN_URL = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

export interface ScratchDatabase {
  name: string;
  url: string;
  drop(): Promise<void>;
}

export async function createScratchDatabase(prefix: string, adminUrl = PG_ADMIN_URL): Promise<ScratchDatabase> {
  const name = `${prefix}_${Date.now().toString(36)}_${crypto.randomBytes(3).toString('hex')}`;
  await withClient(adminUrl, (c) => c.query(`CREATE DATABASE "${name}"`));
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  let dropped = false;
  return {
    name,
    url: url.toString(),
    async drop() {
      if (dropped) return;
      dropped = true;
      await withClient(adminUrl, (c) => c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`));
    },
  };
}

export function findPgbench(): string | null {
  const candidates = (process.env.PATH ?? '').split(':').map((d) => `${d}/pgbench`);
  for (const v of ['17', '16', '15', '14', '13']) candidates.push(`/usr/lib/postgresql/${v}/bin/pgbench`);
  return candidates.find((p) => {
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  }) ?? null;
}

function connArgs(url: string): { args: string[]; env: NodeJS.ProcessEnv } {
  const u = new URL(url);
  // `?host=/var/run/postgresql` (a Unix socket directory) wins over the URL's host, as it does for node-postgres.
  const args = ['-h', u.searchParams.get('host') || u.hostname || '127.0.0.1', '-p', u.port || '5432', '-U', decodeURIComponent(u.username || 'postgres')];
  const env = { ...process.env, ...(u.password ? { PGPASSWORD: decodeURIComponent(u.password) } : {}) };
  return { args, env };
}

export interface PgbenchResult {
  tps: number;
  latencyMs?: number;
  clients: number;
  seconds: number;
}

/** `pgbench -i -s <scale>` on a scratch database, then `-S` (select only); the scratch database is dropped after. */
export async function pgbenchSelectOnly(opts: { clients: number; threads: number; seconds: number; scale: number }): Promise<PgbenchResult> {
  const bin = findPgbench();
  if (!bin) throw new Error('pgbench not found (PATH or /usr/lib/postgresql/<v>/bin)');
  const db = await createScratchDatabase('tb_pgbench');
  try {
    const { args, env } = connArgs(db.url);
    await run(bin, [...args, '-i', '-q', '-s', String(opts.scale), db.name], { env, timeout: 300_000 });
    const { stdout } = await run(
      bin,
      [...args, '-n', '-S', '-c', String(opts.clients), '-j', String(opts.threads), '-T', String(opts.seconds), db.name],
      { env, timeout: (opts.seconds + 60) * 1000 },
    );
    const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(stdout) ?? /tps = ([\d.]+)/.exec(stdout);
    if (!tps) throw new Error(`could not read tps from pgbench:\n${stdout}`);
    const lat = /latency average = ([\d.]+) ms/.exec(stdout);
    return { tps: Number(tps[1]), latencyMs: lat ? Number(lat[1]) : undefined, clients: opts.clients, seconds: opts.seconds };
  } finally {
    await db.drop();
  }
}
