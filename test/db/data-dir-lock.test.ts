/** The embedded database's lock (src/db/data-dir-lock.ts): one holder, stale locks taken over, others' refused. */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DataDirLockedError, lockDataDir, type LockOwner } from '../../src/db/data-dir-lock.js';
import { openDatabase } from '../../src/db/index.js';

const dirs: string[] = [];
function scratch(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-lock-'));
  dirs.push(d);
  return path.join(d, 'pglite');
}
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** A pid that was a process a moment ago and is gone now. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

function writeLock(pgliteDir: string, owner: Partial<LockOwner>): void {
  const full: LockOwner = {
    pid: process.pid, hostname: os.hostname(), role: 'server', started_at: new Date().toISOString(), token: 'someone-else', ...owner,
  };
  fs.mkdirSync(path.dirname(pgliteDir), { recursive: true });
  fs.writeFileSync(`${pgliteDir}.lock`, JSON.stringify(full));
}

describe('data directory lock', () => {
  it('has one holder: a second taker is refused with a message naming the holder, and can take it once released', () => {
    const dir = scratch();
    const first = lockDataDir(dir, 'server');
    expect(JSON.parse(fs.readFileSync(`${dir}.lock`, 'utf8'))).toMatchObject({ pid: process.pid, role: 'server', hostname: os.hostname() });
    let refused: unknown;
    try {
      lockDataDir(dir, 'cli init');
    } catch (err) {
      refused = err;
    }
    expect(refused).toBeInstanceOf(DataDirLockedError);
    expect((refused as Error).message).toMatch(
      new RegExp(`^the server is running on ${path.dirname(dir).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(pid ${process.pid}, since .*\\); stop it first, or use DATABASE_URL`),
    );
    first.release();
    expect(fs.existsSync(`${dir}.lock`)).toBe(false);
    const second = lockDataDir(dir, 'cli init');
    expect(second.tookOverFrom).toBeNull();
    second.release();
  });

  it('takes over a lock whose process is gone', () => {
    const dir = scratch();
    const pid = deadPid();
    writeLock(dir, { pid, role: 'server' });
    const lock = lockDataDir(dir, 'worker');
    expect(lock.tookOverFrom).toMatchObject({ owner: { pid }, reason: `pid ${pid} is not running` });
    expect(JSON.parse(fs.readFileSync(`${dir}.lock`, 'utf8'))).toMatchObject({ pid: process.pid, role: 'worker', token: lock.owner.token });
    lock.release();
  });

  it.runIf(fs.existsSync('/proc/self/stat'))('takes over a lock whose pid is alive but another process (a reused pid), and one of a previous boot', () => {
    const dir = scratch();
    writeLock(dir, { pid: process.pid, proc_start: '1' });
    const lock = lockDataDir(dir, 'server');
    expect(lock.tookOverFrom?.reason).toBe(`pid ${process.pid} is another process now`);
    lock.release();

    writeLock(dir, { pid: process.pid, boot_id: '00000000-0000-0000-0000-000000000000' });
    const again = lockDataDir(dir, 'server');
    expect(again.tookOverFrom?.reason).toBe('the machine has restarted since');
    again.release();
  });

  it('never takes over a lock of another host: the message says which file to remove', () => {
    const dir = scratch();
    writeLock(dir, { pid: deadPid(), hostname: 'some-other-host' });
    expect(() => lockDataDir(dir, 'server')).toThrow(
      new RegExp(`on host some-other-host.*remove ${`${dir}.lock`.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} if that host is not using this directory`),
    );
    expect(JSON.parse(fs.readFileSync(`${dir}.lock`, 'utf8')).hostname).toBe('some-other-host');
  });

  it('releases only its own lock: one another process took over stays', () => {
    const dir = scratch();
    const lock = lockDataDir(dir, 'server');
    writeLock(dir, { pid: process.pid, token: 'the new holder' });
    lock.release();
    expect(JSON.parse(fs.readFileSync(`${dir}.lock`, 'utf8')).token).toBe('the new holder');
  });

  it('openDatabase on PGlite is refused before it touches the database directory', async () => {
    const dir = scratch();
    const held = lockDataDir(dir, 'server');
    try {
      await expect(openDatabase({ pgliteDir: dir, poolMax: 1, role: 'cli migrate' })).rejects.toBeInstanceOf(DataDirLockedError);
      expect(fs.existsSync(dir)).toBe(false); // PGlite never created (or opened) it
    } finally {
      held.release();
    }
  });
});
