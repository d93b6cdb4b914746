/**
 * Child process of test/startup-imports.test.ts (`node --import tsx this-file`).
 *
 * Records every module the ESM loader resolves (a `module.register` resolve
 * hook appending `url <TAB> parent` lines to a file), then builds the app with
 * the embedded default configuration - no DATABASE_URL, REDIS_URL, S3_*,
 * KAFKA_BROKERS or NATS_URL - makes it ready, starts its background work and
 * drains it, and closes it. Prints one JSON line: the resolved URLs and the
 * CommonJS module cache at that point, then, as a control that the recording
 * sees such packages at all, the same after a dynamic import of `nats`.
 *
 * Only node: builtins are imported statically, so the hook is in place before
 * any application module loads.
 */
import fs from 'node:fs';
import { createRequire, register } from 'node:module';
import os from 'node:os';
import path from 'node:path';

const HOOKS = `
import fs from 'node:fs';
let out;
export function initialize(data) { out = data.out; }
export async function resolve(specifier, context, next) {
  const result = await next(specifier, context);
  fs.appendFileSync(out, result.url + '\\t' + (context.parentURL ?? '') + '\\n');
  return result;
}
`;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-startup-imports-'));
const recordFile = path.join(dir, 'resolved.tsv');
fs.writeFileSync(recordFile, '');
register(`data:text/javascript,${encodeURIComponent(HOOKS)}`, { data: { out: recordFile } });
const require = createRequire(import.meta.url);

function snapshot(): { esm: Array<{ url: string; parent: string }>; cjs: string[] } {
  const esm = fs
    .readFileSync(recordFile, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [url, parent] = line.split('\t');
      return { url, parent };
    });
  return { esm, cjs: Object.keys(require.cache) };
}

try {
  const { loadConfig } = await import('../../src/config.js');
  const { buildApp } = await import('../../src/app.js');
  const config = loadConfig({ DATA_DIR: path.join(dir, 'data'), LOG_LEVEL: 'warn' });
  const app = await buildApp(config, { logger: false });
  await app.ready();
  if (!app.jobs.role) await app.jobs.start('embedded');
  await app.jobs.drain();
  const atStart = snapshot();
  await app.close();

  await import('nats');
  const control = snapshot();
  process.stdout.write(`${JSON.stringify({ atStart, control })}\n`);
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
