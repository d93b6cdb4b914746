/**
 * Documents benchmark (issue #4): the real server as a child process, started as
 * `npm start` starts it (bench/lib/server.ts: package.json's start flags, dist/) (local-disk
 * storage under a temp DATA_DIR; PostgreSQL scratch database + Redis, so no job
 * runs inside the API process and the figures are the upload/download path alone),
 * driven over loopback HTTP with streaming bodies (never app.inject):
 *
 *  - upload and download throughput for 1 MB and 200 MB files;
 *  - the 200 MB upload against `cp` of the same file on the same disk (ratio);
 *  - the server's peak RSS during a 1 GB upload (VmHWM reset + VmRSS sampling);
 *  - an identical re-upload of 200 MB stores no new bytes (upload folder usage before/after).
 *
 * Targets: peak RSS < 150 MB for any size; 200 MB upload >= 50 % of cp.
 *
 *   npx tsx bench/documents.ts [--small-count 30] [--big-mb 200] [--huge-mb 1024] [--runs 3] [--cpu-prof DIR] [--node-args='--max-semi-space-size=8']
 *
 * Environment: BENCH_DATABASE_URL (or TEST_DATABASE_URL; default
 * postgres://postgres@127.0.0.1:5432/postgres), REDIS_URL (default redis://127.0.0.1:6379);
 * BENCH_SERVER_<NAME>=value is passed to the server as <NAME> (e.g. BENCH_SERVER_MALLOC_ARENA_MAX).
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { createScratchDatabase, withClient, type ScratchDatabase } from './lib/pg.js';
import { memoryOf, startServer, trackPeakRss, type BenchServer } from './lib/server.js';
import { table } from './lib/report.js';

const { values: opts } = parseArgs({
  options: {
    'small-count': { type: 'string', default: '30' },
    'big-mb': { type: 'string', default: '200' },
    'huge-mb': { type: 'string', default: '1024' },
    runs: { type: 'string', default: '3' },
    'cpu-prof': { type: 'string' },
    'node-args': { type: 'string', default: '' },
  },
});
const SMALL_COUNT = Math.max(1, Number(opts['small-count']) || 30);
const BIG_MB = Math.max(1, Number(opts['big-mb']) || 200);
const HUGE_MB = Math.max(1, Number(opts['huge-mb']) || 1024);
const RUNS = Math.max(1, Number(opts.runs) || 3);
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const MB = 1024 * 1024;
const RSS_TARGET = 150 * MB;
const CP_RATIO_TARGET = 0.5;
const HARD_DEADLINE_MS = 6 * 60_000;

const log = (msg: string) => console.log(`[bench:documents] ${msg}`);
const mbps = (bytes: number, ms: number) => bytes / MB / (ms / 1000);
const fmtRate = (r: number) => `${r.toFixed(0)} MB/s`;
const fmtMiB = (b: number) => `${(b / MB).toFixed(1)} MB`;

/** A file of `mb` MiB: one random MiB repeated, with a unique first line (distinct hash per file). */
function makeFile(dir: string, name: string, mb: number): string {
  const file = path.join(dir, name);
  const block = crypto.randomBytes(MB);
  const header = Buffer.from(`${name} ${crypto.randomUUID()}\n`);
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, header);
    for (let i = 0; i < mb; i++) fs.writeSync(fd, block, 0, i === 0 ? MB - header.length : MB);
  } finally {
    fs.closeSync(fd);
  }
  return file;
}

/** Stream `file` as multipart/form-data (field `file`) with node:http; resolves with the status, body and time. */
function uploadFile(baseUrl: string, token: string, tid: string, file: string, filename: string): Promise<{ status: number; body: any; ms: number; size: number }> {
  const boundary = `----tbbench${crypto.randomBytes(12).toString('hex')}`;
  const head = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${filename}"\r\nContent-Type: application/octet-stream\r\n\r\n`,
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  const size = fs.statSync(file).size;
  const url = new URL(`/api/tenants/${tid}/documents`, baseUrl);
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${token}`,
        'content-type': `multipart/form-data; boundary=${boundary}`,
        'content-length': String(head.length + size + tail.length),
      },
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let body: unknown = text;
        try { body = JSON.parse(text); } catch { /* not JSON */ }
        resolve({ status: res.statusCode ?? 0, body, ms: performance.now() - t0, size });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.write(head);
    pipeline(fs.createReadStream(file, { highWaterMark: 1024 * 1024 }), async function* (source) {
      for await (const chunk of source) yield chunk;
      yield tail;
    }, req).catch(reject);
  });
}

/** Download through fetch, consuming the stream chunk by chunk (nothing buffered); verifies the length. */
async function download(baseUrl: string, token: string, tid: string, id: string, expected: number): Promise<number> {
  const t0 = performance.now();
  const res = await fetch(`${baseUrl}/api/tenants/${tid}/documents/${id}/download`, { headers: { authorization: `Bearer ${token}` } });
  if (res.status !== 200 || !res.body) throw new Error(`download: ${res.status} ${await res.text()}`);
  let n = 0;
  for await (const chunk of res.body) n += (chunk as Uint8Array).byteLength;
  if (n !== expected) throw new Error(`download: got ${n} bytes, expected ${expected}`);
  return performance.now() - t0;
}

/** Bytes used under a directory (du -sb), staging excluded. */
function diskUsage(dir: string): number {
  if (!fs.existsSync(dir)) return 0;
  return Number(execFileSync('du', ['-sb', '--exclude=.tmp', dir], { encoding: 'utf8' }).split(/\s/)[0]);
}

async function api(baseUrl: string, method: string, url: string, body?: unknown, token?: string) {
  const res = await fetch(`${baseUrl}${url}`, {
    method,
    headers: { ...(body ? { 'content-type': 'application/json' } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: await res.json().catch(() => null) };
}

async function main() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-bench-docs-'));
  const dataDir = path.join(work, 'data');
  const srcDir = path.join(work, 'src');
  fs.mkdirSync(srcDir, { recursive: true });
  const uploadFolder = path.join(dataDir, 'uploads');
  const prefix = `tbbenchdocs${crypto.randomBytes(4).toString('hex')}:`;
  let db: ScratchDatabase | null = null;
  let server: BenchServer | null = null;

  const cleanup = async () => {
    await server?.stop().catch(() => undefined);
    server = null;
    await db?.drop().catch(() => undefined);
    db = null;
    const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await redis.connect();
      const keys = await redis.keys(`${prefix}*`);
      if (keys.length) await redis.del(...keys);
    } catch { /* Redis gone: nothing to clean */ }
    redis.disconnect();
    fs.rmSync(work, { recursive: true, force: true });
  };
  const onSignal = () => void cleanup().finally(() => process.exit(130));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const deadline = setTimeout(() => {
    console.error(`[bench:documents] over ${HARD_DEADLINE_MS / 60_000} min: stopping`);
    void cleanup().finally(() => process.exit(1));
  }, HARD_DEADLINE_MS);
  deadline.unref();

  try {
    const t0 = Date.now();
    log(`preparing files in ${srcDir}: ${SMALL_COUNT} x 1 MB, ${RUNS} x ${BIG_MB} MB, ${HUGE_MB} MB`);
    const small = Array.from({ length: SMALL_COUNT }, (_, i) => makeFile(srcDir, `small-${i}.bin`, 1));
    const bigs = Array.from({ length: RUNS }, (_, i) => makeFile(srcDir, `big-${i}.bin`, BIG_MB));
    const huge = makeFile(srcDir, 'huge.bin', HUGE_MB);
    // Flush dirty pages before measuring: writeback throttling of earlier writes would slow whatever runs next.
    const settle = () => execFileSync('sync');
    settle();

    db = await createScratchDatabase('tb_bench_docs');
    server = await startServer({ env: {
        NODE_ENV: 'production',
        SECRET_KEY: crypto.randomBytes(32).toString('base64url'),
        JWT_SECRET_KEY: crypto.randomBytes(32).toString('base64url'),
        LOG_LEVEL: 'warn',
        AUTO_MIGRATE: 'true',
        DATABASE_URL: db.url,
        REDIS_URL,
        REDIS_PREFIX: prefix,
        DATA_DIR: dataDir,
        UPLOAD_FOLDER: uploadFolder,
        MAX_FILE_SIZE_MB: String(Math.max(HUGE_MB, BIG_MB) + 1),
        STORAGE_QUOTA_MB: '10000000',
      },
      nodeArgs: [
        ...(opts['node-args'] ? opts['node-args'].split(/\s+/).filter(Boolean) : []),
        ...(opts['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(opts['cpu-prof'])}`] : []),
      ],
    });
    const srv = server;
    const idleRss = memoryOf(srv.pid)?.rss ?? NaN;
    log(`server pid ${srv.pid} at ${srv.url}, idle RSS ${fmtMiB(idleRss)}`);

    const email = `bench.${Date.now()}@example.com`;
    const reg = await api(srv.url, 'POST', '/api/auth/register', { email, password: 'correct horse battery', organization_name: `Bench ${prefix}` });
    if (reg.status !== 201) throw new Error(`register: ${reg.status} ${JSON.stringify(reg.body)}`);
    const login = await api(srv.url, 'POST', '/api/auth/login', { email, password: 'correct horse battery' });
    const token: string = login.body.access_token;
    const tid: string = reg.body.organization_id;
    const markReady = (ids: string[]) =>
      withClient(db!.url, (c) => c.query(`UPDATE documents SET status = 'ready', processed_at = now() WHERE id = ANY($1::uuid[])`, [ids]));

    const rows: string[][] = [];
    const verdicts: string[] = [];

    // 1 MB uploads and downloads, sequential.
    const smallIds: string[] = [];
    let smallUpMs = 0;
    const smallRss = trackPeakRss(srv.pid, 50);
    for (const f of small) {
      const r = await uploadFile(srv.url, token, tid, f, path.basename(f));
      if (r.status !== 201) throw new Error(`upload 1 MB: ${r.status} ${JSON.stringify(r.body)}`);
      smallUpMs += r.ms;
      smallIds.push(r.body.id);
    }
    const smallPeak = smallRss.stop().peak;
    await markReady(smallIds);
    let smallDownMs = 0;
    for (const id of smallIds) smallDownMs += await download(srv.url, token, tid, id, MB);
    await new Promise((r) => setTimeout(r, 500));
    const warmRss = memoryOf(srv.pid)?.rss ?? NaN; // after warm-up: routes, schemas and JIT compiled
    const smallBytes = SMALL_COUNT * MB;
    rows.push(['upload 1 MB', `${SMALL_COUNT}`, fmtRate(mbps(smallBytes, smallUpMs)), `${(smallUpMs / SMALL_COUNT).toFixed(1)} ms/file`, `peak RSS ${fmtMiB(smallPeak)}`]);
    rows.push(['download 1 MB', `${SMALL_COUNT}`, fmtRate(mbps(smallBytes, smallDownMs)), `${(smallDownMs / SMALL_COUNT).toFixed(1)} ms/file`, '']);

    // 200 MB, best of RUNS distinct files (the machine may be shared): cp on the same disk, upload, download;
    // then an identical re-upload of the first file.
    fs.mkdirSync(uploadFolder, { recursive: true });
    const bigSize = fs.statSync(bigs[0]).size;
    /** Best time (ms) over the big files of copying one into `name` on the upload disk with `copy`. */
    const bestCopyMs = (name: string, copy: (from: string, to: string) => void) => {
      let best = Infinity;
      for (const f of bigs) {
        const target = path.join(dataDir, name);
        settle();
        const t = performance.now();
        copy(f, target);
        best = Math.min(best, performance.now() - t);
        fs.rmSync(target);
      }
      return best;
    };
    const cpMs = bestCopyMs('cp-copy.bin', (from, to) => execFileSync('cp', [from, to]));
    const cpRate = mbps(bigSize, cpMs);
    // The upload is durable (the local store fsyncs the file before the row commits): the same for cp.
    const cpSyncMs = bestCopyMs('cp-sync-copy.bin', (from, to) => {
      execFileSync('cp', [from, to]);
      execFileSync('sync', [to]);
    });
    const cpSyncRate = mbps(bigSize, cpSyncMs);
    // A user-space streaming copy (read + write, 1 MB blocks), as the server does.
    const ddMs = bestCopyMs('dd-copy.bin', (from, to) => execFileSync('dd', [`if=${from}`, `of=${to}`, 'bs=1M', 'status=none']));
    // What any upload here must do at least once per byte: SHA-256 and MD5 on one thread.
    const sample = fs.readFileSync(bigs[0]).subarray(0, 64 * MB);
    let hashMs = Infinity;
    for (let i = 0; i < 3; i++) {
      const t = performance.now();
      crypto.createHash('sha256').update(sample).digest();
      crypto.createHash('md5').update(sample).digest();
      hashMs = Math.min(hashMs, performance.now() - t);
    }
    const hashRate = mbps(sample.length, hashMs);

    const usageBefore = diskUsage(uploadFolder);
    const bigRss = trackPeakRss(srv.pid);
    const ups: Array<{ ms: number; body: any }> = [];
    for (const [i, f] of bigs.entries()) {
      settle();
      const up = await uploadFile(srv.url, token, tid, f, `big-${i}.bin`);
      if (up.status !== 201) throw new Error(`upload ${BIG_MB} MB: ${up.status} ${JSON.stringify(up.body)}`);
      ups.push(up);
    }
    const bigPeak = bigRss.stop().peak;
    const upMs = Math.min(...ups.map((u) => u.ms));
    const upRate = mbps(bigSize, upMs);
    const usageAfterFirst = diskUsage(uploadFolder);
    await markReady(ups.map((u) => u.body.id));
    let downMs = Infinity;
    for (const u of ups) downMs = Math.min(downMs, await download(srv.url, token, tid, u.body.id, bigSize));

    settle();
    const again = await uploadFile(srv.url, token, tid, bigs[0], 'big-again.bin');
    if (again.status !== 201) throw new Error(`re-upload: ${again.status} ${JSON.stringify(again.body)}`);
    const usageAfterSecond = diskUsage(uploadFolder);
    const sameFile = again.body.file_id === ups[0].body.file_id;

    const n = String(bigs.length);
    rows.push([`cp ${BIG_MB} MB (same disk)`, n, fmtRate(cpRate), `${(cpMs / 1000).toFixed(2)} s (best)`, 'in-kernel copy (copy_file_range)']);
    rows.push([`cp + sync ${BIG_MB} MB (same disk)`, n, fmtRate(cpSyncRate), `${(cpSyncMs / 1000).toFixed(2)} s (best)`, 'the copy made durable, as an upload is']);
    rows.push([`dd bs=1M ${BIG_MB} MB (same disk)`, n, fmtRate(mbps(bigSize, ddMs)), `${(ddMs / 1000).toFixed(2)} s (best)`, 'user-space read + write']);
    rows.push(['SHA-256 + MD5, one thread', '—', fmtRate(hashRate), '—', 'the ceiling of any upload that hashes on one core']);
    rows.push([
      `upload ${BIG_MB} MB`, n, fmtRate(upRate), `${(upMs / 1000).toFixed(2)} s (best)`,
      `${((upRate / cpRate) * 100).toFixed(0)} % of cp, ${((upRate / cpSyncRate) * 100).toFixed(0)} % of cp + sync, ` +
        `${((upRate / mbps(bigSize, ddMs)) * 100).toFixed(0)} % of dd, ` +
        `${((upRate / hashRate) * 100).toFixed(0)} % of the hash ceiling; peak RSS ${fmtMiB(bigPeak)}`,
    ]);
    rows.push([`download ${BIG_MB} MB`, n, fmtRate(mbps(bigSize, downMs)), `${(downMs / 1000).toFixed(2)} s (best)`, '']);
    rows.push([
      `identical re-upload ${BIG_MB} MB`, '1', fmtRate(mbps(bigSize, again.ms)), `${(again.ms / 1000).toFixed(2)} s`,
      `stored bytes +${usageAfterSecond - usageAfterFirst} (${n} first uploads +${fmtMiB(usageAfterFirst - usageBefore)}); same file_id: ${sameFile}`,
    ]);

    // 1 GB: peak RSS of the server while it streams.
    const hugeSize = fs.statSync(huge).size;
    settle();
    const rss = trackPeakRss(srv.pid, 50);
    const hugeUp = await uploadFile(srv.url, token, tid, huge, 'huge.bin');
    const { peak, hwmReset } = rss.stop();
    if (hugeUp.status !== 201) throw new Error(`upload ${HUGE_MB} MB: ${hugeUp.status} ${JSON.stringify(hugeUp.body)}`);
    await markReady([hugeUp.body.id]);
    const hugeRss = trackPeakRss(srv.pid, 50);
    const hugeDownMs = await download(srv.url, token, tid, hugeUp.body.id, hugeSize);
    const hugeDownPeak = hugeRss.stop().peak;
    rows.push([
      `upload ${HUGE_MB} MB`, '1', fmtRate(mbps(hugeSize, hugeUp.ms)), `${(hugeUp.ms / 1000).toFixed(2)} s`,
      `peak RSS ${fmtMiB(peak)}${hwmReset ? '' : ' (sampled)'}`,
    ]);
    rows.push([`download ${HUGE_MB} MB`, '1', fmtRate(mbps(hugeSize, hugeDownMs)), `${(hugeDownMs / 1000).toFixed(2)} s`, `peak RSS ${fmtMiB(hugeDownPeak)}`]);

    const ratio = upRate / cpRate;
    const maxPeak = Math.max(smallPeak, peak, bigPeak, hugeDownPeak);
    verdicts.push(
      `peak RSS (any size) ${fmtMiB(maxPeak)} — idle ${fmtMiB(idleRss)}, warmed up ${fmtMiB(warmRss)}, so streaming adds ` +
        `${fmtMiB(maxPeak - warmRss)} over the warm process; ` +
        `1 MB / ${BIG_MB} MB / ${HUGE_MB} MB uploads peak at ${fmtMiB(smallPeak)} / ${fmtMiB(bigPeak)} / ${fmtMiB(peak)} — ` +
        `target < ${fmtMiB(RSS_TARGET)}: ${maxPeak < RSS_TARGET ? 'MET' : 'NOT MET'}`,
    );
    verdicts.push(
      `${BIG_MB} MB upload / cp = ${(ratio * 100).toFixed(0)} % — target >= ${CP_RATIO_TARGET * 100} %: ${ratio >= CP_RATIO_TARGET ? 'MET' : 'NOT MET'} ` +
        `(against a durable cp + sync: ${((upRate / cpSyncRate) * 100).toFixed(0)} %)`,
    );
    verdicts.push(`identical re-upload stored ${usageAfterSecond - usageAfterFirst} new bytes (same file: ${sameFile}): ${usageAfterSecond === usageAfterFirst && sameFile ? 'MET' : 'NOT MET'}`);

    console.log('');
    console.log(table(['operation', 'files', 'throughput', 'time', 'notes'], rows));
    console.log('');
    for (const v of verdicts) console.log(`  ${v}`);
    console.log(`\n  (${os.cpus().length} CPUs, Node ${process.version}; loopback HTTP, local disk, ${((Date.now() - t0) / 1000).toFixed(0)} s in all)`);
    const problems = srv.output().split('\n').filter((l) => /"level":(50|60)/.test(l));
    if (problems.length) console.log(`\nserver errors:\n${problems.slice(-5).join('\n')}`);
  } finally {
    await cleanup();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
