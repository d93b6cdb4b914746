/**
 * Jobs benchmark (issue #5): the real server and worker as child processes,
 * driven over loopback HTTP.
 *
 *  1. Upload -> ready latency under a steady upload load (PostgreSQL + Redis,
 *     one `src/worker.ts` process): uploads of distinct 10 KB text files at a
 *     fixed rate (open loop); for each, the time from the upload's 201 answer
 *     to its `processed_at` (the worker's commit), p50 / p99.
 *  2. Validations per second per worker, 10 KB files: N pending documents with
 *     their outbox jobs written straight into the database (bytes in the upload
 *     folder), then one worker started; rate between its first and last
 *     validation, and per CPU-second of the worker process.
 *  3. The embedded default (PGlite, no Redis, the runner inside the API): the
 *     same latency measure at a lower rate (read back through the API).
 *
 * Targets: p50 < 100 ms, p99 < 1 s; >= 500 validations/s per worker.
 *
 *   npx tsx bench/jobs.ts [--rate 50] [--seconds 15] [--docs 4000] [--concurrency 16]
 *                         [--embedded-rate 30] [--embedded-seconds 8] [--skip-embedded]
 *
 * Environment: BENCH_DATABASE_URL (or TEST_DATABASE_URL; default
 * postgres://postgres@127.0.0.1:5432/postgres), REDIS_URL (default redis://127.0.0.1:6379).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import pg from 'pg';
import { fileKey } from '../src/storage/blob-store.js';
import { createScratchDatabase, type ScratchDatabase } from './lib/pg.js';
import { multipartFactory } from './lib/multipart.js';
import { cpuTimeMs, freePort, startServer, type BenchServer } from './lib/server.js';
import { fmtInt, fmtMs, table } from './lib/report.js';

const { values: opts } = parseArgs({
  options: {
    rate: { type: 'string', default: '50' },
    seconds: { type: 'string', default: '15' },
    docs: { type: 'string', default: '4000' },
    concurrency: { type: 'string', default: '16' },
    'embedded-rate': { type: 'string', default: '30' },
    'embedded-seconds': { type: 'string', default: '8' },
    'skip-embedded': { type: 'boolean', default: false },
  },
});
const RATE = Math.max(1, Number(opts.rate) || 50);
const SECONDS = Math.max(1, Number(opts.seconds) || 15);
const DOCS = Math.max(10, Number(opts.docs) || 4000);
const CONCURRENCY = Math.max(1, Number(opts.concurrency) || 16);
const EMB_RATE = Math.max(1, Number(opts['embedded-rate']) || 30);
const EMB_SECONDS = Math.max(1, Number(opts['embedded-seconds']) || 8);
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const FILE_SIZE = 10 * 1024;
const P50_TARGET = 100;
const P99_TARGET = 1000;
const RATE_TARGET = 500;
const HARD_DEADLINE_MS = 5 * 60_000;

const log = (msg: string) => console.log(`[bench:jobs] ${msg}`);

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

interface Account {
  token: string;
  tenantId: string;
  userId: string;
}

async function api(base: string, method: string, url: string, body?: unknown, token?: string): Promise<{ status: number; json: any }> {
  const res = await fetch(`${base}${url}`, {
    method,
    headers: { ...(body ? { 'content-type': 'application/json' } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

async function account(base: string): Promise<Account> {
  const email = `bench.jobs.${crypto.randomBytes(6).toString('hex')}@example.com`;
  const password = 'correct horse battery staple';
  const reg = await api(base, 'POST', '/api/auth/register', { email, password, organization_name: `Bench jobs ${crypto.randomBytes(4).toString('hex')}` });
  if (reg.status !== 201) throw new Error(`register failed: ${reg.status} ${JSON.stringify(reg.json)}`);
  const login = await api(base, 'POST', '/api/auth/login', { email, password });
  if (login.status !== 200) throw new Error(`login failed: ${login.status} ${JSON.stringify(login.json)}`);
  return { token: login.json.access_token, tenantId: login.json.organization_id ?? reg.json.organization_id, userId: login.json.user_id };
}

interface Uploaded {
  id: string;
  answeredAt: number;
  uploadMs: number;
}

/** Open-loop uploads at `rate`/s for `seconds`; each request is sent on schedule whatever the previous ones do. */
async function steadyUploads(base: string, acct: Account, rate: number, seconds: number): Promise<{ done: Uploaded[]; failed: number }> {
  const body = multipartFactory({ size: FILE_SIZE, mime: 'text/plain', ext: 'txt' });
  const total = Math.round(rate * seconds);
  const done: Uploaded[] = [];
  let failed = 0;
  const inflight: Promise<void>[] = [];
  const t0 = performance.now();
  for (let i = 0; i < total; i++) {
    const due = t0 + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const payload = body.next();
    const sent = performance.now();
    inflight.push(
      fetch(`${base}/api/tenants/${acct.tenantId}/documents`, {
        method: 'POST',
        headers: { authorization: `Bearer ${acct.token}`, 'content-type': body.contentType },
        body: payload as unknown as Blob,
      })
        .then(async (res) => {
          const answeredAt = Date.now();
          const json = (await res.json()) as { id?: string };
          if (res.status !== 201 || !json.id) failed += 1;
          else done.push({ id: json.id, answeredAt, uploadMs: performance.now() - sent });
        })
        .catch(() => {
          failed += 1;
        }),
    );
  }
  await Promise.all(inflight);
  return { done, failed };
}

function latencySummary(rows: Array<{ answeredAt: number; processedAt: number }>) {
  const lat = rows.map((r) => Math.max(0, r.processedAt - r.answeredAt)).sort((a, b) => a - b);
  return { p50: percentile(lat, 50), p90: percentile(lat, 90), p99: percentile(lat, 99), max: lat[lat.length - 1] };
}

interface WorkerProc {
  proc: ChildProcess;
  pid: number;
  output(): string;
  stop(): Promise<void>;
}

async function startWorker(env: Record<string, string>): Promise<WorkerProc> {
  const port = await freePort();
  const nodeArgs = process.env.BENCH_WORKER_NODE_ARGS ? process.env.BENCH_WORKER_NODE_ARGS.split(' ') : [];
  const proc = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', 'src/worker.ts'], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env, WORKER_METRICS_PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const collect = (d: Buffer) => {
    out += d.toString();
    if (out.length > 100_000) out = out.slice(-50_000);
  };
  proc.stdout!.on('data', collect);
  proc.stderr!.on('data', collect);
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`the worker exited (${proc.exitCode}):\n${out}`);
    try {
      const res = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(1_000) });
      if (res.ok) break;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`the worker did not start:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    proc,
    pid: proc.pid!,
    output: () => out,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(t);
    },
  };
}

async function waitProcessed(client: pg.Client, ids: string[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await client.query(`SELECT count(*)::int AS n FROM documents WHERE id = ANY($1::uuid[]) AND status = 'pending'`, [ids]);
    if (r.rows[0].n === 0) return;
    if (Date.now() > deadline) throw new Error(`${r.rows[0].n} documents still pending after ${timeoutMs} ms`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

/** Pending documents with their outbox jobs, written directly (what N uploads leave behind). */
async function seedDocuments(client: pg.Client, uploadFolder: string, acct: Account, n: number): Promise<string[]> {
  const ids: string[] = [];
  const template = crypto.randomBytes(FILE_SIZE).toString('base64').slice(0, FILE_SIZE);
  const batch = 500;
  for (let start = 0; start < n; start += batch) {
    const rows: Array<{ doc: string; file: string; sha: string; md5: string; key: string }> = [];
    for (let i = start; i < Math.min(n, start + batch); i++) {
      const content = Buffer.from(`seed ${i} ${crypto.randomUUID()}\n${template}`.slice(0, FILE_SIZE));
      const sha = crypto.createHash('sha256').update(content).digest('hex');
      const md5 = crypto.createHash('md5').update(content).digest('hex');
      const key = fileKey(acct.tenantId, sha);
      const file = path.join(uploadFolder, ...key.split('/'));
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, content);
      rows.push({ doc: crypto.randomUUID(), file: crypto.randomUUID(), sha, md5, key });
    }
    await client.query('BEGIN');
    await client.query(
      `INSERT INTO files (id, tenant_id, sha256, md5, size, storage_key)
       SELECT unnest($1::uuid[]), $2::uuid, unnest($3::text[]), unnest($4::text[]), ${FILE_SIZE}, unnest($5::text[])`,
      [rows.map((r) => r.file), acct.tenantId, rows.map((r) => r.sha), rows.map((r) => r.md5), rows.map((r) => r.key)],
    );
    await client.query(
      `INSERT INTO documents (id, tenant_id, file_id, filename, mime_type, size, user_id, uploaded_by_email)
       SELECT d, $2::uuid, f, 'seed.txt', 'text/plain', ${FILE_SIZE}, $3::uuid, 'bench@example.com'
       FROM unnest($1::uuid[], $4::uuid[]) AS t(d, f)`,
      [rows.map((r) => r.doc), acct.tenantId, acct.userId, rows.map((r) => r.file)],
    );
    await client.query(
      `INSERT INTO outbox (tenant_id, kind, topic, payload)
       SELECT $2::uuid, 'job', 'validate_document', jsonb_build_object('document_id', d) FROM unnest($1::uuid[]) AS d`,
      [rows.map((r) => r.doc), acct.tenantId],
    );
    await client.query('COMMIT');
    ids.push(...rows.map((r) => r.doc));
  }
  return ids;
}

type Row = [string, string, string, string];
const results: Row[] = [];
const ratio = (value: number, target: number, lowerIsBetter: boolean) =>
  Number.isFinite(value) ? `${(lowerIsBetter ? value / target : value / target).toFixed(2)}x of target${(lowerIsBetter ? value <= target : value >= target) ? ' (met)' : ' (MISSED)'}` : '—';

async function main(): Promise<void> {
  const hard = setTimeout(() => {
    console.error('[bench:jobs] hard deadline reached; exiting');
    process.exit(1);
  }, HARD_DEADLINE_MS);
  hard.unref();

  let db: ScratchDatabase | null = null;
  let server: BenchServer | null = null;
  let worker: WorkerProc | null = null;
  let embedded: BenchServer | null = null;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-bench-jobs-'));
  const prefix = `tbbench_${crypto.randomBytes(4).toString('hex')}:`;
  let pgc: pg.Client | null = null;
  try {
    // ---- 1. PostgreSQL + Redis + one worker process ------------------------------------------
    db = await createScratchDatabase('tb_bench_jobs');
    const uploadFolder = path.join(dataDir, 'uploads');
    const env: Record<string, string> = {
      NODE_ENV: 'development',
      LOG_LEVEL: 'warn',
      DATABASE_URL: db.url,
      REDIS_URL,
      REDIS_PREFIX: prefix,
      DATA_DIR: dataDir,
      UPLOAD_FOLDER: uploadFolder,
      STORAGE_QUOTA_MB: '1000000',
      JOB_CONCURRENCY: String(CONCURRENCY),
    };
    log(`server + worker on PostgreSQL ${db.name} and Redis (prefix ${prefix})`);
    server = await startServer({ env });
    worker = await startWorker(env);
    const acct = await account(server.url);
    pgc = new pg.Client({ connectionString: db.url });
    await pgc.connect();

    log('warm-up: 30 uploads');
    const warm = await steadyUploads(server.url, acct, 30, 1);
    await waitProcessed(pgc, warm.done.map((u) => u.id), 30_000);

    log(`steady load: ${RATE} uploads/s of ${FILE_SIZE / 1024} KB for ${SECONDS} s`);
    const cpu0 = cpuTimeMs(worker.pid);
    const load = await steadyUploads(server.url, acct, RATE, SECONDS);
    await waitProcessed(pgc, load.done.map((u) => u.id), 60_000);
    const cpu1 = cpuTimeMs(worker.pid);
    const processed = await pgc.query<{ id: string; t: string; status: string }>(
      `SELECT id, (extract(epoch FROM processed_at) * 1000)::float8 AS t, status FROM documents WHERE id = ANY($1::uuid[])`,
      [load.done.map((u) => u.id)],
    );
    const at = new Map(processed.rows.map((r) => [r.id, Number(r.t)]));
    const notReady = processed.rows.filter((r) => r.status !== 'ready').length;
    const lat = latencySummary(load.done.map((u) => ({ answeredAt: u.answeredAt, processedAt: at.get(u.id) ?? NaN })));
    const up = load.done.map((u) => u.uploadMs).sort((a, b) => a - b);
    log(
      `${load.done.length} uploads answered (${load.failed} failed), ${notReady} not ready; upload answer p50 ${fmtMs(percentile(up, 50))} p99 ${fmtMs(percentile(up, 99))}; ` +
        `worker CPU ${cpu0 !== null && cpu1 !== null ? `${Math.round(((cpu1 - cpu0) / (SECONDS * 1000)) * 100)} %` : '—'}`,
    );
    results.push([`upload answered -> ready, p50 (PG + Redis, ${RATE}/s)`, fmtMs(lat.p50), `< ${P50_TARGET} ms`, ratio(lat.p50, P50_TARGET, true)]);
    results.push([`upload answered -> ready, p99 (PG + Redis, ${RATE}/s)`, fmtMs(lat.p99), `< ${P99_TARGET} ms`, ratio(lat.p99, P99_TARGET, true)]);
    results.push(['  (p90 / max)', `${fmtMs(lat.p90)} / ${fmtMs(lat.max)}`, '', '']);
    results.push(['  (the uploads themselves: answer p50 / p99)', `${fmtMs(percentile(up, 50))} / ${fmtMs(percentile(up, 99))}`, '', `${load.done.length} uploads, ${load.failed} failed`]);

    // ---- 2. validations per second, one worker ---------------------------------------------
    await worker.stop();
    worker = null;
    log(`seeding ${DOCS} pending 10 KB documents with their jobs`);
    const ids = await seedDocuments(pgc, uploadFolder, acct, DOCS);
    log(`starting one worker (JOB_CONCURRENCY=${CONCURRENCY})`);
    worker = await startWorker(env);
    const wallStart = Date.now();
    const cpuA = cpuTimeMs(worker.pid);
    await waitProcessed(pgc, ids, 120_000);
    const wallMs = Date.now() - wallStart;
    const cpuB = cpuTimeMs(worker.pid);
    const span = await pgc.query<{ first: string; last: string; ready: number }>(
      `SELECT (extract(epoch FROM min(processed_at)) * 1000)::float8 AS first, (extract(epoch FROM max(processed_at)) * 1000)::float8 AS last,
              count(*) FILTER (WHERE status = 'ready')::int AS ready
       FROM documents WHERE id = ANY($1::uuid[])`,
      [ids],
    );
    const spanMs = Number(span.rows[0].last) - Number(span.rows[0].first);
    const perSec = ((ids.length - 1) / spanMs) * 1000;
    const cpuSec = cpuA !== null && cpuB !== null ? (cpuB - cpuA) / 1000 : NaN;
    log(`${span.rows[0].ready}/${ids.length} ready; first->last ${fmtMs(spanMs)}, wall (incl. worker start-up) ${fmtMs(wallMs)}; worker CPU ${cpuSec.toFixed(1)} s`);
    results.push([`validations/s, one worker (10 KB, ${DOCS} jobs)`, fmtInt(perSec), `>= ${RATE_TARGET}/s`, ratio(perSec, RATE_TARGET, false)]);
    results.push(['  per CPU-second of the worker process', fmtInt(ids.length / cpuSec), '', `(${os.cpus().length} CPUs shared with PG, Redis, API)`]);
    await worker.stop();
    worker = null;
    await server.stop();
    server = null;

    // ---- 3. the embedded default --------------------------------------------------------------
    if (!opts['skip-embedded']) {
      const embDir = path.join(dataDir, 'embedded');
      log(`embedded default (PGlite, runner in the API): ${EMB_RATE} uploads/s for ${EMB_SECONDS} s`);
      embedded = await startServer({ env: { NODE_ENV: 'development', LOG_LEVEL: 'warn', DATA_DIR: embDir, STORAGE_QUOTA_MB: '1000000' } });
      const eAcct = await account(embedded.url);
      await steadyUploads(embedded.url, eAcct, 10, 1);
      const eLoad = await steadyUploads(embedded.url, eAcct, EMB_RATE, EMB_SECONDS);
      const pending = new Map(eLoad.done.map((u) => [u.id, u]));
      const got: Array<{ answeredAt: number; processedAt: number }> = [];
      const deadline = Date.now() + 60_000;
      while (pending.size > 0 && Date.now() < deadline) {
        for (let page = 1; ; page++) {
          const res = await api(embedded.url, 'GET', `/api/tenants/${eAcct.tenantId}/documents?per_page=100&page=${page}`, undefined, eAcct.token);
          for (const d of res.json.documents as Array<{ id: string; status: string; processed_at: string | null }>) {
            const u = pending.get(d.id);
            if (u && d.status !== 'pending' && d.processed_at) {
              got.push({ answeredAt: u.answeredAt, processedAt: Date.parse(d.processed_at) });
              pending.delete(d.id);
            }
          }
          if (page >= res.json.pages) break;
        }
        if (pending.size > 0) await new Promise((r) => setTimeout(r, 200));
      }
      const eLat = latencySummary(got);
      log(`${eLoad.done.length} uploads answered (${eLoad.failed} failed), ${pending.size} still pending`);
      results.push([`upload answered -> ready, p50 (embedded, ${EMB_RATE}/s)`, fmtMs(eLat.p50), `< ${P50_TARGET} ms`, ratio(eLat.p50, P50_TARGET, true)]);
      results.push([`upload answered -> ready, p99 (embedded, ${EMB_RATE}/s)`, fmtMs(eLat.p99), `< ${P99_TARGET} ms`, ratio(eLat.p99, P99_TARGET, true)]);
      await embedded.stop();
      embedded = null;
    }

    console.log(`\n${table(['measure', 'value', 'target', 'ratio'], results)}\n`);
  } finally {
    if (worker) await worker.stop().catch(() => undefined);
    if (server) await server.stop().catch(() => undefined);
    if (embedded) await embedded.stop().catch(() => undefined);
    if (pgc) await pgc.end().catch(() => undefined);
    if (db) await db.drop().catch((err) => console.error(`could not drop ${db?.name}: ${err.message}`));
    const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await redis.connect();
      const keys = await redis.keys(`${prefix}*`);
      for (let i = 0; i < keys.length; i += 500) await redis.del(...keys.slice(i, i + 500));
    } catch {
      // Redis cleanup is best effort
    } finally {
      redis.disconnect();
    }
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
