/** The API server entry point: `npm start`. */
import { buildApp } from './app.js';
import { loadRuntimeConfig } from './runtime.js';

const { config, warnings } = await loadRuntimeConfig();
const app = await buildApp(config);
for (const w of warnings) app.log.warn(w);

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
    { database: config.databaseUrl ? 'postgres' : `pglite (${config.pgliteDir})`, redis: Boolean(config.redisUrl), storage: config.s3 ? 's3' : config.uploadFolder },
    `API docs at http://${config.host}:${config.port}/api/docs`,
  );
} catch (err) {
  app.log.error({ err }, 'failed to start');
  process.exit(1);
}
