/**
 * Start `src/server.ts` as a real child process (node --import tsx) and find
 * the port it listens on from its "Server listening at" log line (PORT=0).
 * The environment is only what is given here (plus PATH/HOME): nothing leaks
 * in from the test runner's environment.
 */
import { spawn, type ChildProcess } from 'node:child_process';

export interface ServerProcess {
  name: string;
  proc: ChildProcess;
  port: number;
  url: string;
  output(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process has exited. */
  stop(graceMs?: number): Promise<void>;
}

const START_TIMEOUT_MS = 60_000;

export function startServerProcess(name: string, env: Record<string, string>): Promise<ServerProcess> {
  const fullEnv = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', ...env };
  const proc = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], { env: fullEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = new Promise<void>((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) resolve();
    else proc.once('exit', () => resolve());
  });

  const stop = async (graceMs = 5_000) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  };

  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`server ${name} did not start within ${START_TIMEOUT_MS} ms:\n${out}`));
    }, START_TIMEOUT_MS);
    const onData = (d: Buffer) => {
      out += d.toString();
      // Keep the captured output bounded (a chatty server must not eat the test's memory).
      if (out.length > 200_000) out = out.slice(-100_000);
      const m = /Server listening at http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        const port = Number(m[1]);
        resolve({ name, proc, port, url: `http://127.0.0.1:${port}`, output: () => out, stop });
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`server ${name} exited (${code ?? signal}) before listening:\n${out}`));
    });
  });
}
