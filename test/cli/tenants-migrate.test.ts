/**
 * `cli tenants:migrate` over several dedicated tenant databases on PostgreSQL:
 * one step behind each, one whose database is gone and one whose migration
 * table is broken. The healthy ones migrate, the failures are reported with
 * their error; --dry-run changes nothing; --history and --tenant-id.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { runCli } from '../../src/cli.js';
import { migrateDown } from '../../src/db/migrate.js';
import { tenantMigrations } from '../../src/db/migrations/tenant/index.js';
import { pendingTenantMigrations } from '../../src/tenants/migrate-all.js';
import type { TenantRef } from '../../src/db/tenant-db.js';
import { buildTestApp, signUp, type TestApp } from '../helpers/app.js';
import { HAS_PG, requirePg } from '../helpers/env.js';
import { closeWithTenantDatabases, createTenant, tenantRef } from '../tenants/helpers.js';

if (!HAS_PG) console.warn('[tests] tenants:migrate over dedicated databases not run: it needs PostgreSQL (set TEST_DATABASE_URL)');

const last = Object.keys(tenantMigrations).sort().at(-1)!;

async function cli(argv: string[], t: TestApp) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(argv, { config: t.config, out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out: out.join('\n'), err: err.join('\n'), all: [...out, ...err].join('\n') };
}

describe.skipIf(!HAS_PG)('tenants:migrate over dedicated databases', () => {
  let t: TestApp;
  let app: FastifyInstance;
  let healthy: TenantRef[];
  let gone: TenantRef;
  let broken: TenantRef;
  let sharedTenantId: string;

  beforeAll(async () => {
    requirePg();
    t = await buildTestApp({ mode: 'postgres', config: { tenantPoolMaxTotal: 4 } });
    app = t.app;
    const admin = await signUp(app, { organization_name: `Shared ${Date.now()}` });
    sharedTenantId = admin.organizationId!;
    const refs: TenantRef[] = [];
    for (let i = 0; i < 5; i += 1) refs.push(await tenantRef(app, (await createTenant(app, admin.auth, { isolation: 'dedicated' })).id));
    // Every dedicated database one step behind.
    for (const r of refs) await migrateDown(app.dedicatedTenants!.dbFor(r), 'tenant');
    [gone, broken, ...healthy] = refs;
    // One database dropped, one with a migration the code does not know.
    await app.dedicatedTenants!.dropDatabase(app.dedicatedTenants!.server(gone.db_server), gone.db_name!);
    await app.dedicatedTenants!.dbFor(broken).insertInto('tenant_migration' as any).values({ name: '9999_from_the_future', timestamp: new Date().toISOString() }).execute();
  });
  afterAll(async () => closeWithTenantDatabases(t));

  const pending = (r: TenantRef) => pendingTenantMigrations(app.dedicatedTenants!.dbFor(r));

  it('--dry-run lists what would be applied and changes nothing', async () => {
    const r = await cli(['tenants:migrate', '--dry-run'], t);
    expect(r.code).toBe(1);
    expect(r.out).toContain('Dry run: nothing is changed.');
    for (const h of healthy) expect(r.out).toContain(`${h.db_name} (`);
    expect(r.out).toMatch(new RegExp(`would apply ${last}`));
    expect(r.out).toMatch(/Summary: 6 database\(s\): 3 with pending migrations, 1 up to date, 2 failed/);
    for (const h of healthy) expect(await pending(h)).toEqual([last]);
  });

  it('migrates every healthy database; the failures are reported with their errors and do not stop the others', async () => {
    const r = await cli(['tenants:migrate', '--concurrency', '2'], t);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/\[1\/6\] shared tables \(main database, 1 shared tenant\): up to date/);
    for (const h of healthy) expect(r.out).toMatch(new RegExp(`${h.db_name} \\(.*${h.id}\\): applied ${last}`));
    expect(r.err).toMatch(new RegExp(`${gone.db_name} .*FAILED: .*database "${gone.db_name}" does not exist`));
    expect(r.err).toMatch(new RegExp(`${broken.db_name} .*FAILED: .*9999_from_the_future`));
    expect(r.out).toMatch(/Summary: 6 database\(s\): 3 migrated, 1 up to date, 2 failed in \d+\.\d\d s\./);
    expect(r.err).toMatch(new RegExp(`failed: ${gone.db_name} \\(${gone.id}\\): .*does not exist`));
    for (const h of healthy) expect(await pending(h)).toEqual([]);

    // Run again: nothing left to do for the healthy ones.
    const again = await cli(['tenants:migrate'], t);
    expect(again.out).toMatch(/0 migrated, 4 up to date, 2 failed/);
  });

  it('--tenant-id migrates one tenant (its own database, or the shared tables for a shared tenant)', async () => {
    const target = healthy[0];
    await migrateDown(app.dedicatedTenants!.dbFor(target), 'tenant');
    const one = await cli(['tenants:migrate', '--tenant-id', target.id], t);
    expect(one.code, one.all).toBe(0);
    expect(one.out).toMatch(/Summary: 1 database\(s\): 1 migrated, 0 up to date, 0 failed/);
    expect(one.out).not.toContain('shared tables');
    expect(await pending(target)).toEqual([]);

    const shared = await cli(['tenants:migrate', '--tenant-id', sharedTenantId], t);
    expect(shared.code).toBe(0);
    expect(shared.out).toMatch(/\[1\/1\] shared tables/);

    const unknown = await cli(['tenants:migrate', '--tenant-id', '00000000-0000-4000-8000-000000000000'], t);
    expect(unknown.code).toBe(1);
    expect(unknown.err).toContain('No tenant with id 00000000-0000-4000-8000-000000000000');
    const malformed = await cli(['tenants:migrate', '--tenant-id', 'abc'], t);
    expect(malformed.code).toBe(1);
    const badConcurrency = await cli(['tenants:migrate', '--concurrency', '0'], t);
    expect(badConcurrency.code).toBe(2);
  });

  it('--history shows each database\'s applied versions and the errors of the broken ones', async () => {
    const r = await cli(['tenants:migrate', '--history'], t);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/shared tables \(main database, 1 shared tenant\):\n\s+0001_documents\s+\d{4}-\d\d-\d\dT/);
    for (const h of healthy) {
      const block = r.out.split(`${h.db_name} (`)[1];
      for (const name of Object.keys(tenantMigrations)) expect(block).toMatch(new RegExp(`^[\\s\\S]*?\\n\\s+${name}\\s+\\d{4}-`));
    }
    expect(r.out).toMatch(new RegExp(`${gone.db_name} \\([^\\n]*\\):\\n\\s+ERROR: .*does not exist`));
    expect(r.out).toMatch(new RegExp(`${broken.db_name} \\([^\\n]*\\):[\\s\\S]*?9999_from_the_future`));
  });
});
