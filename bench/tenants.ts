/**
 * Dedicated-tenant benchmark (`npx tsx bench/tenants.ts`), on PostgreSQL
 * (BENCH_DATABASE_URL / TEST_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres):
 *
 * 1. Provisioning: create ~10 dedicated tenants one after the other (CREATE
 *    DATABASE + every tenant migration + the control-plane record); mean, p50,
 *    max. Target: under 1 s each.
 * 2. tenants:migrate: 100 dedicated tenants, each rolled back one step, then
 *    migrated all with the default concurrency. Target: under 60 s in total.
 *
 * Everything it creates (a scratch control database and every tenant database) is dropped at the end.
 */
import { performance } from 'node:perf_hooks';
import { loadConfig } from '../src/config.js';
import { openDatabase, type Database } from '../src/db/index.js';
import { migrateDown, migrateMain } from '../src/db/migrate.js';
import { tenantMigrations } from '../src/db/migrations/tenant/index.js';
import { DedicatedTenantDatabases } from '../src/tenants/dedicated.js';
import { DEFAULT_MIGRATE_CONCURRENCY, migrateAllTenants } from '../src/tenants/migrate-all.js';
import { createTenant, type TenancyDeps } from '../src/tenants/service.js';
import { createScratchDatabase, PG_ADMIN_URL, type ScratchDatabase } from './lib/pg.js';
import { fmtMs, fmtSec, table } from './lib/report.js';

const CREATE_RUNS = Number(process.env.BENCH_TENANT_CREATES ?? 10);
const MIGRATE_TENANTS = Number(process.env.BENCH_TENANT_MIGRATE ?? 100);
const SETUP_CONCURRENCY = 8;
const CREATE_TARGET_MS = 1000;
const MIGRATE_TARGET_MS = 60_000;

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

async function inParallel<T>(items: T[], n: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
    while (next < items.length) {
      const i = next;
      next += 1;
      await fn(items[i], i);
    }
  }));
}

async function main(): Promise<void> {
  const started = performance.now();
  let scratch: ScratchDatabase | undefined;
  let database: Database | undefined;
  let dedicated: DedicatedTenantDatabases | undefined;
  try {
    scratch = await createScratchDatabase('tb_bench_tenants');
    const config = loadConfig({ NODE_ENV: 'production', SECRET_KEY: 'x'.repeat(40), DATABASE_URL: scratch.url, LOG_LEVEL: 'silent' });
    database = await openDatabase({ databaseUrl: config.databaseUrl, pgliteDir: config.pgliteDir, poolMax: 10 });
    await migrateMain(database.db);
    dedicated = new DedicatedTenantDatabases({ servers: [scratch.url], poolMaxTotal: 20 });
    const deps: TenancyDeps = { db: database.db, config, dedicated };
    const owner = await database.db
      .insertInto('users')
      .values({ email: 'bench-owner@example.com', password_hash: 'x', default_tenant_id: null })
      .returning('id')
      .executeTakeFirstOrThrow();

    console.log(`Dedicated tenants on ${new URL(PG_ADMIN_URL).host} (${Object.keys(tenantMigrations).length} tenant migrations each)\n`);

    // 1. Provisioning, one after the other.
    const times: number[] = [];
    for (let i = 0; i < CREATE_RUNS; i += 1) {
      const t0 = performance.now();
      await createTenant(deps, { name: `Bench Create ${i}`, isolation: 'dedicated', userId: owner.id });
      times.push(performance.now() - t0);
    }
    const sorted = [...times].sort((a, b) => a - b);
    const mean = times.reduce((a, b) => a + b, 0) / times.length;

    // 2. tenants:migrate over many tenants one step behind.
    const setup0 = performance.now();
    await inParallel(Array.from({ length: MIGRATE_TENANTS }, (_, i) => i), SETUP_CONCURRENCY, async (i) => {
      await createTenant(deps, { name: `Bench Migrate ${i}`, isolation: 'dedicated', userId: owner.id });
    });
    const refs = await database.db.selectFrom('tenants').select(['id', 'isolation', 'db_server', 'db_name'])
      .where('name', 'like', 'Bench Migrate %').execute();
    await inParallel(refs, SETUP_CONCURRENCY, async (r) => {
      await migrateDown(dedicated!.dbFor(r), 'tenant');
    });
    const setupMs = performance.now() - setup0;

    const summary = await migrateAllTenants({ db: database.db, dedicated });
    const migrated = summary.results.filter((r) => r.kind === 'dedicated' && r.status === 'migrated').length;
    if (summary.failed) throw new Error(`tenants:migrate failed for ${summary.failed} database(s): ${summary.results.find((r) => r.error)?.error}`);
    const perTenant = summary.ms / Math.max(1, migrated);

    console.log(table(
      ['measure', 'n', 'mean', 'p50', 'max', 'target', 'ratio to target'],
      [
        ['create a dedicated tenant', String(times.length), fmtMs(mean), fmtMs(pct(sorted, 50)), fmtMs(sorted.at(-1)), '< 1 s',
          `${(mean / CREATE_TARGET_MS).toFixed(2)}× (max ${((sorted.at(-1) ?? 0) / CREATE_TARGET_MS).toFixed(2)}×)`],
        [`tenants:migrate (concurrency ${DEFAULT_MIGRATE_CONCURRENCY})`, String(migrated), `${fmtMs(perTenant)} / tenant`, '', '', '< 60 s total',
          `${fmtSec(summary.ms)} total = ${(summary.ms / MIGRATE_TARGET_MS).toFixed(3)}×`],
      ],
    ));
    console.log(`\n(setup: ${MIGRATE_TENANTS} tenants created and rolled back one step in ${fmtSec(setupMs)}; ` +
      `tenant connection budget ${dedicated.stats().maxTotal} connections)`);
  } finally {
    const cleanup0 = performance.now();
    if (database && dedicated) {
      const rows = await database.db.selectFrom('tenants').select(['db_server', 'db_name']).where('isolation', '=', 'dedicated').execute().catch(() => []);
      await inParallel(rows, SETUP_CONCURRENCY, async (r) => {
        await dedicated!.dropDatabase(dedicated!.server(r.db_server), r.db_name!).catch((err) => console.error(`could not drop ${r.db_name}: ${err.message}`));
      });
    }
    await dedicated?.close();
    await database?.close();
    await scratch?.drop();
    console.log(`cleanup ${fmtSec(performance.now() - cleanup0)}; total ${fmtSec(performance.now() - started)}`);
  }
}

await main();
