import { describe, expect, it } from 'vitest';
import path from 'node:path';
import { loadConfig, ConfigError } from '../src/config.js';

describe('config', () => {
  it('runs on the embedded default with no variables at all', () => {
    const c = loadConfig({});
    expect(c.databaseUrl).toBeUndefined();
    expect(c.redisUrl).toBeUndefined();
    expect(c.s3).toBeNull();
    expect(c.port).toBe(4999);
    expect(c.dataDir).toBe(path.resolve('./data'));
    expect(c.pgliteDir).toBe(path.resolve('./data/pglite'));
    expect(c.uploadFolder).toBe(path.resolve('./data/uploads'));
    expect(c.accessTokenTtl).toBe(900);
    expect(c.refreshTokenTtl).toBe(7 * 24 * 3600);
    expect(c.storageQuotaMb).toBe(1000);
    expect(c.maxFileSizeBytes).toBe(100 * 1024 * 1024);
    expect(c.autoMigrate).toBe(true);
  });

  it('reads the seeds\' variable names', () => {
    const c = loadConfig({
      DATABASE_URL: 'postgres://u@db:5432/app', REDIS_URL: 'redis://r:6379/0', PORT: '8080',
      JWT_ACCESS_TOKEN_EXPIRES: '60', MAX_FILE_SIZE_MB: '5', STORAGE_QUOTA_MB: '7', UPLOAD_FOLDER: '/tmp/up',
      S3_BUCKET: 'docs', S3_ENDPOINT_URL: 'http://minio:9000', S3_PUBLIC_URL: 'http://localhost:9000', CORS_ORIGINS: 'https://a.example, https://b.example',
    });
    expect(c.databaseUrl).toBe('postgres://u@db:5432/app');
    expect(c.tenantDbServers).toEqual(['postgres://u@db:5432/app']);
    expect(c.port).toBe(8080);
    expect(c.accessTokenTtl).toBe(60);
    expect(c.maxFileSizeBytes).toBe(5 * 1024 * 1024);
    expect(c.storageQuotaMb).toBe(7);
    expect(c.uploadFolder).toBe('/tmp/up');
    expect(c.s3).toMatchObject({ bucket: 'docs', endpoint: 'http://minio:9000', publicUrl: 'http://localhost:9000', region: 'us-east-1', forcePathStyle: true });
    expect(c.corsOrigins).toEqual(['https://a.example', 'https://b.example']);
  });

  it.each([
    ['PORT', { PORT: 'eighty' }],
    ['PORT', { PORT: '70000' }],
    ['DATABASE_URL', { DATABASE_URL: 'mysql://x' }],
    ['REDIS_URL', { REDIS_URL: 'not a url' }],
    ['MAX_FILE_SIZE_MB', { MAX_FILE_SIZE_MB: '0' }],
    ['DELETE_FAILED_UPLOADS', { DELETE_FAILED_UPLOADS: 'maybe' }],
    ['NODE_ENV', { NODE_ENV: 'staging' }],
    ['EVENT_PUBLISHER', { EVENT_PUBLISHER: 'carrier-pigeon' }],
    ['LOG_LEVEL', { LOG_LEVEL: 'verbose' }],
    ['WEBHOOK_ALLOW_INSECURE', { WEBHOOK_ALLOW_INSECURE: 'sometimes' }],
  ])('names the bad variable %s', (name, env) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(new RegExp(name));
  });

  it('refuses to start in production with a missing, default or short secret', () => {
    expect(() => loadConfig({ NODE_ENV: 'production' })).toThrow(/SECRET_KEY/);
    expect(() => loadConfig({ NODE_ENV: 'production', SECRET_KEY: 'dev-secret-key-change-in-production' })).toThrow(/SECRET_KEY/);
    expect(() => loadConfig({ NODE_ENV: 'production', SECRET_KEY: 'x'.repeat(40), JWT_SECRET_KEY: 'short' })).toThrow(/JWT_SECRET_KEY/);
    const ok = loadConfig({ NODE_ENV: 'production', SECRET_KEY: 'x'.repeat(40), JWT_SECRET_KEY: 'y'.repeat(40) });
    expect(ok.isProduction).toBe(true);
    expect(ok.autoMigrate).toBe(false);
  });
});
