/**
 * Command-line tasks: `npm run cli -- <command>` (tsx) or `node dist/src/cli.js <command>`.
 * Configuration comes from the environment / .env / Vault like the server
 * (no DATABASE_URL = the embedded PGlite under DATA_DIR). Exit codes: 0 done,
 * 1 failed, 2 bad usage.
 *
 * Add a command: one entry in COMMANDS (name, usage, summary, options, run).
 */
import path from 'node:path';
import readline from 'node:readline';
import { pathToFileURL } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { sql } from 'kysely';
import type { Config } from './config.js';
import { describeDatabase, openDatabase, type Database } from './db/index.js';
import { migrateDown, migrateToLatest, migrationStatus, type MigrationSet } from './db/migrate.js';
import type { Isolation } from './db/schema.js';
import { AppError } from './http/errors.js';
import { loadRuntimeConfig } from './runtime.js';
import { createTenantDatabases } from './db/tenant-db.js';
import { createBlobStore } from './storage/index.js';
import { runFilesGc } from './documents/gc.js';
import { storageRoot } from './storage/owner.js';
import { createOutboxNotifier, registerOutboxNotifier, settleOutboxWrites, type OutboxNotifier } from './events/wake.js';
import { DedicatedTenantDatabases } from './tenants/dedicated.js';
import {
  DEFAULT_MIGRATE_CONCURRENCY, migrateAllTenants, tenantMigrationHistory, UnknownTenantError, type TargetResult,
} from './tenants/migrate-all.js';
import { BootstrapError, ensureTenantWithAdmin, ensureUser } from './tenants/bootstrap.js';
import type { TenancyDeps } from './tenants/service.js';

export interface CliIo {
  out(line: string): void;
  err(line: string): void;
  /** Ask a question (interactive terminals only). */
  ask?(question: string, opts?: { hidden?: boolean }): Promise<string>;
}

export interface CliOptions extends Partial<CliIo> {
  /** Use this configuration instead of loading it (tests). */
  config?: Config;
  interactive?: boolean;
}

interface Ctx {
  io: CliIo;
  interactive: boolean;
  config(): Promise<Config>;
  /** The main database (closed when the command ends). */
  database(): Promise<Database>;
  /** Dedicated tenant databases, or null on the embedded database (closed when the command ends). */
  dedicated(): Promise<DedicatedTenantDatabases | null>;
}

type Values = Record<string, string | boolean | undefined>;

interface Command {
  name: string;
  usage: string;
  summary: string;
  options?: ParseArgsConfig['options'];
  run(ctx: Ctx, values: Values): Promise<number>;
}

class UsageError extends Error {}

const SETS: MigrationSet[] = ['control', 'tenant'];
const SET_LABEL: Record<MigrationSet, string> = { control: 'control plane', tenant: 'shared tenant tables' };

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v.trim() !== '' ? v.trim() : undefined;
}

function isolationOption(v: unknown): Isolation {
  const s = str(v) ?? 'shared';
  if (s !== 'shared' && s !== 'dedicated') throw new UsageError(`--isolation must be shared or dedicated, got "${s}"`);
  return s;
}

async function requireMigrated(ctx: Ctx): Promise<void> {
  const db = (await ctx.database()).db;
  for (const set of SETS) {
    const pending = (await migrationStatus(db, set)).filter((m) => !m.executedAt);
    if (pending.length) {
      throw new BootstrapError(`The database has pending ${SET_LABEL[set]} migrations (${pending.map((m) => m.name).join(', ')}): run "cli migrate" first`);
    }
  }
}

/** Both sets of the main database, saying what was applied. */
async function migrateMainDatabase(ctx: Ctx): Promise<void> {
  const db = (await ctx.database()).db;
  ctx.io.out(`Database: ${describeDatabase(await ctx.config())}`);
  for (const set of SETS) {
    const r = await migrateToLatest(db, set);
    const applied = (r.results ?? []).filter((m) => m.status === 'Success').map((m) => m.migrationName);
    ctx.io.out(applied.length ? `${SET_LABEL[set]}: applied ${applied.join(', ')}` : `${SET_LABEL[set]}: up to date`);
  }
}

async function tenancy(ctx: Ctx): Promise<TenancyDeps> {
  return { db: (await ctx.database()).db, config: await ctx.config(), dedicated: await ctx.dedicated() };
}

async function credential(ctx: Ctx, given: string | undefined, question: string, hidden: boolean, what: string): Promise<string> {
  if (given) return given;
  if (ctx.interactive && ctx.io.ask) {
    const answer = (await ctx.io.ask(question, { hidden })).trim();
    if (answer) return answer;
  }
  throw new UsageError(`${what} is required`);
}

async function createAdminAndTenant(
  ctx: Ctx,
  p: { email: string; password: string; firstName?: string; lastName?: string; tenant?: string; isolation: Isolation },
): Promise<void> {
  const { io } = ctx;
  const deps = await tenancy(ctx);
  const user = await ensureUser(deps.db, p);
  if (user.created) io.out(`Created user ${user.email} (${user.id}), active.`);
  else io.out(`User ${user.email} already exists (${user.id}); left unchanged${user.isActive ? '' : ' — note: the account is deactivated'}.`);
  if (!p.tenant) return;
  const t = await ensureTenantWithAdmin(deps, { name: p.tenant, userId: user.id, isolation: p.isolation });
  if (t.created) io.out(`Created organization "${t.name}" (${t.id}, ${t.isolation}) with ${user.email} as admin.`);
  else if (t.membership === 'unchanged') io.out(`Organization "${t.name}" (${t.id}) already exists with ${user.email} as admin.`);
  else io.out(`Organization "${t.name}" (${t.id}) already exists: ${user.email} ${t.membership === 'added' ? 'added as' : 'promoted to'} admin.`);
}

function sharedLabel(n = 0): string {
  return `shared tables (main database, ${n} shared tenant${n === 1 ? '' : 's'})`;
}

function printMigrateResult(io: CliIo, r: TargetResult, done: number, total: number): void {
  const width = String(total).length;
  const who = r.kind === 'shared' ? sharedLabel(r.sharedTenants) : `${r.label} (${r.tenantName}, ${r.tenantId})`;
  const what = {
    migrated: `applied ${r.migrations.join(', ')}`,
    up_to_date: 'up to date',
    pending: `would apply ${r.migrations.join(', ')}`,
    failed: `FAILED: ${r.error}`,
  }[r.status];
  const line = `[${String(done).padStart(width)}/${total}] ${who}: ${what} (${r.ms} ms)`;
  if (r.status === 'failed') io.err(line);
  else io.out(line);
}

const COMMANDS: Command[] = [
  {
    name: 'files:gc',
    usage: 'files:gc [--dry-run]',
    summary: 'Find and remove orphans left by crashes (bytes without rows, rows without bytes, unreferenced files) and recompute quotas and document counts',
    options: { 'dry-run': { type: 'boolean' } },
    async run(ctx, values) {
      const config = await ctx.config();
      await requireMigrated(ctx);
      const database = await ctx.database();
      const tenantDbs = createTenantDatabases(database.db, database.pool);
      const dedicated = await ctx.dedicated();
      if (dedicated) tenantDbs.setDedicatedResolver(dedicated);
      const storage = await createBlobStore({ s3: config.s3, localRoot: config.uploadFolder });
      const dryRun = values['dry-run'] === true;
      const root = storageRoot(storage, config.uploadFolder);
      ctx.io.out(`${dryRun ? 'Dry run: ' : ''}collecting orphans on ${describeDatabase(config)}, storage ${root.where}`);
      try {
        const r = await runFilesGc({
          db: database.db, tenantDbs, storage, dryRun, log: (line) => ctx.io.out(line),
          describe: { ...root, database: describeDatabase(config) },
        });
        const t = r.totals;
        ctx.io.out(
          `${dryRun ? 'Would remove' : 'Removed'}: ${t.unreferencedFiles} unreferenced files, ${t.filesWithoutBytes} rows without bytes, ` +
            `${t.bytesWithoutRows} blobs without rows (${t.bytesWithoutRowsSize} bytes), ${r.staging.removed.length} staging leftovers ` +
            `(${r.staging.bytes} bytes); ${t.bytesFreed} bytes in all; ${t.quotaCorrections} quota corrections; ` +
            `${t.documentCountCorrections} document count corrections; ${t.errors} tenants failed`,
        );
        if (t.unknownTenantBlobs > 0) {
          ctx.io.out(
            `Kept: ${t.unknownTenantBlobs} blobs (${t.unknownTenantBlobsSize} bytes) of ${r.unknownTenants.length} tenant(s) this database does not know ` +
              `(${r.unknownTenants.map((u) => u.tenantId).join(', ')}): not removed; check where they come from.`,
          );
        }
        return t.errors ? 1 : 0;
      } finally {
        await storage.close?.();
      }
    },
  },
  {
    name: 'migrate',
    usage: 'migrate',
    summary: 'Apply pending migrations to the main database (control plane, then the shared tenant tables)',
    async run(ctx) {
      await migrateMainDatabase(ctx);
      ctx.io.out('Dedicated tenant databases are migrated by "tenants:migrate".');
      return 0;
    },
  },
  {
    name: 'migrate:down',
    usage: 'migrate:down [--set control|tenant]',
    summary: 'Roll back the most recently applied migration of the main database (or of the given set)',
    options: { set: { type: 'string' } },
    async run(ctx, values) {
      const db = (await ctx.database()).db;
      let set = str(values.set) as MigrationSet | undefined;
      if (set !== undefined && !SETS.includes(set)) throw new UsageError(`--set must be control or tenant, got "${set}"`);
      if (!set) {
        // The later of the two sets' last applied migrations (the tenant set is applied after the control set).
        const latest = await Promise.all(SETS.map(async (s) => {
          const done = (await migrationStatus(db, s)).filter((m) => m.executedAt);
          return { s, at: done.length ? done[done.length - 1].executedAt!.getTime() : -1 };
        }));
        const pick = latest.reduce((a, b) => (b.at >= a.at ? b : a));
        if (pick.at < 0) {
          ctx.io.out('Nothing to roll back: no migration is applied.');
          return 0;
        }
        set = pick.s;
      }
      const r = await migrateDown(db, set);
      const undone = (r.results ?? []).filter((m) => m.status === 'Success').map((m) => m.migrationName);
      ctx.io.out(undone.length ? `${SET_LABEL[set]}: rolled back ${undone.join(', ')}` : `${SET_LABEL[set]}: nothing to roll back`);
      return 0;
    },
  },
  {
    name: 'migrate:status',
    usage: 'migrate:status',
    summary: 'List the main database migrations, applied and pending',
    async run(ctx) {
      const db = (await ctx.database()).db;
      ctx.io.out(`Database: ${describeDatabase(await ctx.config())}`);
      let pending = 0;
      for (const set of SETS) {
        ctx.io.out(`${SET_LABEL[set]} (${set}):`);
        for (const m of await migrationStatus(db, set)) {
          if (!m.executedAt) pending += 1;
          ctx.io.out(`  ${m.executedAt ? '[x]' : '[ ]'} ${m.name.padEnd(28)} ${m.executedAt ? `applied ${m.executedAt.toISOString()}` : 'pending'}`);
        }
      }
      ctx.io.out(pending ? `${pending} pending: run "migrate".` : 'Up to date.');
      ctx.io.out('Dedicated tenant databases: "tenants:migrate --history".');
      return 0;
    },
  },
  {
    name: 'tenants:migrate',
    usage: 'tenants:migrate [--dry-run] [--tenant-id ID] [--concurrency N] [--history]',
    summary: 'Apply tenant migrations to the shared tables and every dedicated tenant database',
    options: {
      'dry-run': { type: 'boolean' },
      'tenant-id': { type: 'string' },
      concurrency: { type: 'string' },
      history: { type: 'boolean' },
    },
    async run(ctx, values) {
      const concurrency = values.concurrency === undefined ? DEFAULT_MIGRATE_CONCURRENCY : Number(values.concurrency);
      if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 100) {
        throw new UsageError('--concurrency must be a whole number from 1 to 100');
      }
      const tenantId = str(values['tenant-id']);
      const opts = { db: (await ctx.database()).db, dedicated: await ctx.dedicated(), tenantId, concurrency };
      const config = await ctx.config();
      ctx.io.out(`Database: ${describeDatabase(config)}${opts.dedicated ? '' : ' (no dedicated tenant databases)'}`);
      try {
        if (values.history) {
          const entries = await tenantMigrationHistory(opts);
          for (const e of entries) {
            ctx.io.out(e.kind === 'shared' ? `${sharedLabel(e.sharedTenants)}:` : `${e.label} (${e.tenantName}, ${e.tenantId}):`);
            if (e.error) ctx.io.out(`  ERROR: ${e.error}`);
            for (const m of e.applied) ctx.io.out(`  ${m.name.padEnd(28)} ${m.executedAt}`);
            if (!e.error && e.applied.length === 0) ctx.io.out('  (none applied)');
            for (const n of e.pending) ctx.io.out(`  ${n.padEnd(28)} pending`);
          }
          return entries.some((e) => e.error) ? 1 : 0;
        }
        const dryRun = Boolean(values['dry-run']);
        if (dryRun) ctx.io.out('Dry run: nothing is changed.');
        const s = await migrateAllTenants({
          ...opts,
          dryRun,
          onResult: (r, done, total) => printMigrateResult(ctx.io, r, done, total),
        });
        const parts = dryRun
          ? [`${s.pending} with pending migrations`, `${s.upToDate} up to date`, `${s.failed} failed`]
          : [`${s.migrated} migrated`, `${s.upToDate} up to date`, `${s.failed} failed`];
        ctx.io.out(`Summary: ${s.total} database(s): ${parts.join(', ')} in ${(s.ms / 1000).toFixed(2)} s.`);
        for (const f of s.results.filter((r) => r.status === 'failed')) {
          ctx.io.err(`  failed: ${f.kind === 'shared' ? 'shared tables' : `${f.label} (${f.tenantId})`}: ${f.error}`);
        }
        return s.failed ? 1 : 0;
      } catch (err) {
        if (err instanceof UnknownTenantError) throw new BootstrapError(err.message);
        throw err;
      }
    },
  },
  {
    name: 'tenants:list',
    usage: 'tenants:list',
    summary: 'List the tenants: isolation, state, where their data lives, members',
    async run(ctx) {
      const db = (await ctx.database()).db;
      const rows = await db
        .selectFrom('tenants as t')
        .leftJoin('memberships as m', 'm.tenant_id', 't.id')
        .select(['t.id', 't.name', 't.isolation', 't.is_active', 't.db_server', 't.db_name', (eb) => eb.fn.count<number>('m.user_id').as('members')])
        .groupBy('t.id')
        .orderBy('t.created_at')
        .execute();
      for (const t of rows) {
        const where = t.isolation === 'dedicated' ? ` ${t.db_name} on ${t.db_server}` : '';
        ctx.io.out(`${t.id}  ${t.name}  [${t.isolation}${t.is_active ? '' : ', INACTIVE'}]${where}  ${Number(t.members)} member(s)`);
      }
      ctx.io.out(`${rows.length} tenant(s).`);
      return 0;
    },
  },
  {
    name: 'create-admin',
    usage: 'create-admin --email EMAIL [--password PASSWORD] [--first-name X] [--last-name Y] [--tenant NAME] [--isolation shared|dedicated]',
    summary: 'Create an active user (password from --password, ADMIN_PASSWORD or a prompt); with --tenant, make them its admin (created if missing)',
    options: {
      email: { type: 'string' },
      password: { type: 'string' },
      'first-name': { type: 'string' },
      'last-name': { type: 'string' },
      tenant: { type: 'string' },
      isolation: { type: 'string' },
    },
    async run(ctx, values) {
      const config = await ctx.config();
      const isolation = isolationOption(values.isolation);
      const email = await credential(ctx, str(values.email) ?? config.admin.email, 'Admin email: ', false, '--email');
      const password = await credential(ctx, str(values.password) ?? config.admin.password, 'Admin password: ', true, '--password (or ADMIN_PASSWORD)');
      await requireMigrated(ctx);
      await createAdminAndTenant(ctx, {
        email, password, firstName: str(values['first-name']), lastName: str(values['last-name']), tenant: str(values.tenant), isolation,
      });
      return 0;
    },
  },
  {
    name: 'init',
    usage: 'init [--create-admin] [--create-test-tenant] [--non-interactive] [--isolation shared|dedicated]',
    summary: 'First-run setup: migrate, then the admin (ADMIN_EMAIL/ADMIN_PASSWORD) and a test tenant (TEST_TENANT_NAME) with them as admin; idempotent',
    options: {
      'create-admin': { type: 'boolean' },
      'create-test-tenant': { type: 'boolean' },
      'non-interactive': { type: 'boolean' },
      isolation: { type: 'string' },
    },
    async run(ctx, values) {
      const config = await ctx.config();
      const isolation = isolationOption(values.isolation);
      if (values['non-interactive']) ctx.interactive = false;
      // Without flags, the admin and test tenant are created when their variables are set.
      const wantAdmin = Boolean(values['create-admin']) || Boolean(config.admin.email && config.admin.password);
      if (values['create-test-tenant'] && !wantAdmin) {
        throw new UsageError('--create-test-tenant needs an admin for the tenant: add --create-admin');
      }
      const wantTenant = Boolean(values['create-test-tenant']) || Boolean(wantAdmin && config.admin.testTenantName);
      // Everything needed is known before anything changes.
      const email = wantAdmin ? await credential(ctx, config.admin.email, 'Admin email: ', false, 'ADMIN_EMAIL') : undefined;
      const password = wantAdmin ? await credential(ctx, config.admin.password, 'Admin password: ', true, 'ADMIN_PASSWORD') : undefined;
      await migrateMainDatabase(ctx);
      if (!email || !password) {
        ctx.io.out('No admin requested: use --create-admin (ADMIN_EMAIL, ADMIN_PASSWORD) and --create-test-tenant (TEST_TENANT_NAME).');
        return 0;
      }
      const tenant = wantTenant ? (config.admin.testTenantName ?? 'Test Organization') : undefined;
      await createAdminAndTenant(ctx, { email, password, tenant, isolation });
      ctx.io.out('Initialized.');
      return 0;
    },
  },
];

function helpText(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    'Usage: cli <command> [options]     (npm run cli -- <command>, or node dist/src/cli.js <command>)',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Run "cli <command> --help" for its options. Configuration: environment, .env, Vault (USE_VAULT);',
    'without DATABASE_URL the embedded PGlite database under DATA_DIR (./data) is used.',
  ].join('\n');
}

export async function runCli(argv: string[], opts: CliOptions = {}): Promise<number> {
  const io: CliIo = {
    out: opts.out ?? ((l) => process.stdout.write(`${l}\n`)),
    err: opts.err ?? ((l) => process.stderr.write(`${l}\n`)),
    ask: opts.ask,
  };
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    io.out(helpText());
    return name ? 0 : 2;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) {
    io.err(`Unknown command "${name}".\n\n${helpText()}`);
    return 2;
  }
  let values: Values;
  try {
    values = parseArgs({ args: rest, options: { ...command.options, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false }).values as Values;
  } catch (err) {
    io.err(`${(err as Error).message}\nUsage: cli ${command.usage}`);
    return 2;
  }
  if (values.help) {
    io.out(`Usage: cli ${command.usage}\n\n${command.summary}`);
    return 0;
  }

  let config: Config | undefined = opts.config;
  let database: Database | undefined;
  let dedicated: DedicatedTenantDatabases | null | undefined;
  let notifier: OutboxNotifier | undefined;
  let unregisterNotifier: (() => void) | undefined;
  const ctx: Ctx = {
    io,
    interactive: opts.interactive ?? false,
    async config() {
      if (!config) config = (await loadRuntimeConfig()).config;
      return config;
    },
    async database() {
      if (!database) {
        const c = await ctx.config();
        // On the embedded database this refuses to run while the server (or anything else) has it open:
        // PGlite is one process's, and a second writer's commits would be lost (src/db/data-dir-lock.ts).
        database = await openDatabase({
          databaseUrl: c.databaseUrl, pgliteDir: c.pgliteDir, poolMax: Math.min(c.dbPoolMax, 10),
          role: `cli ${command.name}`, onStaleLock: (message) => io.err(`Note: ${message}`),
        });
        if (database.kind === 'postgres') {
          // Outbox rows this command writes (files:gc events, tenant commands) wake a running worker.
          const db = database.db;
          notifier = createOutboxNotifier(() => sql`SELECT pg_notify('outbox', '')`.execute(db));
          unregisterNotifier = registerOutboxNotifier(notifier);
        }
      }
      return database;
    },
    async dedicated() {
      if (dedicated === undefined) dedicated = DedicatedTenantDatabases.fromConfig(await ctx.config());
      return dedicated;
    },
  };
  try {
    return await command.run(ctx, values);
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`${err.message}\nUsage: cli ${command.usage}`);
      return 2;
    }
    if (err instanceof BootstrapError || err instanceof AppError) io.err(`Error: ${err.message}`);
    else io.err(`Error: ${(err as Error)?.message ?? String(err)}`);
    return 1;
  } finally {
    settleOutboxWrites();
    await notifier?.flush?.().catch(() => {});
    unregisterNotifier?.();
    await notifier?.close().catch(() => {});
    await dedicated?.close().catch(() => {});
    await database?.close().catch(() => {});
  }
}

/** Ask on the terminal; `hidden` does not echo what is typed. */
function terminalAsk(question: string, opts: { hidden?: boolean } = {}): Promise<string> {
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: true });
  if (opts.hidden) {
    const r = rl as unknown as { _writeToOutput(s: string): void };
    // Echo the prompt only, never what is typed.
    r._writeToOutput = (s: string) => {
      if (s.startsWith(question)) process.stdout.write(question);
    };
  }
  return new Promise((resolve) => {
    rl.question(question, (answer) => {
      rl.close();
      if (opts.hidden) process.stdout.write('\n');
      resolve(answer);
    });
  });
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href;
if (invokedDirectly) {
  const code = await runCli(process.argv.slice(2), {
    interactive: Boolean(process.stdin.isTTY && process.stdout.isTTY),
    ask: terminalAsk,
  });
  process.exit(code);
}
