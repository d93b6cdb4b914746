/**
 * Environment -> typed configuration, validated once at start-up.
 * Every variable is documented in `.env.example`. With no variables at all the
 * server runs on the embedded default: PGlite under DATA_DIR, local-disk
 * storage, in-process jobs, a log publisher for events.
 */
import path from 'node:path';
import type { S3StoreOptions } from './storage/s3.js';

export type S3Config = S3StoreOptions;

export interface Config {
  env: 'development' | 'production' | 'test';
  isProduction: boolean;
  host: string;
  port: number;
  /** API processes `npm start` runs (node:cluster, sharing the port); 1 = this process serves. */
  webConcurrency: number;
  logLevel: string;
  dataDir: string;
  /** PostgreSQL URL of the control-plane database; undefined = embedded PGlite. */
  databaseUrl?: string;
  /** Directory of the embedded PGlite database; undefined with databaseUrl, or 'memory://' in tests. */
  pgliteDir: string;
  dbPoolMax: number;
  /** Bound on opening a database connection and on waiting for a free one in the pool. */
  dbConnectTimeoutMs: number;
  /** PostgreSQL servers (admin URLs) that can hold dedicated tenant databases. */
  tenantDbServers: string[];
  tenantPoolMaxTotal: number;
  autoMigrate: boolean;
  redisUrl?: string;
  /** Prefix for every Redis key and BullMQ queue of this deployment (tests use one per run). */
  redisPrefix: string;
  /**
   * Jobs on Redis: how long a job handed to Redis may stay unfinished before the relay asks Redis
   * whether it still has it (and adds it again if not). Also checked at relay start and on reconnect.
   */
  jobRecheckMs: number;
  /** Bound on connecting to Redis (then commands fail at once until it is back: no offline queue). */
  redisConnectTimeoutMs: number;
  /** A Redis command unanswered for this long fails. */
  redisCommandTimeoutMs: number;
  /** Each /ready check fails after this long (they run in parallel). */
  readyTimeoutMs: number;
  /** Node's HTTP server timeouts (see .env.example). */
  http: {
    requestTimeoutMs: number;
    headersTimeoutMs: number;
    keepAliveTimeoutMs: number;
    connectionTimeoutMs: number;
  };
  /** An upload whose body sends nothing for this long is cut (408). */
  bodyIdleTimeoutMs: number;
  secretKey: string;
  jwtSecretKey: string;
  accessTokenTtl: number;
  refreshTokenTtl: number;
  sessionTtl: number;
  trustProxy: boolean;
  /**
   * Local storage root. Default: DATA_DIR/uploads on the embedded database, DATA_DIR/uploads-<database
   * name> on PostgreSQL, so the two modes on one machine never share a folder (a storage root belongs to
   * one deployment: src/storage/owner.ts).
   */
  uploadFolder: string;
  /**
   * Set when uploadFolder is PostgreSQL's default: the embedded mode's folder (DATA_DIR/uploads), which
   * this database may have used when the two modes had one default; checked before the default folder
   * is first used, so its files are not left behind unnoticed (src/documents/storage-plugin.ts).
   */
  embeddedUploadFolder?: string;
  maxFileSizeBytes: number;
  storageQuotaMb: number;
  /** /ready reports local storage with less free space than this (0: not checked). */
  storageMinFreeMb: number;
  deleteFailedUploads: boolean;
  s3: S3Config | null;
  corsOrigins: string[] | true | false;
  /** Failed logins of one email from one client address per window. */
  loginRateLimit: number;
  /** Failed logins from one client address per window, whatever the email. */
  loginIpRateLimit: number;
  loginRateWindowSec: number;
  eventPublisher?: 'kafka' | 'nats' | 'redis' | 'log';
  kafkaBrokers: string[];
  natsUrl?: string;
  publicBaseUrl?: string;
  /** Webhook endpoints may use plain http and private, loopback or link-local addresses (tests, development). */
  webhookAllowInsecure: boolean;
  admin: { email?: string; password?: string; testTenantName?: string };
}

export class ConfigError extends Error {
  constructor(public readonly variable: string, message: string) {
    super(`Invalid configuration: ${variable} ${message}`);
  }
}

const DEV_SECRET = 'dev-secret-key-change-in-production';

type Env = Record<string, string | undefined>;

function str(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

function int(env: Env, name: string, dflt: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const v = str(env, name);
  if (v === undefined) return dflt;
  if (!/^-?\d+$/.test(v)) throw new ConfigError(name, `must be a whole number, got "${v}"`);
  const n = Number(v);
  if (n < min || n > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${n}`);
  return n;
}

function bool(env: Env, name: string, dflt: boolean): boolean {
  const v = str(env, name)?.toLowerCase();
  if (v === undefined) return dflt;
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['0', 'false', 'no', 'off'].includes(v)) return false;
  throw new ConfigError(name, `must be true or false, got "${v}"`);
}

function url(env: Env, name: string, protocols: string[]): string | undefined {
  const v = str(env, name);
  if (v === undefined) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(v);
  } catch {
    throw new ConfigError(name, 'must be a URL');
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(name, `must use ${protocols.join(' or ')}, got ${parsed.protocol}`);
  }
  return v;
}

/** pino's levels; anything else makes the logger throw at start-up. */
const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

function oneOf<T extends string, D extends T | undefined>(env: Env, name: string, allowed: readonly T[], dflt: D): T | D {
  const v = str(env, name);
  if (v === undefined) return dflt;
  if (!(allowed as readonly string[]).includes(v)) throw new ConfigError(name, `must be one of ${allowed.join(', ')}, got "${v}"`);
  return v as T;
}

function list(env: Env, name: string): string[] {
  return (str(env, name) ?? '').split(',').map((s) => s.trim()).filter(Boolean);
}

/** The database name of a PostgreSQL URL, usable in a file name. */
function databaseName(databaseUrl: string): string {
  const name = decodeURIComponent(new URL(databaseUrl).pathname.replace(/^\/+/, ''));
  return name.replace(/[^A-Za-z0-9_.-]/g, '_').replace(/^\.+/, '_') || 'postgres';
}

export function loadConfig(env: Env = process.env): Config {
  const nodeEnv = oneOf(env, 'NODE_ENV', ['development', 'production', 'test'] as const, 'development');
  const isProduction = nodeEnv === 'production';
  const dataDir = path.resolve(str(env, 'DATA_DIR') ?? './data');

  const secretKey = str(env, 'SECRET_KEY') ?? DEV_SECRET;
  const jwtSecretKey = str(env, 'JWT_SECRET_KEY') ?? secretKey;
  if (isProduction) {
    for (const [name, value] of [['SECRET_KEY', secretKey], ['JWT_SECRET_KEY', jwtSecretKey]] as const) {
      if (value === DEV_SECRET || value.length < 32) {
        throw new ConfigError(name, 'must be set to a random value of at least 32 characters in production');
      }
    }
  }

  const databaseUrl = url(env, 'DATABASE_URL', ['postgres:', 'postgresql:']);
  const s3Bucket = str(env, 'S3_BUCKET');
  const s3: S3Config | null = s3Bucket
    ? {
        bucket: s3Bucket,
        endpoint: url(env, 'S3_ENDPOINT_URL', ['http:', 'https:']),
        region: str(env, 'S3_REGION') ?? 'us-east-1',
        accessKeyId: str(env, 'S3_ACCESS_KEY_ID'),
        secretAccessKey: str(env, 'S3_SECRET_ACCESS_KEY'),
        publicUrl: url(env, 'S3_PUBLIC_URL', ['http:', 'https:']),
        forcePathStyle: bool(env, 'S3_FORCE_PATH_STYLE', true),
      }
    : null;

  const cors = str(env, 'CORS_ORIGINS');
  const corsOrigins = cors === undefined ? false : cors === '*' ? true : list(env, 'CORS_ORIGINS');

  const publisher = oneOf(env, 'EVENT_PUBLISHER', ['kafka', 'nats', 'redis', 'log'] as const, undefined);

  const uploadSetting = str(env, 'UPLOAD_FOLDER');
  const embeddedUploads = path.join(dataDir, 'uploads');
  const uploadFolder = path.resolve(uploadSetting ?? (databaseUrl ? path.join(dataDir, `uploads-${databaseName(databaseUrl)}`) : embeddedUploads));

  const http = {
    requestTimeoutMs: int(env, 'HTTP_REQUEST_TIMEOUT_MS', 600_000, 1_000),
    headersTimeoutMs: int(env, 'HTTP_HEADERS_TIMEOUT_MS', 30_000, 1_000),
    keepAliveTimeoutMs: int(env, 'HTTP_KEEP_ALIVE_TIMEOUT_MS', 72_000, 1_000),
    connectionTimeoutMs: int(env, 'HTTP_CONNECTION_TIMEOUT_MS', 120_000, 1_000),
  };
  if (http.headersTimeoutMs > http.requestTimeoutMs) {
    throw new ConfigError('HTTP_HEADERS_TIMEOUT_MS', `must not be more than HTTP_REQUEST_TIMEOUT_MS (${http.requestTimeoutMs})`);
  }
  const bodyIdleTimeoutMs = int(env, 'BODY_IDLE_TIMEOUT_MS', 30_000, 100);
  if (bodyIdleTimeoutMs >= http.connectionTimeoutMs) {
    throw new ConfigError('BODY_IDLE_TIMEOUT_MS', `must be less than HTTP_CONNECTION_TIMEOUT_MS (${http.connectionTimeoutMs})`);
  }

  const webConcurrency = int(env, 'WEB_CONCURRENCY', 1, 1, 64);
  if (webConcurrency > 1 && !databaseUrl) {
    throw new ConfigError('WEB_CONCURRENCY', 'must be 1 on the embedded PGlite database (one process owns it); set DATABASE_URL to run several');
  }

  return {
    env: nodeEnv,
    isProduction,
    host: str(env, 'HOST') ?? '127.0.0.1',
    port: int(env, 'PORT', 4999, 0, 65535),
    webConcurrency,
    logLevel: oneOf(env, 'LOG_LEVEL', LOG_LEVELS, nodeEnv === 'test' ? 'silent' : 'info'),
    dataDir,
    databaseUrl,
    pgliteDir: path.join(dataDir, 'pglite'),
    dbPoolMax: int(env, 'DB_POOL_MAX', 20, 1, 1000),
    dbConnectTimeoutMs: int(env, 'DB_CONNECT_TIMEOUT_MS', 3_000, 50, 600_000),
    tenantDbServers: list(env, 'TENANT_DB_SERVERS').length
      ? list(env, 'TENANT_DB_SERVERS')
      : databaseUrl
        ? [databaseUrl]
        : [],
    tenantPoolMaxTotal: int(env, 'TENANT_POOL_MAX_TOTAL', 50, 1, 10_000),
    autoMigrate: bool(env, 'AUTO_MIGRATE', !isProduction),
    redisUrl: url(env, 'REDIS_URL', ['redis:', 'rediss:']),
    redisPrefix: str(env, 'REDIS_PREFIX') ?? 'tb:',
    jobRecheckMs: int(env, 'JOB_RECHECK_MS', 5 * 60_000, 1_000, 24 * 3_600_000),
    redisConnectTimeoutMs: int(env, 'REDIS_CONNECT_TIMEOUT_MS', 2_000, 50, 600_000),
    redisCommandTimeoutMs: int(env, 'REDIS_COMMAND_TIMEOUT_MS', 1_000, 50, 600_000),
    readyTimeoutMs: int(env, 'READY_TIMEOUT_MS', 1_000, 50, 60_000),
    http,
    bodyIdleTimeoutMs,
    secretKey,
    jwtSecretKey,
    accessTokenTtl: int(env, 'JWT_ACCESS_TOKEN_EXPIRES', 15 * 60, 10),
    refreshTokenTtl: int(env, 'JWT_REFRESH_TOKEN_EXPIRES', 7 * 24 * 3600, 60),
    sessionTtl: int(env, 'SESSION_LIFETIME', 7 * 24 * 3600, 60),
    trustProxy: bool(env, 'TRUST_PROXY', false),
    uploadFolder,
    embeddedUploadFolder: !uploadSetting && databaseUrl ? embeddedUploads : undefined,
    maxFileSizeBytes: int(env, 'MAX_FILE_SIZE_MB', 100, 1, 1_000_000) * 1024 * 1024,
    storageQuotaMb: int(env, 'STORAGE_QUOTA_MB', 1000, 1, 100_000_000),
    storageMinFreeMb: int(env, 'STORAGE_MIN_FREE_MB', 100, 0, 100_000_000),
    deleteFailedUploads: bool(env, 'DELETE_FAILED_UPLOADS', false),
    s3,
    corsOrigins,
    loginRateLimit: int(env, 'LOGIN_RATE_LIMIT', 10, 1),
    loginIpRateLimit: int(env, 'LOGIN_IP_RATE_LIMIT', 100, 1),
    loginRateWindowSec: int(env, 'LOGIN_RATE_WINDOW', 60, 1),
    eventPublisher: publisher,
    kafkaBrokers: list(env, 'KAFKA_BROKERS'),
    natsUrl: url(env, 'NATS_URL', ['nats:', 'tls:']),
    publicBaseUrl: url(env, 'PUBLIC_BASE_URL', ['http:', 'https:']),
    webhookAllowInsecure: bool(env, 'WEBHOOK_ALLOW_INSECURE', false),
    admin: {
      email: str(env, 'ADMIN_EMAIL'),
      password: str(env, 'ADMIN_PASSWORD'),
      testTenantName: str(env, 'TEST_TENANT_NAME'),
    },
  };
}
