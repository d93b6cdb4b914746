/**
 * The API server as a child process for benchmarks: what `npm start` runs —
 * its environment assignments and node flags read from package.json's `start`
 * script, then `dist/src/server.js`, built once per benchmark run from the
 * current sources (`tsc -p tsconfig.build.json`) — so neither the tsx loader's
 * thread nor on-the-fly compilation is measured. The child's pid is the node process
 * itself, so /proc/<pid>/status is its memory. The port is picked here
 * (production logs at warn do not print the listening line).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import fs from 'node:fs';
import net from 'node:net';

export interface BenchServer {
  proc: ChildProcess;
  pid: number;
  url: string;
  /** The last lines the server printed (warnings and errors at LOG_LEVEL=warn). */
  output(): string;
  /** SIGTERM (graceful: a --cpu-prof profile is written on exit), SIGKILL after graceMs. */
  stop(graceMs?: number): Promise<number | null>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

let built: Promise<void> | null = null;

/** Compile src/ to dist/ once per process (the build `npm start` runs). */
export function buildServer(): Promise<void> {
  built ??= (async () => {
    const started = Date.now();
    console.log('[bench] building dist/ (tsc -p tsconfig.build.json), the code `npm start` runs');
    const tsc = path.join('node_modules', 'typescript', 'bin', 'tsc');
    await promisify(execFile)(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { maxBuffer: 10 * 1024 * 1024 });
    console.log(`[bench] built in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  })();
  return built;
}

/**
 * `npm start` without npm: the variables and node flags of package.json's `start`
 * script (`[NAME=value ...] node [--flag ...] dist/src/server.js`).
 */
export function startCommand(packageJson = 'package.json'): { env: Record<string, string>; nodeArgs: string[] } {
  const pkg = JSON.parse(fs.readFileSync(packageJson, 'utf8')) as { scripts: Record<string, string> };
  const words = pkg.scripts.start.trim().split(/\s+/);
  const env: Record<string, string> = {};
  let i = 0;
  for (; /^[A-Z_][A-Z0-9_]*=/.test(words[i] ?? ''); i++) {
    const eq = words[i].indexOf('=');
    env[words[i].slice(0, eq)] = words[i].slice(eq + 1);
  }
  const nodeArgs = words.slice(i + 1, -1);
  if (words[i] !== 'node' || words.at(-1) !== 'dist/src/server.js' || nodeArgs.some((a) => !a.startsWith('--'))) {
    throw new Error(`package.json "start" is not [NAME=value ...] node [--flag ...] dist/src/server.js: ${pkg.scripts.start}`);
  }
  return { env, nodeArgs };
}

/**
 * Start the built server as `npm start` does. Environment: the start script's
 * variables, then `opts.env`, then BENCH_SERVER_<NAME>=value from the bench's own
 * environment as <NAME> (e.g. BENCH_SERVER_NODE_OPTIONS); node flags: the start
 * script's, then `opts.nodeArgs` (later flags win).
 */
export async function startServer(opts: { env: Record<string, string>; nodeArgs?: string[]; startTimeoutMs?: number }): Promise<BenchServer> {
  await buildServer();
  const port = await freePort();
  const start = startCommand();
  const overrides: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('BENCH_SERVER_') && v !== undefined) overrides[k.slice('BENCH_SERVER_'.length)] = v;
  }
  const env = {
    PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', HOST: '127.0.0.1',
    ...start.env, ...opts.env, ...overrides, PORT: String(port),
  };
  const nodeArgs = [...start.nodeArgs, ...(opts.nodeArgs ?? [])];
  const proc = spawn(process.execPath, [...nodeArgs, 'dist/src/server.js'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const collect = (d: Buffer) => {
    out += d.toString();
    if (out.length > 100_000) out = out.slice(-50_000);
  };
  proc.stdout!.on('data', collect);
  proc.stderr!.on('data', collect);
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => { exitCode = code; resolve(code); }));

  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + (opts.startTimeoutMs ?? 60_000);
  for (;;) {
    if (exitCode !== undefined) throw new Error(`the server exited (${exitCode}) before answering:\n${out}`);
    try {
      const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1_000) });
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`the server did not answer /health in time:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }

  return {
    proc,
    pid: proc.pid!,
    url,
    output: () => out,
    async stop(graceMs = 15_000) {
      if (exitCode !== undefined) return exitCode;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** Resident memory of a process from /proc (bytes); null when not readable. */
export function memoryOf(pid: number): { rss: number; hwm: number } | null {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
    return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
  } catch {
    return null;
  }
}

/** The process and its direct children (a WEB_CONCURRENCY primary and its API workers). */
export function processTree(pid: number): number[] {
  const out = [pid];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Memory of the process tree (summed over processes); null when the process is not readable. */
export function treeMemoryOf(pid: number): { rss: number; hwm: number } | null {
  const own = memoryOf(pid);
  if (!own) return null;
  for (const child of processTree(pid).slice(1)) {
    const m = memoryOf(child);
    if (m) {
      own.rss += m.rss;
      own.hwm += m.hwm;
    }
  }
  return own;
}

/** CPU time (ms) of the process and its direct children. */
export function treeCpuTimeMs(pid: number): number | null {
  const own = cpuTimeMs(pid);
  if (own === null) return null;
  return processTree(pid).slice(1).reduce((sum, child) => sum + (cpuTimeMs(child) ?? 0), own);
}

/** Reset the process's peak RSS (VmHWM) so the next reading is the peak of what follows. */
export function resetPeakRss(pid: number): boolean {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/**
 * Peak RSS over a period: resets VmHWM at the start (when the kernel allows it) and
 * also samples VmRSS, so the result is right either way.
 */
export function trackPeakRss(pid: number, everyMs = 100): { stop(): { peak: number; hwmReset: boolean } } {
  // Over the process tree (a WEB_CONCURRENCY primary and its workers): peaks summed, an upper bound.
  const hwmReset = processTree(pid).map(resetPeakRss).every(Boolean);
  let peak = 0;
  const sample = () => {
    const m = treeMemoryOf(pid);
    if (m && Number.isFinite(m.rss)) peak = Math.max(peak, m.rss);
  };
  sample();
  const timer = setInterval(sample, everyMs);
  return {
    stop() {
      clearInterval(timer);
      sample();
      const m = treeMemoryOf(pid);
      if (hwmReset && m && Number.isFinite(m.hwm)) peak = Math.max(peak, m.hwm);
      return { peak, hwmReset };
    },
  };
}

/** CPU time (user + system, ms) a process has used so far; null when not readable. */
export function cpuTimeMs(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may contain spaces, so split after the closing paren).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of the line)
    return (ticks * 1000) / CLOCK_TICKS;
  } catch {
    return null;
  }
}

/** USER_HZ: 100 on every Linux the project targets. */
const CLOCK_TICKS = 100;

/**
 * CPU time (ms) of the PostgreSQL backends serving one database, found by their
 * process titles ("postgres: ... <user> <database> <host> ..."); null when /proc
 * shows none (another machine, or another user's processes hidden).
 */
export function postgresCpuTimeMs(database: string): number | null {
  let total = 0;
  let found = false;
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let title: string;
    try {
      title = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (!title.startsWith('postgres:') || !title.split(/[\s\0]+/).includes(database)) continue;
    const ms = cpuTimeMs(Number(entry));
    if (ms !== null) {
      total += ms;
      found = true;
    }
  }
  return found ? total : null;
}
