/**
 * The API server entry point: `npm start`. With WEB_CONCURRENCY=N (N > 1, on
 * PostgreSQL) this process is a node:cluster primary that runs N API worker
 * processes sharing the port (they share nothing else but PostgreSQL, Redis
 * and storage, like processes behind a load balancer), restarts one that
 * dies, and on SIGTERM/SIGINT lets every worker drain and exit.
 */
import cluster from 'node:cluster';
import { buildApp } from './app.js';
import { exitOnStartupFailure, loadRuntimeConfig } from './runtime.js';

const { config, warnings } = await loadRuntimeConfig();

if (cluster.isPrimary && config.webConcurrency > 1) {
  runPrimary(config.webConcurrency);
} else {
  await runServer();
}

async function runServer(): Promise<void> {
  const app = await buildApp(config, { role: 'server' }).catch((err: unknown) => exitOnStartupFailure(err, 'the server'));
  if (cluster.isPrimary) for (const w of warnings) app.log.warn(w);

  let closing = false;
  async function shutdown(signal: string) {
    if (closing) return;
    closing = true;
    app.log.info({ signal }, 'shutting down: finishing in-flight requests');
    const timer = setTimeout(() => {
      app.log.error('shutdown timed out; exiting');
      process.exit(1);
    }, 25_000);
    timer.unref();
    try {
      await app.close();
      process.exit(0);
    } catch (err) {
      app.log.error({ err }, 'error during shutdown');
      process.exit(1);
    }
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));

  try {
    await app.listen({ host: config.host, port: config.port });
    app.log.info(
      {
        database: config.databaseUrl ? 'postgres' : `pglite (${config.pgliteDir})`, redis: Boolean(config.redisUrl),
        storage: config.s3 ? 's3' : config.uploadFolder, worker: cluster.isWorker ? cluster.worker?.id : undefined,
      },
      `API docs at http://${config.host}:${config.port}/api/docs`,
    );
  } catch (err) {
    app.log.error({ err }, 'failed to start');
    await app.close().catch(() => undefined);
    exitOnStartupFailure(err, 'the server');
  }
}

function runPrimary(count: number): void {
  // pino's line format, so the primary's few lines sit with the workers' in one JSON log.
  const levels = { info: 30, warn: 40, error: 50 } as const;
  const log = (level: keyof typeof levels, msg: string, extra: Record<string, unknown> = {}) =>
    process.stdout.write(`${JSON.stringify({ level: levels[level], time: Date.now(), pid: process.pid, role: 'primary', ...extra, msg })}\n`);
  for (const w of warnings) log('warn', w);

  let stopping = false;
  const recentCrashes: number[] = [];
  const fork = () => cluster.fork();

  cluster.on('exit', (worker, code, signal) => {
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) {
        log('info', 'all API workers stopped');
        process.exit(); // process.exitCode: 1 when giving up on crashing workers
      }
      return;
    }
    const now = Date.now();
    recentCrashes.push(now);
    while (recentCrashes.length && recentCrashes[0] < now - 60_000) recentCrashes.shift();
    if (recentCrashes.length > count * 3) {
      log('error', 'API workers keep dying; giving up', { crashes_last_minute: recentCrashes.length, code, signal });
      stopping = true;
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
      process.exitCode = 1;
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(1);
      return;
    }
    log('warn', 'an API worker exited; starting another', { worker_pid: worker.process.pid, code, signal });
    setTimeout(fork, Math.min(5_000, 200 * recentCrashes.length)).unref();
  });

  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log('info', 'shutting down: every API worker finishes its in-flight requests', { signal });
    const workers = Object.values(cluster.workers ?? {});
    if (workers.length === 0) process.exit(0);
    for (const w of workers) w?.process.kill('SIGTERM');
    setTimeout(() => {
      log('error', 'workers did not stop in time; killing them');
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGKILL');
      process.exit(1);
    }, 30_000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  log('info', `starting ${count} API worker processes`, { web_concurrency: count });
  for (let i = 0; i < count; i++) fork();
}
