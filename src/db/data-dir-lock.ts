/**
 * The embedded database belongs to one process: PGlite keeps its own copy of the
 * database in memory and writes it back, so two processes on one directory lose
 * each other's commits. Whoever opens it first takes this lock; anyone else (a
 * second `npm start`, `npm run worker`, a CLI command) is refused before it opens
 * the database, with a message naming the holder.
 *
 * The lock is a file `<pglite dir>.lock` holding its owner: pid, host, the
 * process's start time (Linux: `/proc/<pid>/stat` start ticks and the boot id)
 * and what it is (server, worker, `cli <command>`). It is created atomically
 * (written to a temporary file, then hard-linked into place, which fails if the
 * lock exists), removed on close and, if the process exits without closing, by
 * an `exit` handler. A process killed outright (SIGKILL, power loss) leaves it
 * behind: a lock is stale, and taken over, when its pid is not alive, is alive
 * but started at another time (a reused pid), or the machine has rebooted
 * since. A lock of another host is never taken over (it cannot be checked from
 * here): the message says which file to remove if that host is not using it.
 * Takeovers are serialised by a short-lived `<lock>.takeover` file, so two
 * processes that both find a stale lock cannot both win.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface LockOwner {
  pid: number;
  hostname: string;
  /** What holds it: 'server', 'worker', 'cli migrate', ... */
  role: string;
  /** When the owning process started (ISO). */
  started_at: string;
  /** Linux: the process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat). */
  proc_start?: string;
  /** Linux: /proc/sys/kernel/random/boot_id of the boot the owner runs in. */
  boot_id?: string;
  /** Random, so a process only ever removes its own lock. */
  token: string;
}

export class DataDirLockedError extends Error {
  constructor(
    readonly dataDir: string,
    readonly lockFile: string,
    readonly owner: LockOwner | null,
  ) {
    super(lockedMessage(dataDir, lockFile, owner));
    this.name = 'DataDirLockedError';
  }
}

function describeRole(role: string): string {
  if (role === 'server') return 'the server';
  if (role === 'worker') return 'a worker';
  if (role.startsWith('cli')) return `the CLI (${role.slice(3).trim() || 'a command'})`;
  return role;
}

function lockedMessage(dataDir: string, lockFile: string, owner: LockOwner | null): string {
  if (!owner) return `the embedded database in ${dataDir} is being opened by another process (lock ${lockFile}); try again, or use DATABASE_URL`;
  const who = `${describeRole(owner.role)} is running on ${dataDir} (pid ${owner.pid}`;
  const remote = owner.hostname !== os.hostname();
  const where = remote ? ` on host ${owner.hostname}` : '';
  const advice = remote ? `; stop it, or remove ${lockFile} if that host is not using this directory` : '; stop it first';
  return `${who}${where}, since ${owner.started_at})${advice}, or use DATABASE_URL (PostgreSQL, which several processes can share). The embedded database belongs to one process.`;
}

function readFileQuietly(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/** Field 22 (starttime) of /proc/<pid>/stat; undefined where there is no /proc. */
function procStart(pid: number | 'self'): string | undefined {
  const stat = readFileQuietly(`/proc/${pid}/stat`);
  if (!stat) return undefined;
  // The command name (field 2) is in parentheses and may contain spaces: count from the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return fields[19];
}

function bootId(): string | undefined {
  return readFileQuietly('/proc/sys/kernel/random/boot_id')?.trim() || undefined;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // alive, another user's
  }
}

/** Why the recorded owner no longer holds the lock, or null when it may (alive, or on another host). */
export function staleReason(owner: LockOwner): string | null {
  if (owner.hostname !== os.hostname()) return null;
  const boot = bootId();
  if (owner.boot_id && boot && owner.boot_id !== boot) return 'the machine has restarted since';
  if (!isAlive(owner.pid)) return `pid ${owner.pid} is not running`;
  if (owner.proc_start) {
    const now = procStart(owner.pid);
    if (now !== undefined && now !== owner.proc_start) return `pid ${owner.pid} is another process now`;
  }
  return null;
}

function parseOwner(text: string | undefined): LockOwner | null {
  if (!text) return null;
  try {
    const o = JSON.parse(text) as LockOwner;
    return typeof o.pid === 'number' && typeof o.hostname === 'string' && typeof o.token === 'string' ? o : null;
  } catch {
    return null;
  }
}

function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

/** Create `file` with `content` unless it exists (true), all at once: a reader never sees it half written. */
function createExclusive(file: string, content: string): boolean {
  const tmp = `${file}.${process.pid}.${crypto.randomBytes(4).toString('hex')}`;
  fs.writeFileSync(tmp, content, { flag: 'wx' });
  try {
    fs.linkSync(tmp, file);
    return true;
  } catch (err) {
    if (errno(err) === 'EEXIST') return false;
    throw err;
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

const TAKEOVER_STALE_MS = 10_000;

/** Run `fn` holding `<lock>.takeover` (a crashed holder's is ignored after 10 s). */
function withTakeoverMutex<T>(lockFile: string, fn: () => T): T {
  const mutex = `${lockFile}.takeover`;
  const deadline = Date.now() + TAKEOVER_STALE_MS + 2_000;
  for (;;) {
    try {
      fs.writeFileSync(mutex, String(process.pid), { flag: 'wx' });
      break;
    } catch (err) {
      if (errno(err) !== 'EEXIST') throw err;
      const age = (() => {
        try {
          return Date.now() - fs.statSync(mutex).mtimeMs;
        } catch {
          return 0;
        }
      })();
      if (age > TAKEOVER_STALE_MS) fs.rmSync(mutex, { force: true });
      else if (Date.now() > deadline) throw new Error(`could not take over the stale lock ${lockFile}: ${mutex} stays in place`);
      else Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
    }
  }
  try {
    return fn();
  } finally {
    fs.rmSync(mutex, { force: true });
  }
}

export interface DataDirLock {
  readonly file: string;
  readonly owner: LockOwner;
  /** The stale owner that was replaced, if any (logged by the caller). */
  readonly tookOverFrom: { owner: LockOwner | null; reason: string } | null;
  release(): void;
}

/**
 * Take the lock of the embedded database at `pgliteDir`, or throw DataDirLockedError.
 * `role` says what holds it ('server', 'worker', 'cli <command>').
 */
export function lockDataDir(pgliteDir: string, role: string): DataDirLock {
  const dir = path.resolve(pgliteDir);
  const file = `${dir}.lock`;
  const dataDir = path.dirname(dir);
  fs.mkdirSync(dataDir, { recursive: true });
  const owner: LockOwner = {
    pid: process.pid,
    hostname: os.hostname(),
    role,
    started_at: new Date(Date.now() - process.uptime() * 1000).toISOString(),
    proc_start: procStart('self'),
    boot_id: bootId(),
    token: crypto.randomBytes(16).toString('hex'),
  };
  const content = `${JSON.stringify(owner, null, 2)}\n`;
  let tookOverFrom: DataDirLock['tookOverFrom'] = null;

  if (!createExclusive(file, content)) {
    tookOverFrom = withTakeoverMutex(file, () => {
      const current = parseOwner(readFileQuietly(file));
      // Unreadable content: not written by this code (the lock is only ever created whole), so nobody's lock.
      const reason = current ? staleReason(current) : 'the lock file is unreadable';
      if (reason === null) throw new DataDirLockedError(dataDir, file, current);
      fs.rmSync(file, { force: true });
      if (!createExclusive(file, content)) throw new DataDirLockedError(dataDir, file, parseOwner(readFileQuietly(file)));
      return { owner: current, reason };
    });
  }

  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    process.off('exit', release);
    // Only our own lock: never one another process took over.
    if (parseOwner(readFileQuietly(file))?.token === owner.token) fs.rmSync(file, { force: true });
  };
  process.on('exit', release);
  return { file, owner, tookOverFrom, release };
}
