/**
 * The document list's query plans on PostgreSQL with 100 000 documents in one
 * tenant (and as many in a second tenant of the same shared database): the
 * exact SQL `listDocuments` sends, EXPLAIN (ANALYZE, BUFFERS) as the RLS-scoped
 * app role inside `withTenant`. A scratch database, dropped at the end.
 *
 *   npx tsx bench/documents-explain.ts [--rows 100000]
 */
import { parseArgs } from 'node:util';
import { Kysely, PostgresDialect, sql, type CompiledQuery } from 'kysely';
import pg from 'pg';
import { migrateMain } from '../src/db/migrate.js';
import { createTenantDatabases } from '../src/db/tenant-db.js';
import type { ControlSchema } from '../src/db/schema.js';
import { listDocuments } from '../src/documents/queries.js';
import { createScratchDatabase } from './lib/pg.js';

const { values: opts } = parseArgs({ options: { rows: { type: 'string', default: '100000' } } });
const ROWS = Math.max(1000, Number(opts.rows) || 100_000);

const TENANT_A = '0a0a0a0a-0000-4000-8000-00000000000a';
const TENANT_B = '0b0b0b0b-0000-4000-8000-00000000000b';

async function main() {
  const scratch = await createScratchDatabase('tb_docs_explain');
  const onSignal = () => void scratch.drop().finally(() => process.exit(130));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.stdout.on('error', () => undefined); // a closed pipe (| head) must not skip the cleanup
  const captured: CompiledQuery[] = [];
  const pool = new pg.Pool({ connectionString: scratch.url, max: 4 });
  const db = new Kysely<ControlSchema>({
    dialect: new PostgresDialect({ pool }),
    log: (e) => { if (e.level === 'query') captured.push(e.query); },
  });
  try {
    await migrateMain(db);
    for (const [id, name] of [[TENANT_A, 'Explain A'], [TENANT_B, 'Explain B']]) {
      await db.insertInto('tenants').values({ id, name, slug: name.toLowerCase().replace(' ', '_'), storage_quota_mb: 100_000 }).execute();
    }
    const t0 = Date.now();
    for (const tid of [TENANT_A, TENANT_B]) {
      await sql`
        INSERT INTO files (tenant_id, sha256, md5, size, storage_key)
        SELECT ${tid}::uuid, md5(${tid} || i::text) || md5(i::text || ${tid}), md5(i::text), 1000 + i, 'k' || i
        FROM generate_series(1, ${ROWS}) i`.execute(db);
      await sql`
        INSERT INTO documents (tenant_id, file_id, filename, mime_type, size, status, user_id, uploaded_by_email, created_at, updated_at)
        SELECT f.tenant_id, f.id,
               CASE WHEN n % 1000 = 0 THEN 'Quarterly Report ' || n || '.pdf' ELSE 'file-' || n || '.txt' END,
               'text/plain', f.size,
               CASE WHEN n % 50 = 0 THEN 'failed' WHEN n % 10 = 0 THEN 'pending' ELSE 'ready' END,
               gen_random_uuid(), 'user' || (n % 100) || '@example.com',
               now() - (n || ' seconds')::interval, now()
        FROM (SELECT f.*, row_number() OVER (ORDER BY f.id) AS n FROM files f WHERE f.tenant_id = ${tid}::uuid) f`.execute(db);
    }
    // The steady state: autovacuum has set the visibility map and statistics.
    await sql`VACUUM ANALYZE`.execute(db);
    const indexes = await sql<{ indexname: string }>`SELECT indexname FROM pg_indexes WHERE tablename = 'documents' ORDER BY 1`.execute(db);
    console.log(`documents indexes: ${indexes.rows.map((r) => r.indexname).join(', ')}`);
    console.log(`seeded ${ROWS} documents in each of 2 tenants in ${((Date.now() - t0) / 1000).toFixed(1)} s (${scratch.name})\n`);

    const tenantDbs = createTenantDatabases(db);
    const ref = { id: TENANT_A, isolation: 'shared' as const, db_server: null, db_name: null };
    const scenarios: Array<[string, Parameters<typeof listDocuments>[2], { limit: number; offset: number }]> = [
      ['page 1 of 20, no filter', {}, { limit: 20, offset: 0 }],
      ['page 2500 of 20 (offset 49 980)', {}, { limit: 20, offset: 49_980 }],
      ['status=failed, page 1', { status: 'failed' }, { limit: 20, offset: 0 }],
      ['filename~"report" (rare: 0.1 %), page 1', { filename: 'report' }, { limit: 20, offset: 0 }],
      ['filename~"file-1" (common: ~11 %), page 1', { filename: 'file-1' }, { limit: 20, offset: 0 }],
    ];
    for (const [label, filter, page] of scenarios) {
      captured.length = 0;
      await tenantDbs.withTenant(ref, (trx) => listDocuments(trx, TENANT_A, filter, page));
      const queries = captured.filter((q) => /^select/i.test(q.sql) && !/set_config/.test(q.sql));
      console.log(`=== ${label}: ${queries.length} queries`);
      for (const q of queries) {
        // Same scope as withTenant: app.tenant_id set, the RLS-bound app role active.
        const c = await pool.connect();
        let plan: string[];
        try {
          await c.query('BEGIN');
          await c.query(`SELECT set_config('app.tenant_id', $1, true), set_config('role', 'app_user', true)`, [TENANT_A]);
          const r = await c.query(`EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) ${q.sql}`, q.parameters as unknown[]);
          plan = r.rows.map((row: Record<string, string>) => row['QUERY PLAN']);
          await c.query('ROLLBACK');
        } finally {
          c.release();
        }
        console.log(`--- ${q.sql.length > 160 ? `${q.sql.slice(0, 160)}...` : q.sql}`);
        console.log(plan.map((line) => `    ${line}`).join('\n'));
      }
      console.log('');
    }
  } finally {
    await db.destroy();
    await scratch.drop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
