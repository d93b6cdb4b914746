/**
 * The server entry point as a process: starts on the embedded default with no
 * configuration, on SIGTERM lets an in-flight request finish before exiting,
 * and after a SIGKILL has lost nothing it acknowledged.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-server-'));
const crashDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-server-crash-'));
let child: ChildProcess | undefined;

afterAll(() => {
  child?.kill('SIGKILL');
  fs.rmSync(dataDir, { recursive: true, force: true });
  fs.rmSync(crashDir, { recursive: true, force: true });
});

function startServer(dir = dataDir): Promise<{ proc: ChildProcess; port: number; output: () => string }> {
  const env: Record<string, string> = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', DATA_DIR: dir, PORT: '0', LOG_LEVEL: 'info' };
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

  it('loses nothing it acknowledged when SIGKILLed: the account, the document row and its bytes are there after a restart', async () => {
    const first = await startServer(crashDir);
    child = first.proc;
    const base = `http://127.0.0.1:${first.port}`;
    const credentials = { email: `crash.${Date.now()}@example.com`, password: 'correct horse battery' };
    const reg = await fetch(`${base}/api/auth/register`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...credentials, organization_name: 'Crash Test' }),
    });
    expect(reg.status).toBe(201);
    const tid = ((await reg.json()) as { organization_id: string }).organization_id;
    const login = async (url: string) => {
      const res = await fetch(`${url}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(credentials) });
      expect(res.status).toBe(200);
      return ((await res.json()) as { access_token: string }).access_token;
    };
    const bytes = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 31 + 7) % 251));
    const form = new FormData();
    form.append('file', new Blob([bytes], { type: 'application/octet-stream' }), 'kept.bin');
    const up = await fetch(`${base}/api/tenants/${tid}/documents`, { method: 'POST', headers: { authorization: `Bearer ${await login(base)}` }, body: form });
    expect(up.status).toBe(201);
    const doc = (await up.json()) as { id: string; sha256: string };

    // No graceful shutdown: the process dies the moment the answer is in.
    const killed = new Promise((r) => first.proc.once('exit', r));
    first.proc.kill('SIGKILL');
    await killed;

    const second = await startServer(crashDir);
    child = second.proc;
    const again = `http://127.0.0.1:${second.port}`;
    const auth = { authorization: `Bearer ${await login(again)}` };
    let status = '';
    for (const deadline = Date.now() + 30_000; status !== 'ready' && Date.now() < deadline; ) {
      const res = await fetch(`${again}/api/tenants/${tid}/documents/${doc.id}`, { headers: auth });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { status: string; sha256: string; filename: string };
      expect(body.sha256).toBe(doc.sha256);
      expect(body.filename).toBe('kept.bin');
      status = body.status;
      if (status !== 'ready') await new Promise((r) => setTimeout(r, 200));
    }
    expect(status).toBe('ready'); // processed before the kill, or from its outbox row after the restart
    const download = await fetch(`${again}/api/tenants/${tid}/documents/${doc.id}/download`, { headers: auth });
    expect(download.status).toBe(200);
    expect(Buffer.from(await download.arrayBuffer()).equals(bytes)).toBe(true);
    second.proc.kill('SIGTERM');
  }, 120_000);
});
