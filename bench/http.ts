/**
 * HTTP benchmark (issue #6): the real server as a child process on PostgreSQL +
 * Redis (a fresh database, dropped at the end), loaded with autocannon on
 * loopback. Per scenario: requests/s, p50/p99 latency and the server's peak RSS.
 *
 *   npx tsx bench/http.ts [--duration 10] [--only get,list,...] [--connections 64]
 *                         [--list-rows 100000] [--cpu-prof DIR] [--json FILE] [--no-documents]
 *
 * --cpu-prof DIR runs the server with `node --cpu-prof` (the profile is written
 * when it exits); summarise it with `npx tsx bench/lib/profile-summary.ts FILE`.
 *
 * Scenarios: health (baseline, no auth), auth (GET /api/auth/csrf: the bearer
 * authentication path and nothing else), get (authenticated document metadata
 * GET; GET /api/auth/me stands in while the documents routes are absent),
 * pgbench (select-only, the machine's yardstick for `get`), list (a page of a
 * tenant with 100 000 documents), upload (10 KB multipart, each body distinct),
 * login. Environment: BENCH_DATABASE_URL (or TEST_DATABASE_URL; default
 * postgres://postgres@127.0.0.1:5432/postgres), REDIS_URL (default
 * redis://127.0.0.1:6379); BENCH_SERVER_<NAME>=value passes <NAME>=value to the
 * server (e.g. BENCH_SERVER_DB_POOL_MAX=10).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { createScratchDatabase, PG_ADMIN_URL, pgbenchSelectOnly, withClient, type PgbenchResult, type ScratchDatabase } from './lib/pg.js';
import { startServer, treeMemoryOf, type BenchServer } from './lib/server.js';
import { measure, type LoadResult } from './lib/load.js';
import { multipartFactory } from './lib/multipart.js';
import { fmtInt, fmtMb, fmtMs, fmtSec, table } from './lib/report.js';

const SCENARIOS = ['health', 'auth', 'get', 'pgbench', 'list', 'upload', 'login'] as const;
type ScenarioName = (typeof SCENARIOS)[number];

const { values: opts } = parseArgs({
  options: {
    duration: { type: 'string', default: process.env.BENCH_DURATION ?? '10' },
    only: { type: 'string' },
    'cpu-prof': { type: 'string' },
    json: { type: 'string' },
    connections: { type: 'string', default: '64' },
    'list-rows': { type: 'string', default: '100000' },
    /** Behave as if the documents routes were absent (exercises the stand-in path). */
    'no-documents': { type: 'boolean', default: false },
  },
  allowPositionals: false,
});

const DURATION = Math.max(1, Math.min(120, Number(opts.duration) || 10));
const CONNECTIONS = Math.max(1, Math.min(1024, Number(opts.connections) || 64));
const LIST_ROWS = Math.max(1, Math.min(5_000_000, Number(opts['list-rows']) || 100_000));
const selected = new Set<ScenarioName>(
  opts.only ? (opts.only.split(',').map((s) => s.trim()).filter(Boolean) as ScenarioName[]) : SCENARIOS,
);
for (const s of selected) {
  if (!SCENARIOS.includes(s)) {
    console.error(`unknown scenario "${s}"; known: ${SCENARIOS.join(', ')}`);
    process.exit(2);
  }
}
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const HARD_DEADLINE_MS = 15 * 60_000;
const PASSWORD = 'correct horse battery staple';

interface Row {
  scenario: string;
  result?: LoadResult;
  pgbench?: PgbenchResult;
  target: string;
  met: boolean | null;
  note?: string;
}

const rows: Row[] = [];
const notes: string[] = [];
const timings: Array<[string, number]> = [];
const log = (msg: string) => console.log(`[bench:http] ${msg}`);

async function timed<T>(label: string, fn: () => Promise<T>): Promise<T> {
  const t0 = Date.now();
  try {
    return await fn();
  } finally {
    timings.push([label, Date.now() - t0]);
  }
}

async function api(base: string, method: string, url: string, init: { json?: unknown; token?: string; body?: FormData } = {}) {
  const headers: Record<string, string> = {};
  if (init.json !== undefined) headers['content-type'] = 'application/json';
  if (init.token) headers.authorization = `Bearer ${init.token}`;
  const res = await fetch(base + url, {
    method,
    headers,
    body: init.body ?? (init.json === undefined ? undefined : JSON.stringify(init.json)),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  let body: any = text;
  try {
    body = JSON.parse(text);
  } catch {
    // keep the text
  }
  return { status: res.status, body };
}

async function signUp(base: string, tag: string) {
  const email = `bench.${tag}.${crypto.randomBytes(4).toString('hex')}@example.com`;
  const reg = await api(base, 'POST', '/api/auth/register', { json: { email, password: PASSWORD, organization_name: `Bench ${tag} ${crypto.randomBytes(4).toString('hex')}` } });
  if (reg.status !== 201) throw new Error(`register failed: ${reg.status} ${JSON.stringify(reg.body)}`);
  const login = await api(base, 'POST', '/api/auth/login', { json: { email, password: PASSWORD } });
  if (login.status !== 200) throw new Error(`login failed: ${login.status} ${JSON.stringify(login.body)}`);
  return { email, userId: login.body.user_id as string, tenantId: reg.body.organization_id as string, token: login.body.access_token as string };
}

/** The documents routes, found in the OpenAPI document (the paths as the server spells them). */
function documentRoutes(paths: Record<string, Record<string, unknown>>) {
  let collection: string | undefined;
  let item: string | undefined;
  for (const [p, methods] of Object.entries(paths)) {
    if (/^\/api\/tenants\/\{[^}]+\}\/documents\/?$/.test(p)) collection = p;
    if (/^\/api\/tenants\/\{[^}]+\}\/documents\/\{[^}]+\}$/.test(p) && 'get' in methods) item = p;
  }
  const fill = (p: string, ...values: string[]) => {
    let i = 0;
    return p.replace(/\{[^}]+\}/g, () => values[i++]);
  };
  return {
    list: collection && 'get' in paths[collection] ? (tid: string) => `${fill(collection!, tid)}?page=1` : undefined,
    upload: collection && 'post' in paths[collection] ? (tid: string) => fill(collection!, tid) : undefined,
    get: item ? (tid: string, id: string) => fill(item!, tid, id) : undefined,
  };
}

async function checkServices(): Promise<void> {
  try {
    await withClient(PG_ADMIN_URL, (c) => c.query('SELECT 1'));
  } catch (err) {
    throw new Error(`PostgreSQL is not reachable at ${PG_ADMIN_URL} (set BENCH_DATABASE_URL): ${(err as Error).message}`);
  }
  const r = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 3_000, retryStrategy: () => null });
  r.on('error', () => {});
  try {
    await r.connect();
    await r.ping();
  } catch (err) {
    throw new Error(`Redis is not reachable at ${REDIS_URL} (set REDIS_URL): ${(err as Error).message}`);
  } finally {
    r.disconnect();
  }
}

async function deleteRedisPrefix(prefix: string): Promise<number> {
  const r = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 3_000, retryStrategy: () => null });
  r.on('error', () => {});
  let n = 0;
  try {
    await r.connect();
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) n += await r.del(...keys);
    } while (cursor !== '0');
  } finally {
    r.disconnect();
  }
  return n;
}

/** 100 000 documents (each with its own file) in one shared tenant: one INSERT ... SELECT generate_series. */
async function seedDocuments(dbUrl: string, tenantId: string, userId: string, email: string, count: number): Promise<void> {
  await withClient(dbUrl, async (c) => {
    await c.query(
      `WITH f AS (
         INSERT INTO files (tenant_id, sha256, md5, size, storage_key, created_at)
         SELECT $1::uuid, encode(sha256(('bench-' || g)::bytea), 'hex'), md5('bench-' || g), 1024 + (g % 4096),
                'bench/' || g, now() - make_interval(secs => g)
         FROM generate_series(1, $4::int) AS g
         RETURNING id, size, created_at, storage_key
       )
       INSERT INTO documents (tenant_id, file_id, filename, mime_type, size, status, user_id, uploaded_by_email, created_at, updated_at, processed_at)
       SELECT $1::uuid, f.id, 'report-' || substr(f.storage_key, 7) || '.pdf', 'application/pdf', f.size, 'ready', $2::uuid, $3, f.created_at, f.created_at, f.created_at
       FROM f`,
      [tenantId, userId, email, count],
    );
    await c.query(
      `UPDATE tenants SET storage_used_bytes = storage_used_bytes + (SELECT coalesce(sum(size), 0) FROM files WHERE tenant_id = $1) WHERE id = $1`,
      [tenantId],
    );
    await c.query('ANALYZE files');
    await c.query('ANALYZE documents');
  });
}

function verdict(r: LoadResult, t: { minRps?: number; maxP99?: number }): boolean {
  const clean = r.failed <= r.ok * 0.001;
  return clean && (t.minRps === undefined || r.requestsPerSec >= t.minRps) && (t.maxP99 === undefined || r.p99 < t.maxP99);
}

function describeFailures(r: LoadResult): string | undefined {
  if (r.failed === 0) return undefined;
  const codes = Object.entries(r.statusCodes).filter(([c]) => !c.startsWith('2')).map(([c, n]) => `${n}×${c}`);
  return `${r.failed} failed responses/errors${codes.length ? ` (${codes.join(', ')})` : ''}`;
}

async function main(): Promise<number> {
  const started = Date.now();
  await checkServices();
  const runId = `${Date.now().toString(36)}${crypto.randomBytes(3).toString('hex')}`;
  const prefix = `tbbench_${runId}:`;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-bench-'));
  let db: ScratchDatabase | undefined;
  let server: BenchServer | undefined;
  let exitCode = 0;

  const cleanup = async () => {
    const code = await server?.stop().catch(() => null);
    if (server && code !== 0 && code !== null) notes.push(`server exit code ${code}`);
    await db?.drop().catch((err) => console.error(`could not drop ${db?.name}: ${(err as Error).message}`));
    await deleteRedisPrefix(prefix).catch(() => 0);
    fs.rmSync(dataDir, { recursive: true, force: true });
  };
  const onSignal = () => {
    console.error('[bench:http] interrupted: cleaning up');
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const deadline = setTimeout(() => {
    console.error(`[bench:http] over the ${HARD_DEADLINE_MS / 60_000} min limit: stopping`);
    void cleanup().finally(() => process.exit(1));
  }, HARD_DEADLINE_MS);
  deadline.unref();

  try {
    db = await createScratchDatabase('tb_bench');
    const serverEnv: Record<string, string> = {
      NODE_ENV: 'production',
      SECRET_KEY: crypto.randomBytes(32).toString('base64url'),
      JWT_SECRET_KEY: crypto.randomBytes(32).toString('base64url'),
      LOG_LEVEL: 'warn',
      LOGIN_RATE_LIMIT: '100000000',
      AUTO_MIGRATE: 'true',
      DATABASE_URL: db.url,
      REDIS_URL,
      REDIS_PREFIX: prefix,
      DATA_DIR: dataDir,
      STORAGE_QUOTA_MB: '10000000',
    };
    const nodeArgs: string[] = [];
    if (opts['cpu-prof']) {
      fs.mkdirSync(opts['cpu-prof'], { recursive: true });
      nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${path.resolve(opts['cpu-prof'])}`);
    }
    server = await timed('start server + migrate', () => startServer({ env: serverEnv, nodeArgs }));
    const srv = server;
    log(`server pid ${srv.pid} at ${srv.url} on database ${db.name}; ${DURATION} s per scenario, ${CONNECTIONS} connections`);

    const openapi = await api(srv.url, 'GET', '/api/docs/openapi.json');
    const routes = documentRoutes(opts['no-documents'] ? {} : openapi.body?.paths ?? {});
    log(`documents routes: ${['get', 'list', 'upload'].map((k) => `${k} ${routes[k as 'get'] ? 'present' : 'absent'}`).join(', ')}`);

    const seeded = await timed('seed users', async () => {
      const r = await signUp(srv.url, 'reader');
      const u = await signUp(srv.url, 'uploader');
      return { r, u };
    });
    const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
    const common = { connections: CONNECTIONS, duration: DURATION, database: db.name };

    if (selected.has('health')) {
      const result = await timed('health', () => measure(srv.pid, { ...common, url: `${srv.url}/health`, duration: Math.min(DURATION, 5), warmupSec: 1 }));
      rows.push({ scenario: 'GET /health (no auth; ceiling)', result, target: '—', met: null, note: describeFailures(result) });
    }

    if (selected.has('auth')) {
      // The authentication path alone: GET /api/auth/csrf does no work beyond authenticating the request.
      const result = await timed('auth', () => measure(srv.pid, { ...common, url: `${srv.url}/api/auth/csrf`, headers: bearer(seeded.r.token), warmupSec: 1 }));
      rows.push({ scenario: `GET /api/auth/csrf (auth path only) @${CONNECTIONS}`, result, target: '—', met: null, note: describeFailures(result) });
    }

    let getResult: LoadResult | undefined;
    if (selected.has('get')) {
      let url: string;
      let label: string;
      if (routes.get && routes.upload) {
        const form = new FormData();
        form.append('file', new Blob([Buffer.from(`hello from the benchmark ${runId}\n`)], { type: 'text/plain' }), 'hello.txt');
        const up = await api(srv.url, 'POST', routes.upload(seeded.r.tenantId), { token: seeded.r.token, body: form });
        if (up.status !== 201) throw new Error(`uploading the document to read failed: ${up.status} ${JSON.stringify(up.body)}`);
        url = routes.get(seeded.r.tenantId, up.body.id);
        label = 'GET document metadata';
      } else {
        url = '/api/auth/me';
        label = 'GET /api/auth/me (stand-in: no documents route yet)';
        notes.push('scenario 1 measured GET /api/auth/me as the authenticated-GET stand-in: the documents routes are not in the OpenAPI document yet');
      }
      const check = await api(srv.url, 'GET', url, { token: seeded.r.token });
      if (check.status !== 200) throw new Error(`${url} answered ${check.status}: ${JSON.stringify(check.body)}`);
      const target = { minRps: 10_000, maxP99: 20 };
      getResult = await timed('get', () => measure(srv.pid, { ...common, url: srv.url + url, headers: bearer(seeded.r.token), warmupSec: 2 }));
      rows.push({ scenario: `${label} @${CONNECTIONS}`, result: getResult, target: '≥ 10 000 req/s, p99 < 20 ms', met: verdict(getResult, target), note: describeFailures(getResult) });
    }

    if (selected.has('pgbench')) {
      try {
        const pgb = await timed('pgbench -i + -S', () => pgbenchSelectOnly({ clients: 64, threads: 2, seconds: DURATION, scale: 10 }));
        const ratio = getResult ? getResult.requestsPerSec / pgb.tps : undefined;
        rows.push({
          scenario: 'pgbench -S -c 64 -j 2 (scale 10)',
          pgbench: pgb,
          target: 'get req/s ÷ tps ≥ 0.5',
          met: ratio === undefined ? null : ratio >= 0.5,
          note: ratio === undefined ? 'no get result to compare' : `ratio HTTP get / pgbench = ${ratio.toFixed(2)}`,
        });
      } catch (err) {
        rows.push({ scenario: 'pgbench -S', target: 'ratio ≥ 0.5', met: null, note: `not run: ${(err as Error).message.split('\n')[0]}` });
      }
    }

    if (selected.has('list')) {
      if (!routes.list) {
        rows.push({ scenario: `GET documents?page=1 (${fmtInt(LIST_ROWS)} docs)`, target: 'p99 < 30 ms', met: null, note: 'skipped: GET /api/tenants/{tid}/documents is not in the OpenAPI document yet' });
      } else {
        await timed(`seed ${LIST_ROWS} documents`, () => seedDocuments(db!.url, seeded.r.tenantId, seeded.r.userId, seeded.r.email, LIST_ROWS));
        const url = routes.list(seeded.r.tenantId);
        const check = await api(srv.url, 'GET', url, { token: seeded.r.token });
        if (check.status !== 200) throw new Error(`${url} answered ${check.status}: ${JSON.stringify(check.body)}`);
        if (typeof check.body.total === 'number' && check.body.total < LIST_ROWS) notes.push(`list total is ${check.body.total}, expected ≥ ${LIST_ROWS}`);
        const result = await timed('list', () => measure(srv.pid, { ...common, url: srv.url + url, headers: bearer(seeded.r.token), warmupSec: 2 }));
        rows.push({ scenario: `GET documents?page=1 (${fmtInt(LIST_ROWS)} docs) @${CONNECTIONS}`, result, target: 'p99 < 30 ms', met: verdict(result, { maxP99: 30 }), note: describeFailures(result) });
      }
    }

    if (selected.has('upload')) {
      if (!routes.upload) {
        rows.push({ scenario: 'POST documents (10 KB multipart)', target: '≥ 1 500 req/s', met: null, note: 'skipped: POST /api/tenants/{tid}/documents is not in the OpenAPI document yet' });
      } else {
        const bodies = multipartFactory({ size: 10 * 1024 });
        const url = routes.upload(seeded.u.tenantId);
        const result = await timed('upload', () => measure(srv.pid, {
          ...common,
          url: srv.url,
          warmupSec: 2,
          requests: [{
            method: 'POST',
            path: url,
            headers: { ...bearer(seeded.u.token), 'content-type': bodies.contentType },
            setupRequest: (req) => ({ ...req, body: bodies.next() }),
          }],
        }));
        rows.push({ scenario: `POST documents (10 KB multipart, distinct) @${CONNECTIONS}`, result, target: '≥ 1 500 req/s', met: verdict(result, { minRps: 1_500 }), note: describeFailures(result) });
      }
    }

    if (selected.has('login')) {
      const body = JSON.stringify({ email: seeded.r.email, password: PASSWORD });
      const result = await timed('login', () => measure(srv.pid, {
        connections: 16,
        duration: DURATION,
        database: db!.name,
        url: `${srv.url}/api/auth/login`,
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
        warmupSec: 1,
      }));
      rows.push({ scenario: 'POST /api/auth/login (argon2id) @16', result, target: '— (argon2id-bound)', met: null, note: describeFailures(result) });
    }

    const mem = treeMemoryOf(srv.pid);
    if (mem) notes.push(`server peak RSS over the whole run (VmHWM at the end, not reset): ${fmtMb(mem.hwm)}`);
    const errLines = srv.output().split('\n').filter((l) => /"level":(50|60)/.test(l));
    if (errLines.length) notes.push(`the server logged ${errLines.length} error line(s); first: ${errLines[0].slice(0, 300)}`);
  } catch (err) {
    console.error(`[bench:http] failed: ${(err as Error).stack ?? err}`);
    if (server) console.error(`--- server output (tail) ---\n${server.output().slice(-3000)}`);
    exitCode = 1;
  } finally {
    await timed('cleanup', cleanup);
    clearTimeout(deadline);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }

  print(Date.now() - started);
  if (opts.json) {
    fs.writeFileSync(opts.json, JSON.stringify({ at: new Date().toISOString(), duration: DURATION, connections: CONNECTIONS, rows, notes, timings }, null, 2));
    log(`results written to ${opts.json}`);
  }
  return exitCode;
}

function print(totalMs: number) {
  const hwmNote = rows.some((r) => r.result && !r.result.hwmReset);
  console.log('');
  console.log(table(
    ['scenario', 'req/s', 'p50', 'p99', 'peak RSS', 'target', 'met?', 'CPU/req: server', 'PostgreSQL'],
    rows.map((r) => [
      r.scenario,
      r.result ? fmtInt(r.result.requestsPerSec) : r.pgbench ? `${fmtInt(r.pgbench.tps)} tps` : '—',
      r.result ? fmtMs(r.result.p50) : '—',
      r.result ? fmtMs(r.result.p99) : r.pgbench?.latencyMs !== undefined ? `avg ${fmtMs(r.pgbench.latencyMs)}` : '—',
      r.result ? fmtMb(r.result.peakRss) : '—',
      r.target,
      r.met === null ? (r.note?.startsWith('skipped') ? 'skipped' : '—') : r.met ? 'yes' : 'NO',
      r.result?.cpuUsPerRequest !== undefined ? `${fmtInt(r.result.cpuUsPerRequest)} µs` : '—',
      r.result?.dbCpuUsPerRequest !== undefined ? `${fmtInt(r.result.dbCpuUsPerRequest)} µs` : '—',
    ]),
  ));
  const rowNotes = rows.filter((r) => r.note).map((r) => `${r.scenario}: ${r.note}`);
  for (const n of [...rowNotes, ...notes]) console.log(`  * ${n}`);
  const busy = rows.filter((r) => r.result && r.result.loadAvg > 1.5).map((r) => `${r.scenario.split(' @')[0]} (${r.result!.loadAvg.toFixed(1)})`);
  if (busy.length) console.log(`  * the machine was busy before: ${busy.join(', ')} (1-min load average; the server competes for the cores, compare CPU/req)`);
  if (hwmNote) console.log('  * peak RSS: VmHWM could not be reset; sampled VmRSS every 100 ms instead');
  console.log(`  * p50/p99 are autocannon latencies (1 ms resolution) on loopback; client and server share the ${os.cpus().length} cores`);
  console.log(`\ntimings: ${timings.map(([k, ms]) => `${k} ${fmtSec(ms)}`).join(', ')}; total ${fmtSec(totalMs)}`);
}

process.exitCode = await main();
