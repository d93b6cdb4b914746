/**
 * A PostgreSQL connection terminated while its transaction is open and idle
 * between two statements (pg_terminate_backend; the same happens at a server
 * restart, a failover or an idle-in-transaction timeout): the transaction
 * fails, the request answers 503, and the process stays up and serves the
 * next request; a worker's job is retried and its document still ends ready.
 *
 * The processes are real children (test/faults/fixtures/gated.ts) that hold one
 * storage step inside the transaction until the test releases it. Only this
 * test's own database's connections are terminated (filtered by datname).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { HAS_PG, requirePg } from '../helpers/env.js';
import { multipart } from '../documents/helpers.js';
import { createDocument, getDoc, newOrg, waitFor } from '../jobs/helpers.js';
import { envFor, startChild, type Child } from '../worker/child.js';
import { closeWithTenantDatabases } from '../tenants/helpers.js';

const FIXTURE = 'test/faults/fixtures/gated.ts';

/** Terminates the backends of `database` that are idle inside a transaction; returns how many. */
async function terminateIdleInTransaction(database: string): Promise<number> {
  const admin = new pg.Client({ connectionString: requirePg() });
  await admin.connect();
  try {
    const found = await waitFor(
      async () => (await admin.query(
        `SELECT pid FROM pg_stat_activity WHERE datname = $1 AND state = 'idle in transaction' AND pid <> pg_backend_pid()`,
        [database],
      )).rows as Array<{ pid: number }>,
      (rows) => rows.length > 0,
      10_000,
    );
    for (const { pid } of found) await admin.query('SELECT pg_terminate_backend($1)', [pid]);
    return found.length;
  } finally {
    await admin.end();
  }
}

describe.skipIf(!HAS_PG)('PostgreSQL connection terminated inside an open transaction', () => {
  let t: TestApp | undefined;
  let child: Child | undefined;
  let gateDir: string | undefined;
  afterEach(async () => {
    await child?.kill();
    await closeWithTenantDatabases(t);
    if (gateDir) fs.rmSync(gateDir, { recursive: true, force: true });
    child = t = gateDir = undefined;
  });

  function gateFile(): string {
    gateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-gate-'));
    return path.join(gateDir, 'open');
  }

  it.each(['shared', 'dedicated'] as const)(
    'API, %s tenant: the upload answers 503 database_unavailable, the process stays up and the next upload is stored',
    async (isolation) => {
      t = await buildTestApp({ mode: 'postgres' });
      const org = await newOrg(t.app);
      let tenant = org.tenant;
      if (isolation === 'dedicated') {
        const res = await t.app.inject({
          method: 'POST', url: '/api/tenants', headers: org.session.auth, payload: { name: `Dedicated ${Date.now()}`, isolation: 'dedicated' },
        });
        expect(res.statusCode, res.body).toBe(201);
        tenant = await t.app.db.selectFrom('tenants').select(['id', 'isolation', 'db_server', 'db_name', 'storage_quota_mb'])
          .where('id', '=', res.json().id).executeTakeFirstOrThrow();
      }
      const database = tenant.db_name ?? new URL(t.config.databaseUrl!).pathname.slice(1);
      const gate = gateFile();
      child = startChild(FIXTURE, envFor(t.config, { ROLE: 'api', GATE: 'commit', GATE_FILE: gate, LOG_LEVEL: 'warn' }));
      const port = Number((await child.waitFor(/LISTENING (\d+)/))[1]);
      const url = `http://127.0.0.1:${port}/api/tenants/${tenant.id}/documents`;
      const send = (text: string) => {
        const body = multipart([{ name: 'file', filename: 'a.txt', contentType: 'text/plain', data: text }]);
        return fetch(url, { method: 'POST', headers: { ...org.session.auth, ...body.headers }, body: body.payload });
      };

      const first = send('held while its connection is terminated');
      await child.waitFor(/HELD commit/);
      expect(await terminateIdleInTransaction(database)).toBe(1);
      fs.writeFileSync(gate, '');

      const res = await first;
      expect(res.status).toBe(503);
      expect(res.headers.get('content-type')).toMatch(/application\/problem\+json/);
      expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(await res.json()).toMatchObject({ status: 503, code: 'database_unavailable' });
      expect(child.proc.exitCode).toBeNull();

      // Still serving, with the pool's other (or new) connections; nothing of the failed upload was kept.
      const next = await send('the next upload');
      expect(next.status).toBe(201);
      const docs = await t.app.tenantDbs.withTenant(tenant, (trx) => trx.selectFrom('documents').select('filename').execute());
      expect(docs).toHaveLength(1);
      expect(child.output()).not.toMatch(/Unhandled 'error' event|uncaught/i);
      expect(child.proc.exitCode).toBeNull();
    },
    60_000,
  );

  it('worker: the job reading the blob inside its transaction fails, is retried, and the document ends ready', async () => {
    t = await buildTestApp({ mode: 'postgres' });
    const org = await newOrg(t.app);
    const gate = gateFile();
    child = startChild(
      FIXTURE,
      envFor(t.config, { ROLE: 'worker', GATE: 'get', GATE_FILE: gate, LOG_LEVEL: 'warn', JOB_BACKOFF_MS: '100', OUTBOX_POLL_MS: '20' }),
    );
    await child.waitFor(/READY/);
    const d = await createDocument(t.app, org, Buffer.from('plain text, validated inside the transaction\n'));
    await child.waitFor(/HELD get/);
    expect(await terminateIdleInTransaction(new URL(t.config.databaseUrl!).pathname.slice(1))).toBeGreaterThanOrEqual(1);
    fs.writeFileSync(gate, '');

    const doc = await waitFor(() => getDoc(t!.app, org, d.documentId), (x) => x.status !== 'pending' || child!.proc.exitCode !== null, 30_000);
    expect(child.proc.exitCode).toBeNull();
    expect(doc.status).toBe('ready');
    expect(child.output()).not.toMatch(/Unhandled 'error' event|uncaught/i);
    expect(child.proc.exitCode).toBeNull();
  }, 60_000);
});
