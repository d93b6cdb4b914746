/**
 * The CLI (src/cli.ts): help and usage errors, main-database migrations,
 * create-admin and init, in-process on each database mode; and the entry point
 * itself once as a child process (tsx), as `npm run cli` runs it.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli.js';
import { loadConfig, type Config } from '../../src/config.js';
import { openDatabase, type Database } from '../../src/db/index.js';
import { controlMigrations } from '../../src/db/migrations/control/index.js';
import { tenantMigrations } from '../../src/db/migrations/tenant/index.js';
import { verifyPassword } from '../../src/auth/passwords.js';
import { dbModes } from '../helpers/app.js';
import { createTestDatabase } from '../helpers/env.js';

const run = promisify(execFile);
/** Scratch directories for on-disk PGlite: a RAM disk when there is one (initdb writes a lot). */
const SCRATCH = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();

async function cli(argv: string[], config?: Config, extra: { interactive?: boolean; ask?: (q: string) => Promise<string> } = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(argv, { config, out: (l) => out.push(l), err: (l) => err.push(l), ...extra });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

const lastTenantMigration = Object.keys(tenantMigrations).sort().at(-1)!;

describe('cli help and usage', () => {
  it('--help lists every command', async () => {
    const r = await cli(['--help']);
    expect(r.code).toBe(0);
    for (const c of ['migrate', 'migrate:down', 'migrate:status', 'tenants:migrate', 'create-admin', 'init']) expect(r.out).toContain(`  ${c} `);
  });

  it('shows a command\'s usage with --help, and fails with 2 on unknown commands, options or values', async () => {
    const h = await cli(['tenants:migrate', '--help']);
    expect(h.code).toBe(0);
    expect(h.out).toContain('tenants:migrate [--dry-run] [--tenant-id ID] [--concurrency N] [--history]');
    const unknown = await cli(['frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.err).toContain('Unknown command "frobnicate"');
    const badOption = await cli(['migrate', '--force']);
    expect(badOption.code).toBe(2);
    expect(badOption.err).toMatch(/Unknown option '--force'/);
    expect(badOption.err).toContain('Usage: cli migrate');
    const none = await cli([]);
    expect(none.code).toBe(2);
  });
});

describe.each(dbModes())('cli on %s', (mode) => {
  let config: Config;
  let dataDir: string;
  let drop: (() => Promise<void>) | undefined;
  let database: Database | undefined;

  beforeAll(async () => {
    dataDir = fs.mkdtempSync(path.join(SCRATCH, 'tb-cli-'));
    const base = loadConfig({ NODE_ENV: 'test', DATA_DIR: dataDir });
    if (mode === 'postgres') {
      const db = await createTestDatabase('tb_cli');
      drop = db.drop;
      config = { ...base, databaseUrl: db.url, tenantDbServers: [db.url], tenantPoolMaxTotal: 4 };
    } else {
      config = base;
    }
  });
  afterAll(async () => {
    await database?.close();
    await drop?.();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  /** The same database, opened after the CLI has closed it (PGlite is one process's at a time). */
  async function withDb<T>(fn: (db: Database['db']) => Promise<T>): Promise<T> {
    const d = await openDatabase({ databaseUrl: config.databaseUrl, pgliteDir: config.pgliteDir, poolMax: 2 });
    try {
      return await fn(d.db);
    } finally {
      await d.close();
    }
  }

  it('create-admin before migrating says to migrate first', async () => {
    const r = await cli(['create-admin', '--email', 'early@example.com', '--password', 'long enough pw'], config);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/pending .* migrations .*run "cli migrate" first/);
  });

  it('migrate:status, migrate, migrate:down, migrate again', async () => {
    const before = await cli(['migrate:status'], config);
    expect(before.code).toBe(0);
    expect(before.out).toContain(mode === 'postgres' ? 'Database: PostgreSQL' : 'Database: embedded PGlite');
    const total = Object.keys(controlMigrations).length + Object.keys(tenantMigrations).length;
    expect(before.out).toContain(`${total} pending`);
    expect(before.out).toMatch(/\[ \] 0001_identity/);

    const up = await cli(['migrate'], config);
    expect(up.code, up.err).toBe(0);
    expect(up.out).toContain(`control plane: applied ${Object.keys(controlMigrations).join(', ')}`);
    expect(up.out).toContain(`shared tenant tables: applied ${Object.keys(tenantMigrations).join(', ')}`);
    const status = await cli(['migrate:status'], config);
    expect(status.out).toContain('Up to date.');
    expect(status.out).toMatch(/\[x\] 0001_identity\s+applied \d{4}-/);
    const again = await cli(['migrate'], config);
    expect(again.out).toContain('control plane: up to date');

    const down = await cli(['migrate:down'], config);
    expect(down.code, down.err).toBe(0);
    expect(down.out).toContain(`shared tenant tables: rolled back ${lastTenantMigration}`);
    expect((await cli(['migrate:status'], config)).out).toContain('1 pending');
    const badSet = await cli(['migrate:down', '--set', 'everything'], config);
    expect(badSet.code).toBe(2);
    const redo = await cli(['migrate'], config);
    expect(redo.out).toContain(`shared tenant tables: applied ${lastTenantMigration}`);
  });

  it('create-admin creates an active user, and with --tenant makes them its admin; running it again changes nothing', async () => {
    const r = await cli(['create-admin', '--email', 'Root@Example.com', '--password', 'a strong password', '--tenant', 'Ops Team'], config);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/Created user root@example.com \([0-9a-f-]{36}\), active/);
    expect(r.out).toMatch(/Created organization "Ops Team" \([0-9a-f-]{36}, shared\) with root@example.com as admin/);

    const again = await cli(['create-admin', '--email', 'root@example.com', '--password', 'another password', '--tenant', 'ops team'], config);
    expect(again.code).toBe(0);
    expect(again.out).toContain('already exists');
    expect(again.out).toContain('already exists with root@example.com as admin');

    await withDb(async (db) => {
      const user = await db.selectFrom('users').selectAll().where('email', '=', 'root@example.com').executeTakeFirstOrThrow();
      expect(user.is_active).toBe(true);
      expect(await verifyPassword(user.password_hash, 'a strong password')).toBe(true);
      const tenants = await db.selectFrom('tenants').select(['id', 'name']).where('name', '=', 'Ops Team').execute();
      expect(tenants).toHaveLength(1);
      expect(user.default_tenant_id).toBe(tenants[0].id);
      const m = await db.selectFrom('memberships').select('role').where('user_id', '=', user.id).where('tenant_id', '=', tenants[0].id).executeTakeFirstOrThrow();
      expect(m.role).toBe('admin');
      // Demoted by someone: create-admin --tenant promotes them back.
      await db.updateTable('memberships').set({ role: 'viewer' }).where('user_id', '=', user.id).execute();
    });
    const promote = await cli(['create-admin', '--email', 'root@example.com', '--tenant', 'Ops Team', '--password', 'x'.repeat(8)], config);
    expect(promote.out).toContain('promoted to admin');
  });

  it('create-admin refuses bad input with a clear message', async () => {
    const short = await cli(['create-admin', '--email', 'short@example.com', '--password', 'short'], config);
    expect(short.code).toBe(1);
    expect(short.err).toMatch(/password must be 8 to 256 characters/);
    const email = await cli(['create-admin', '--email', 'not-an-email', '--password', 'long enough pw'], config);
    expect(email.code).toBe(1);
    expect(email.err).toMatch(/not a valid email/);
    const missing = await cli(['create-admin', '--password', 'long enough pw'], config);
    expect(missing.code).toBe(2);
    expect(missing.err).toContain('--email is required');
    const iso = await cli(['create-admin', '--email', 'a@example.com', '--password', 'long enough pw', '--isolation', 'solo'], config);
    expect(iso.code).toBe(2);
  });

  it('create-admin asks for what is missing on an interactive terminal', async () => {
    const asked: string[] = [];
    const r = await cli(['create-admin', '--email', 'asked@example.com'], config, {
      interactive: true,
      ask: async (q) => {
        asked.push(q);
        return 'typed password';
      },
    });
    expect(r.code, r.err).toBe(0);
    expect(asked).toEqual(['Admin password: ']);
  });

  it('init --create-admin --create-test-tenant --non-interactive: migrate, admin and test tenant; idempotent', async () => {
    const withAdmin = { ...config, admin: { email: 'init-admin@example.com', password: 'init password 1', testTenantName: 'Test Organization' } };
    const first = await cli(['init', '--create-admin', '--create-test-tenant', '--non-interactive'], withAdmin);
    expect(first.code, first.err).toBe(0);
    expect(first.out).toContain('Created user init-admin@example.com');
    expect(first.out).toMatch(/Created organization "Test Organization" .* with init-admin@example.com as admin/);
    expect(first.out).toContain('Initialized.');
    const second = await cli(['init', '--create-admin', '--create-test-tenant', '--non-interactive'], withAdmin);
    expect(second.code).toBe(0);
    expect(second.out).toContain('control plane: up to date');
    expect(second.out).toContain('already exists');
    await withDb(async (db) => {
      const users = await db.selectFrom('users').select('id').where('email', '=', 'init-admin@example.com').execute();
      expect(users).toHaveLength(1);
      const tenants = await db.selectFrom('tenants').select('id').where('name', '=', 'Test Organization').execute();
      expect(tenants).toHaveLength(1);
    });

    const noPassword = await cli(['init', '--create-admin', '--non-interactive'], { ...config, admin: { email: 'x@example.com' } });
    expect(noPassword.code).toBe(2);
    expect(noPassword.err).toContain('ADMIN_PASSWORD is required');
    // Without flags: the admin only when ADMIN_EMAIL and ADMIN_PASSWORD are set; a tenant name alone is not enough.
    const plain = await cli(['init'], { ...config, admin: { testTenantName: 'Lonely Tenant' } });
    expect(plain.code).toBe(0);
    expect(plain.out).toContain('No admin requested');
  });

  it('tenants:migrate migrates the shared tables; --history lists them', async () => {
    const r = await cli(['tenants:migrate'], config);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/\[1\/1\] shared tables \(main database, \d+ shared tenants?\): up to date/);
    expect(r.out).toMatch(/Summary: 1 database\(s\): 0 migrated, 1 up to date, 0 failed/);
    const h = await cli(['tenants:migrate', '--history'], config);
    expect(h.code).toBe(0);
    expect(h.out).toMatch(new RegExp(`${lastTenantMigration}\\s+\\d{4}-`));
  });
});

describe('cli entry point', () => {
  it('runs as `tsx src/cli.ts` with --help and migrate:status on a fresh embedded database', async () => {
    const dataDir = fs.mkdtempSync(path.join(SCRATCH, 'tb-cli-proc-'));
    try {
      const env = { ...process.env, DATA_DIR: dataDir, DATABASE_URL: '', NODE_ENV: 'test', USE_VAULT: 'false' };
      const tsx = path.resolve('node_modules/.bin/tsx');
      const help = await run(tsx, ['src/cli.ts', '--help'], { env });
      expect(help.stdout).toContain('tenants:migrate');
      const status = await run(tsx, ['src/cli.ts', 'migrate:status'], { env, timeout: 60_000 });
      expect(status.stdout).toContain(`Database: embedded PGlite at ${path.join(dataDir, 'pglite')}`);
      expect(status.stdout).toContain('pending: run "migrate"');
      const bad = await run(tsx, ['src/cli.ts', 'nope'], { env }).catch((e) => e);
      expect(bad.code).toBe(2);
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 90_000);
});
