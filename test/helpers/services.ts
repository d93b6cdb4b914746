/**
 * Services of a test's own, for fault tests: a PostgreSQL cluster and a Redis
 * server on free loopback ports, which the test may stop, restart or kill.
 * The machine's own PostgreSQL (5432) and Redis (6379) are never touched.
 *
 * PostgreSQL runs as the `postgres` OS user (initdb refuses root) on a
 * directory it owns; the binaries are Debian's (/usr/lib/postgresql/<v>/bin).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../../bench/lib/server.js';

export { freePort };

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`${what} did not come up within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

function pgBinDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = fs.existsSync(root) ? fs.readdirSync(root).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a)) : [];
  for (const v of versions) {
    const dir = path.join(root, v, 'bin');
    if (fs.existsSync(path.join(dir, 'initdb'))) return dir;
  }
  throw new Error('PostgreSQL server binaries not found under /usr/lib/postgresql/<version>/bin (Debian package postgresql)');
}

/** Runs a PostgreSQL binary as the postgres OS user when we are root (initdb and postgres refuse root). */
function asPostgres(bin: string, args: string[]): string[] {
  return process.getuid?.() === 0 ? ['runuser', '-u', 'postgres', '--', bin, ...args] : [bin, ...args];
}

export interface PgCluster {
  port: number;
  /** Superuser URL of the cluster's `postgres` database (trust auth on loopback). */
  url: string;
  /** URL of another database of the cluster. */
  urlFor(database: string): string;
  /** Fast shutdown: open connections are terminated (57P01), like a restart by an operator. */
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
  start(): Promise<void>;
  restart(): Promise<void>;
  /** Stops the cluster and removes its files. */
  destroy(): Promise<void>;
}

/** initdb a fresh cluster in a temp directory and start it on a free port. */
export async function startPgCluster(): Promise<PgCluster> {
  const bin = pgBinDir();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-pg-'));
  const dataDir = path.join(dir, 'data');
  const sockDir = path.join(dir, 'sock');
  fs.mkdirSync(sockDir);
  if (process.getuid?.() === 0) execFileSync('chown', ['-R', 'postgres:postgres', dir]);
  const port = await freePort();
  const run = (tool: string, args: string[]) => {
    const [cmd, ...rest] = asPostgres(path.join(bin, tool), args);
    return execFileSync(cmd, rest, { stdio: 'pipe' }).toString();
  };
  run('initdb', ['-D', dataDir, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C']);
  fs.appendFileSync(
    path.join(dataDir, 'postgresql.conf'),
    `\nport = ${port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '${sockDir}'\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 100\nshared_buffers = 32MB\n`,
  );
  const logFile = path.join(dir, 'log');
  const start = async () => {
    run('pg_ctl', ['-D', dataDir, '-l', logFile, '-w', '-t', '30', 'start']);
    await waitFor(() => canConnect(port), `PostgreSQL on port ${port}`);
  };
  const stop = async (mode: 'fast' | 'immediate' = 'fast') => {
    try {
      run('pg_ctl', ['-D', dataDir, '-m', mode, '-w', '-t', '30', 'stop']);
    } catch (err) {
      // Already stopped is fine.
      if (!/not running|No such process|PID file .* does not exist/i.test(String((err as { stderr?: Buffer }).stderr ?? err))) throw err;
    }
  };
  await start();
  const urlFor = (database: string) => `postgres://postgres@127.0.0.1:${port}/${database}`;
  return {
    port,
    url: urlFor('postgres'),
    urlFor,
    stop,
    start,
    async restart() {
      await stop('fast');
      await start();
    },
    async destroy() {
      await stop('immediate');
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface RedisServer {
  port: number;
  url: string;
  /** SIGKILL: the server goes away at once (no persistence, so it comes back empty). */
  kill(): Promise<void>;
  start(): Promise<void>;
  /** kill() then start(): a restart without persistence, every key gone. */
  restartEmpty(): Promise<void>;
  destroy(): Promise<void>;
}

/** A redis-server of the test's own on a free port, keeping nothing on disk. */
export async function startRedisServer(): Promise<RedisServer> {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-redis-'));
  let proc: ChildProcess | null = null;
  const start = async () => {
    proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
      stdio: 'ignore',
    });
    await waitFor(() => canConnect(port), `Redis on port ${port}`);
  };
  const kill = async () => {
    const p = proc;
    proc = null;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      p.once('exit', () => resolve());
      p.kill('SIGKILL');
    });
  };
  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    kill,
    start,
    async restartEmpty() {
      await kill();
      await start();
    },
    async destroy() {
      await kill();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
