/**
 * Worker child processes for the tests: `node --import tsx <script>` with only
 * the given environment (plus PATH/HOME), stdout/stderr captured, helpers to
 * wait for a line and to kill.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Config } from '../../src/config.js';

export interface Child {
  proc: ChildProcess;
  output(): string;
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** The environment that makes a child use the same database, Redis prefix and storage as a test app. */
export function envFor(config: Config, extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {
    NODE_ENV: 'test',
    LOG_LEVEL: 'info',
    DATA_DIR: config.dataDir,
    UPLOAD_FOLDER: config.uploadFolder,
    REDIS_PREFIX: config.redisPrefix,
    LOGIN_RATE_LIMIT: '1000',
    LOGIN_IP_RATE_LIMIT: '1000',
  };
  if (config.databaseUrl) env.DATABASE_URL = config.databaseUrl;
  if (config.tenantDbServers.length) env.TENANT_DB_SERVERS = config.tenantDbServers.join(',');
  if (config.redisUrl) env.REDIS_URL = config.redisUrl;
  return { ...env, ...extra };
}

export function startChild(script: string, env: Record<string, string>): Child {
  const proc = spawn(process.execPath, ['--import', 'tsx', script], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const waiters: Array<() => void> = [];
  const onData = (d: Buffer) => {
    out += d.toString();
    if (out.length > 2_000_000) out = out.slice(-1_000_000);
    for (const w of [...waiters]) w();
  };
  proc.stdout!.on('data', onData);
  proc.stderr!.on('data', onData);
  const exited = new Promise<void>((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) resolve();
    else proc.once('exit', () => resolve());
  });
  proc.once('exit', () => {
    for (const w of [...waiters]) w();
  });
  return {
    proc,
    output: () => out,
    waitFor(re, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = re.exec(out);
          if (m) {
            done();
            resolve(m);
          } else if (proc.exitCode !== null || proc.signalCode !== null) {
            done();
            reject(new Error(`child exited (${proc.exitCode ?? proc.signalCode}) before ${re}:\n${out.slice(-5000)}`));
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`timed out waiting for ${re}:\n${out.slice(-5000)}`));
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          const i = waiters.indexOf(check);
          if (i >= 0) waiters.splice(i, 1);
        };
        waiters.push(check);
        check();
      });
    },
    async kill(signal = 'SIGKILL') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      await exited;
    },
  };
}
