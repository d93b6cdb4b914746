/**
 * buildApp(config): the whole HTTP application. Opens the database (migrating
 * it when AUTO_MIGRATE), Redis when configured, then registers the
 * cross-cutting plugins and each capability's routes.
 */
import crypto from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import fp from 'fastify-plugin';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import cors from '@fastify/cors';
import cookie from '@fastify/cookie';
import { sql, type Kysely } from 'kysely';
import type { Config } from './config.js';
import { openDatabase, type Database } from './db/index.js';
import { migrateMain } from './db/migrate.js';
import type { ControlSchema } from './db/schema.js';
import { createTenantDatabases, type TenantDatabases } from './db/tenant-db.js';
import { openRedis, waitForRedis, type Redis } from './redis.js';
import { clientErrorHandler, errorHandlerPlugin, frameworkErrors } from './http/errors.js';
import { openapiPlugin } from './http/openapi.js';
import { healthPlugin } from './http/health.js';
import { metricsPlugin } from './http/metrics.js';
import { buildValidator } from './http/validation.js';
import { SECURITY_HEADERS, securityHeadersPlugin } from './http/security-headers.js';
import { unreadBodyPlugin } from './http/unread-body.js';
import type { BlobStore } from './storage/blob-store.js';
import { authPlugin } from './auth/plugin.js';
import { authRoutes } from './auth/routes.js';
import { userRoutes } from './users/routes.js';
import { tenantContextPlugin } from './tenants/context.js';
import { storagePlugin } from './documents/storage-plugin.js';
import { documentsPlugin } from './documents/routes.js';
import { MULTIPART_OVERHEAD } from './documents/upload.js';
import { tenantsPlugin } from './tenants/plugin.js';
import { jobsPlugin } from './jobs/plugin.js';
import { auditPlugin } from './audit/plugin.js';
import { webhookRoutes } from './webhooks/routes.js';

declare module 'fastify' {
  interface FastifyInstance {
    config: Config;
    db: Kysely<ControlSchema>;
    database: Database;
    tenantDbs: TenantDatabases;
    redis: Redis | null;
  }
}

export interface BuildOptions {
  /** Pino options or false; defaults to JSON logs at config.logLevel. */
  logger?: FastifyServerOptions['logger'];
  /** What this process is ('server', 'worker'): named to a second process refused the embedded database. */
  role?: string;
  /** A blob store to use instead of the configured one (tests: a store that fails on cue). */
  storage?: BlobStore;
}

/** Connections shared by the app: database, tenant routing, Redis. Closed with the app. */
const corePlugin = fp(
  async (app: FastifyInstance, opts: { config: Config; role: string }) => {
    const { config } = opts;
    const database = await openDatabase({
      databaseUrl: config.databaseUrl,
      pgliteDir: config.pgliteDir,
      poolMax: config.dbPoolMax,
      connectTimeoutMs: config.dbConnectTimeoutMs,
      onConnectionError: (err) => app.log.warn({ err }, 'a database connection was lost; the pool replaces it'),
      role: opts.role,
      onStaleLock: (message) => app.log.warn(message),
    });
    if (config.autoMigrate) await migrateMain(database.db);
    const tenantDbs = createTenantDatabases(database.db, database.pool);
    const redis = config.redisUrl
      ? openRedis(config.redisUrl, { connectTimeoutMs: config.redisConnectTimeoutMs, commandTimeoutMs: config.redisCommandTimeoutMs })
      : null;
    if (redis) {
      await waitForRedis(redis, config.redisConnectTimeoutMs).catch((err: unknown) =>
        app.log.warn({ err }, 'Redis is not reachable; starting without it (login limits fall back to this process, /ready reports it)'),
      );
    }

    app.decorate('config', config);
    app.decorate('database', database);
    app.decorate('db', database.db);
    app.decorate('tenantDbs', tenantDbs);
    app.decorate('redis', redis);

    app.addHook('onReady', async () => {
      app.readiness.push({ name: 'database', check: async () => { await sql`SELECT 1`.execute(database.db); } });
      if (redis) app.readiness.push({ name: 'redis', check: async () => { await redis.ping(); } });
    });
    app.addHook('onClose', async () => {
      await tenantDbs.close();
      await database.close();
      if (redis) await redis.quit().catch(() => redis.disconnect());
    });
  },
  { name: 'core', dependencies: ['health'] },
);

export async function buildApp(config: Config, opts: BuildOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: opts.logger ?? { level: config.logLevel, redact: ['req.headers.authorization', 'req.headers.cookie', 'req.headers["x-csrf-token"]'] },
    requestIdHeader: false,
    // Keep a caller's X-Request-Id when it is short and printable, else make one.
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && /^[\w.:-]{1,128}$/.test(given) ? given : crypto.randomUUID();
    },
    trustProxy: config.trustProxy,
    bodyLimit: 1024 * 1024,
    requestTimeout: config.http.requestTimeoutMs,
    connectionTimeout: config.http.connectionTimeoutMs,
    keepAliveTimeout: config.http.keepAliveTimeoutMs,
    http: { headersTimeout: config.http.headersTimeoutMs, requestTimeout: config.http.requestTimeoutMs },
    // Answered as problem+json by src/http/errors.ts: requests while closing (503), router and HTTP parser errors.
    return503OnClosing: false,
    frameworkErrors,
    clientErrorHandler,
    schemaController: { compilersFactory: { buildValidator: buildValidator() as any } },
  }).withTypeProvider<TypeBoxTypeProvider>();

  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });

  // JSON only: a text/plain body is 415, not a string that fails validation.
  app.removeContentTypeParser('text/plain');
  await app.register(errorHandlerPlugin);
  // A body left unread by an early answer (401, 413...) is discarded after it, up to the largest upload.
  await app.register(unreadBodyPlugin, { maxBytes: config.maxFileSizeBytes + MULTIPART_OVERHEAD });
  await app.register(healthPlugin);
  await app.register(metricsPlugin);
  await app.register(corePlugin, { config, role: opts.role ?? 'server' });
  // helmet's headers, computed once (see src/http/security-headers.ts).
  await app.register(securityHeadersPlugin, SECURITY_HEADERS);
  await app.register(cors, { origin: config.corsOrigins, credentials: true, exposedHeaders: ['x-request-id', 'content-disposition', 'etag'] });
  await app.register(cookie);
  await app.register(openapiPlugin);
  await app.register(authPlugin);
  await app.register(tenantContextPlugin);
  await app.register(storagePlugin, { storage: opts.storage });

  await app.register(authRoutes, { prefix: '/api/auth' });
  await app.register(userRoutes, { prefix: '/api/users' });
  await app.register(documentsPlugin);
  await app.register(tenantsPlugin);
  await app.register(auditPlugin);
  await app.register(webhookRoutes, { prefix: '/api/tenants/:tid/webhooks' });
  // Background work: in the embedded default (no REDIS_URL) it runs in this process.
  await app.register(jobsPlugin);

  return app;
}
