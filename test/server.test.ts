/**
 * The server entry point as a process: starts on the embedded default with no
 * configuration, and on SIGTERM lets an in-flight request finish before exiting.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-server-'));
let child: ChildProcess | undefined;

afterAll(() => {
  child?.kill('SIGKILL');
  fs.rmSync(dataDir, { recursive: true, force: true });
});

function startServer(): Promise<{ proc: ChildProcess; port: number; output: () => string }> {
  const env: Record<string, string> = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: 'info' };
  const proc = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${out}`)), 60_000);
    const onData = (d: Buffer) => {
      out += d.toString();
      const m = /Server listening at http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ proc, port: Number(m[1]), output: () => out });
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    proc.on('exit', (code) => reject(new Error(`server exited with ${code}:\n${out}`)));
  });
}

describe('server process', () => {
  it('starts with no configuration on PGlite under DATA_DIR, and drains in-flight requests on SIGTERM', async () => {
    const server = await startServer();
    child = server.proc;
    expect(fs.existsSync(path.join(dataDir, 'pglite'))).toBe(true);
    const health = await fetch(`http://127.0.0.1:${server.port}/health`);
    expect(await health.json()).toEqual({ status: 'healthy' });

    // Start a request, send half its body, then SIGTERM; finish the body afterwards.
    const body = JSON.stringify({ email: `drain.${Date.now()}@example.com`, password: 'correct horse battery' });
    const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request({
        host: '127.0.0.1', port: server.port, method: 'POST', path: '/api/auth/register',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      }, (res) => {
        let text = '';
        res.on('data', (c) => { text += c; });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      });
      req.on('error', reject);
      req.write(body.slice(0, 10));
      setTimeout(() => {
        const exited = new Promise((r) => server.proc.once('exit', r));
        server.proc.kill('SIGTERM');
        setTimeout(() => req.end(body.slice(10)), 300);
        void exited;
      }, 200);
    });
    const exit = new Promise<number | null>((r) => server.proc.once('exit', (code) => r(code)));
    const res = await answer;
    expect(res.status).toBe(201);
    expect(JSON.parse(res.body).email).toMatch(/^drain\./);
    expect(await exit).toBe(0);
    expect(server.output()).toMatch(/shutting down/);
  }, 90_000);
});
