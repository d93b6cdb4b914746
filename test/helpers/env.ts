/**
 * Which real services the tests use. With CI=true, or TEST_DATABASE_URL /
 * DATABASE_URL / REDIS_URL set, tests that need PostgreSQL or Redis run against
 * them and FAIL when they are unreachable. Without any of these, `npm test`
 * runs on the embedded PGlite and such tests are reported as not run.
 */
import crypto from 'node:crypto';
import pg from 'pg';

export const IN_CI = process.env.CI === 'true' || process.env.CI === '1';

export const PG_ADMIN_URL =
  process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL ?? (IN_CI ? 'postgres://postgres@127.0.0.1:5432/postgres' : undefined);
export const REDIS_URL = process.env.REDIS_URL ?? (IN_CI ? 'redis://127.0.0.1:6379' : undefined);

export const HAS_PG = PG_ADMIN_URL !== undefined;
export const HAS_REDIS = REDIS_URL !== undefined;

if (!HAS_PG) console.warn('[tests] PostgreSQL tests not run: set TEST_DATABASE_URL (or CI=true) to run them');
if (!HAS_REDIS) console.warn('[tests] Redis tests not run: set REDIS_URL (or CI=true) to run them');

export function requirePg(): string {
  if (!PG_ADMIN_URL) throw new Error('PostgreSQL is required: set TEST_DATABASE_URL');
  return PG_ADMIN_URL;
}

export function requireRedis(): string {
  if (!REDIS_URL) throw new Error('Redis is required: set REDIS_URL');
  return REDIS_URL;
}

export function uniqueName(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${crypto.randomBytes(4).toString('hex')}`;
}

/** Make a fresh, empty database on the test server; returns its URL and a dropper. */
export async function createTestDatabase(prefix = 'tb_test'): Promise<{ url: string; name: string; drop(): Promise<void> }> {
  const adminUrl = requirePg();
  const name = uniqueName(prefix);
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    async drop() {
      const c = new pg.Client({ connectionString: adminUrl });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}
