/**
 * `npm run bench`: every benchmark module present in bench/, each as a child
 * process (`npx tsx bench/<name>.ts`), one after the other, with its time.
 *
 *   npm run bench                  # all of them
 *   npm run bench -- http          # one (or several: http jobs)
 *   npm run bench -- http --duration 5   # options after the names go to each benchmark
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
/** In running order; each owned by the team of the same capability. */
const MODULES = ['http', 'tenants', 'documents', 'jobs'] as const;
/** No single benchmark may run longer than this; the child is stopped and counted as failed. */
const PER_MODULE_LIMIT_MS = 20 * 60_000;

const args = process.argv.slice(2);
const firstOption = args.findIndex((a) => a.startsWith('-'));
const names = firstOption === -1 ? args : args.slice(0, firstOption);
const passThrough = firstOption === -1 ? [] : args.slice(firstOption);

if (names.includes('help') || args.includes('--help') && names.length === 0) {
  console.log(`usage: npm run bench [-- <${MODULES.join('|')}>... [options for the benchmarks]]`);
  process.exit(0);
}
const unknown = names.filter((n) => !(MODULES as readonly string[]).includes(n));
if (unknown.length) {
  console.error(`unknown benchmark(s): ${unknown.join(', ')}; known: ${MODULES.join(', ')}`);
  process.exit(2);
}
const chosen = names.length ? MODULES.filter((m) => names.includes(m)) : [...MODULES];

function runModule(name: string): Promise<{ code: number | null; ms: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const child = spawn('npx', ['tsx', path.join('bench', `${name}.ts`), ...passThrough], { stdio: 'inherit', cwd: path.dirname(BENCH_DIR) });
    const timer = setTimeout(() => {
      console.error(`[bench] ${name} ran over ${PER_MODULE_LIMIT_MS / 60_000} min: stopping it`);
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 20_000).unref();
    }, PER_MODULE_LIMIT_MS);
    const forward = (sig: NodeJS.Signals) => child.kill(sig);
    process.on('SIGINT', forward);
    process.on('SIGTERM', forward);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      process.off('SIGINT', forward);
      process.off('SIGTERM', forward);
      resolve({ code: code ?? (signal ? 128 : 1), ms: Date.now() - t0 });
    });
    child.on('error', (err) => {
      console.error(`[bench] could not start ${name}: ${err.message}`);
    });
  });
}

const summary: Array<[string, string, string]> = [];
let failed = 0;
const started = Date.now();
for (const name of chosen) {
  const file = path.join(BENCH_DIR, `${name}.ts`);
  if (!fs.existsSync(file)) {
    console.log(`\n=== ${name}: bench/${name}.ts is not there yet — not run`);
    summary.push([name, 'not there yet', '—']);
    continue;
  }
  console.log(`\n=== ${name} (bench/${name}.ts)`);
  const { code, ms } = await runModule(name);
  const secs = `${(ms / 1000).toFixed(1)} s`;
  console.log(`=== ${name}: ${code === 0 ? 'done' : `FAILED (exit ${code})`} in ${secs}`);
  if (code !== 0) failed += 1;
  summary.push([name, code === 0 ? 'ok' : `failed (exit ${code})`, secs]);
}

console.log('\nbenchmarks:');
for (const [name, status, secs] of summary) console.log(`  ${name.padEnd(10)} ${status.padEnd(18)} ${secs}`);
console.log(`  total ${((Date.now() - started) / 1000).toFixed(1)} s`);
process.exitCode = failed ? 1 : 0;
