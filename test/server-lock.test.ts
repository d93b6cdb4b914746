/**
 * The embedded database is one process's: with `npm start` running on a
 * DATA_DIR, the CLI and a second server on that DATA_DIR are refused before
 * they open the database or run anything; after the server stops the CLI works;
 * a lock left by a killed server is taken over. Real processes, as a user runs
 * them.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { startServerProcess, type ServerProcess } from './scaling/processes.js';

const run = promisify(execFile);
/** A RAM disk when there is one (PGlite's initdb writes a lot). */
const SCRATCH = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
const dataDir = fs.mkdtempSync(path.join(SCRATCH, 'tb-lock-proc-'));
const admin = { ADMIN_EMAIL: `admin.${Date.now()}@example.com`, ADMIN_PASSWORD: 'correct horse battery', TEST_TENANT_NAME: 'Lock Test' };
const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', DATA_DIR: dataDir, NODE_ENV: 'development', USE_VAULT: 'false' };
const servers: ServerProcess[] = [];

afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop(1_000)));
  fs.rmSync(dataDir, { recursive: true, force: true });
});

async function cliInit(): Promise<{ code: number; stdout: string; stderr: string }> {
  const args = ['--import', 'tsx', 'src/cli.ts', 'init', '--create-admin', '--create-test-tenant', '--non-interactive'];
  try {
    const r = await run(process.execPath, args, { env: { ...env, ...admin }, timeout: 60_000 });
    return { code: 0, ...r };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

async function login(base: string): Promise<number> {
  const res = await fetch(`${base}/api/auth/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: admin.ADMIN_EMAIL, password: admin.ADMIN_PASSWORD }),
  });
  return res.status;
}

describe('one process owns the embedded database', () => {
  it('refuses the CLI and a second server while the server runs; the CLI works once it stopped; a killed server\'s lock is taken over', async () => {
    const first = await startServerProcess('first', env);
    servers.push(first);
    const pid = first.proc.pid!;
    const holder = `the server is running on ${dataDir} (pid ${pid}`;

    const refused = await cliInit();
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(holder);
    expect(refused.stderr).toMatch(/stop it first, or use DATABASE_URL/);
    expect(refused.stdout).not.toContain('Initialized');

    // A second `npm start` on the same DATA_DIR (PORT=0: it would listen elsewhere) stops before anything runs.
    const second = await startServerProcess('second', env).then(
      (s) => {
        servers.push(s);
        return null;
      },
      (err: Error) => err.message,
    );
    expect(second).toMatch(/exited \(1\) before listening/);
    expect(second).toContain(`Refusing to start the server: ${holder}`);
    expect(second).not.toMatch(/background jobs started|storage root claimed|migrat/i);

    // The server was not disturbed, and the refused CLI wrote nothing.
    expect((await fetch(`${first.url}/health`)).status).toBe(200);
    expect(await login(first.url)).toBe(401);
    await first.stop();
    expect(fs.existsSync(path.join(dataDir, 'pglite.lock'))).toBe(false);

    const init = await cliInit();
    expect(init.code, init.stderr).toBe(0);
    expect(init.stdout).toContain('Initialized.');

    // A server killed outright leaves its lock; the next start takes it over and finds the admin.
    const killed = await startServerProcess('killed', env);
    servers.push(killed);
    expect(await login(killed.url)).toBe(200);
    killed.proc.kill('SIGKILL');
    await new Promise((r) => killed.proc.once('exit', r));
    expect(JSON.parse(fs.readFileSync(path.join(dataDir, 'pglite.lock'), 'utf8')).pid).toBe(killed.proc.pid);
    const next = await startServerProcess('next', env);
    servers.push(next);
    expect(next.output()).toMatch(new RegExp(`took over the stale lock .*pid ${killed.proc.pid}: pid ${killed.proc.pid} is not running`));
    expect(await login(next.url)).toBe(200);
  }, 180_000);
});
