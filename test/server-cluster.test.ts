/**
 * WEB_CONCURRENCY=N: `npm start` as a node:cluster primary with N API worker
 * processes on one port (PostgreSQL only). Checked on the real process tree:
 * N workers answer, a killed worker is replaced, SIGTERM stops them all with
 * exit code 0; and PGlite refuses more than one process.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, ConfigError } from '../src/config.js';
import { createTestDatabase, HAS_PG } from './helpers/env.js';
import net from 'node:net';

function freePortForTest(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return out.sort();
}

let output = () => '';

async function until<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, ms = 90_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; output so far:\n${output()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

it('refuses WEB_CONCURRENCY > 1 on the embedded database, naming the variable', () => {
  expect(() => loadConfig({ NODE_ENV: 'test', WEB_CONCURRENCY: '2' })).toThrow(ConfigError);
  expect(() => loadConfig({ NODE_ENV: 'test', WEB_CONCURRENCY: '2' })).toThrow(/WEB_CONCURRENCY/);
  expect(loadConfig({ NODE_ENV: 'test', WEB_CONCURRENCY: '2', DATABASE_URL: 'postgres://x@127.0.0.1/db' }).webConcurrency).toBe(2);
  expect(loadConfig({ NODE_ENV: 'test' }).webConcurrency).toBe(1);
});

describe.skipIf(!HAS_PG)('WEB_CONCURRENCY=2 on PostgreSQL', () => {
  let proc: ChildProcess | undefined;
  let drop: (() => Promise<void>) | undefined;
  let out = '';
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-cluster-'));
  let base = '';

  beforeAll(async () => {
    const db = await createTestDatabase();
    drop = db.drop;
    const port = await freePortForTest();
    base = `http://127.0.0.1:${port}`;
    proc = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
      env: {
        PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', DATA_DIR: dataDir, PORT: String(port),
        DATABASE_URL: db.url, WEB_CONCURRENCY: '2', LOG_LEVEL: 'info', JOBS_AUTOSTART: 'false',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    output = () => `${out.slice(-3000)}\nchildren: ${childrenOf(proc!.pid!).join(',')}`;
    proc.stdout!.on('data', (d) => { out += d; });
    proc.stderr!.on('data', (d) => { out += d; });
  }, 30_000);

  afterAll(async () => {
    if (proc && proc.exitCode === null) {
      for (const c of childrenOf(proc.pid!)) process.kill(c, 'SIGKILL');
      proc.kill('SIGKILL');
    }
    await drop?.();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('runs two API workers on one port, replaces a killed one, and stops them all on SIGTERM', async () => {
    const pid = proc!.pid!;
    const workers = await until(`two listening workers (pid ${pid})`, () => {
      const listening = (out.match(/API docs at/g) ?? []).length;
      const kids = childrenOf(pid);
      return listening >= 2 && kids.length === 2 ? kids : undefined;
    });
    const health = await fetch(`${base}/health`);
    expect(health.status).toBe(200);

    process.kill(workers[0], 'SIGKILL');
    const replaced = await until('a replacement worker', () => {
      const kids = childrenOf(pid);
      return kids.length === 2 && !kids.includes(workers[0]) ? kids : undefined;
    });
    expect(replaced).toContain(workers[1]);
    await until('the replacement listening', () => ((out.match(/API docs at/g) ?? []).length >= 3 ? true : undefined));
    for (let i = 0; i < 10; i++) expect((await fetch(`${base}/health`)).status).toBe(200);
    expect(out).toMatch(/an API worker exited; starting another/);

    const exit = new Promise<number | null>((r) => proc!.once('exit', (code) => r(code)));
    proc!.kill('SIGTERM');
    expect(await exit).toBe(0);
    for (const w of replaced) expect(fs.existsSync(`/proc/${w}`)).toBe(false);
    expect(out).toMatch(/all API workers stopped/);
  }, 240_000);
});
