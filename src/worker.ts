/**
 * The worker entry point: `npm run worker` (node dist/src/worker.js) or
 * `npx tsx src/worker.ts`. Builds the app's services (database, tenant routing
 * with dedicated databases, storage, Redis) without serving HTTP, then runs the
 * background work (src/jobs/system.ts):
 *  - with REDIS_URL: the outbox relays (jobs -> BullMQ, events -> broker), a
 *    BullMQ worker, and the event consumer. Run as many workers as needed: each
 *    job is done once.
 *  - without: the embedded outbox runner (jobs are outbox rows), the event relay
 *    and the consumer - the same work the API does in the embedded default, on a
 *    shared PostgreSQL database.
 * SIGTERM/SIGINT: stop taking work, finish the jobs in progress, exit.
 * WORKER_METRICS_PORT: serve GET /metrics (Prometheus) and GET /health.
 */
import http from 'node:http';
import { buildApp } from './app.js';
import { jobTuningFromEnv } from './jobs/options.js';
import { exitOnStartupFailure, loadRuntimeConfig } from './runtime.js';

const { config, warnings } = await loadRuntimeConfig();
const tuning = jobTuningFromEnv();
const app = await buildApp(config, { role: 'worker' }).catch((err: unknown) => exitOnStartupFailure(err, 'the worker'));
for (const w of warnings) app.log.warn(w);
const log = app.log.child({ process: 'worker' });

let metricsServer: http.Server | null = null;
let closing = false;

async function shutdown(signal: string): Promise<void> {
  if (closing) return;
  closing = true;
  log.info({ signal }, 'worker shutting down: finishing jobs in progress');
  const timer = setTimeout(() => {
    log.error('worker shutdown timed out; exiting');
    process.exit(1);
  }, 60_000);
  timer.unref();
  try {
    metricsServer?.close();
    await app.close(); // stops the job system first (preClose), then the connections
    process.exit(0);
  } catch (err) {
    log.error({ err }, 'error during worker shutdown');
    process.exit(1);
  }
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));

try {
  await app.ready(); // without REDIS_URL the app has already started the embedded runner
  if (!app.jobs.role) await app.jobs.start(config.redisUrl ? 'worker' : 'embedded');
  if (tuning.metricsPort) {
    metricsServer = http.createServer((req, res) => {
      if (req.url === '/metrics') {
        app.metrics.registry
          .metrics()
          .then((body) => {
            res.writeHead(200, { 'content-type': app.metrics.registry.contentType });
            res.end(body);
          })
          .catch(() => {
            res.writeHead(500);
            res.end();
          });
      } else if (req.url === '/health') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ status: 'ok', role: app.jobs.role }));
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    metricsServer.listen(tuning.metricsPort, config.host);
  }
  log.info(
    { role: app.jobs.role, database: config.databaseUrl ? 'postgres' : 'pglite', redis: Boolean(config.redisUrl), pid: process.pid },
    'worker ready',
  );
} catch (err) {
  log.error({ err }, 'worker failed to start');
  await app.close().catch(() => undefined);
  exitOnStartupFailure(err, 'the worker');
}
