/**
 * validate_document end to end through the outbox (embedded runner), on the
 * embedded database and, when available, PostgreSQL.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildTestApp, dbModes, type TestApp } from '../helpers/app.js';
import { processPendingJobs } from '../../src/jobs/index.js';
import { recordJob } from '../../src/events/outbox.js';
import type { BlobStore } from '../../src/storage/index.js';
import { INLINE_MAX_BYTES } from '../../src/jobs/handlers/validate-document.js';
import { createDocument, elfBytes, getDoc, newOrg, outboxRows, PNG_1PX, processedEvents, waitFor, type Org, type StagedDoc } from './helpers.js';

describe.each(dbModes())('validate_document on %s', (mode) => {
  let t: TestApp;
  let app: FastifyInstance;
  let org: Org;

  beforeAll(async () => {
    t = await buildTestApp({ mode });
    app = t.app;
    org = await newOrg(app);
  });
  afterAll(async () => t?.close());

  it('marks a good PNG ready with processed_at and emits document.processed in the same commit', async () => {
    const d = await createDocument(app, org, PNG_1PX, { filename: 'dot.png', mimeType: 'image/png' });
    expect((await getDoc(app, org, d.documentId)).status).toBe('pending');
    await processPendingJobs(app);
    const doc = await getDoc(app, org, d.documentId);
    expect(doc).toMatchObject({ status: 'ready', error_message: null });
    expect(doc.processed_at).toBeInstanceOf(Date);
    const events = await processedEvents(app, org, d.documentId);
    expect(events).toHaveLength(1);
    expect(events[0].payload).toMatchObject({ event_type: 'document.processed', tenant_id: org.tenant.id, user_id: org.session.userId });
    expect(events[0].payload.data).toMatchObject({ document_id: d.documentId, status: 'ready', error_message: null });
    expect(events[0].published_at).not.toBeNull();
    const jobs = (await outboxRows(app, org, 'job')).filter((r) => r.payload.document_id === d.documentId);
    expect(jobs).toHaveLength(1);
    expect(jobs[0]).toMatchObject({ attempts: 1, dead_at: null });
    expect(jobs[0].published_at).not.toBeNull();
  });

  it('fails a declared image/png whose bytes are an ELF executable, with a useful message', async () => {
    const d = await createDocument(app, org, elfBytes(), { filename: 'holiday.png', mimeType: 'image/png' });
    await processPendingJobs(app);
    const doc = await getDoc(app, org, d.documentId);
    expect(doc.status).toBe('failed');
    expect(doc.error_message).toMatch(/declared image\/png but the content is application\/x-elf/);
    expect(doc.processed_at).toBeInstanceOf(Date);
    const [ev] = await processedEvents(app, org, d.documentId);
    expect(ev.payload.data).toMatchObject({ status: 'failed', error_message: doc.error_message });
  });

  it('fails an octet-stream upload whose .png extension does not match the content', async () => {
    const d = await createDocument(app, org, elfBytes(), { filename: 'a.png', mimeType: 'application/octet-stream' });
    await processPendingJobs(app);
    expect((await getDoc(app, org, d.documentId)).error_message).toMatch(/extension \.png .* application\/x-elf/);
  });

  it('passes text, CSV and JSON that are valid UTF-8, and unknown binary declared as octet-stream', async () => {
    const docs = await Promise.all([
      createDocument(app, org, Buffer.from('héllo wörld\n'), { filename: 'a.txt', mimeType: 'text/plain' }),
      createDocument(app, org, Buffer.from('name,age\nAda,36\n'), { filename: 'people.csv', mimeType: 'text/csv' }),
      createDocument(app, org, Buffer.from('{"a":[1,2,3]}'), { filename: 'data.json', mimeType: 'application/json' }),
      createDocument(app, org, Buffer.from([1, 2, 3, 250, 0, 9, 8, 7]), { filename: 'blob.bin', mimeType: 'application/octet-stream' }),
    ]);
    await processPendingJobs(app);
    for (const d of docs) expect(await getDoc(app, org, d.documentId)).toMatchObject({ status: 'ready', error_message: null });
  });

  it('fails declared text whose bytes contain NULs or invalid UTF-8', async () => {
    const a = await createDocument(app, org, Buffer.from([0x68, 0x69, 0x00, 0x21]), { filename: 'x.txt', mimeType: 'text/plain' });
    const b = await createDocument(app, org, Buffer.from([0x61, 0xff, 0xfe, 0x62]), { filename: 'y.csv', mimeType: 'text/csv' });
    await processPendingJobs(app);
    expect((await getDoc(app, org, a.documentId)).error_message).toMatch(/not text/);
    expect((await getDoc(app, org, b.documentId)).error_message).toMatch(/not text/);
  });

  it('fails when the stored bytes were tampered with (size, then checksum)', async () => {
    const bigger = await createDocument(app, org, Buffer.from('original content one'), { filename: 'o1.txt' });
    const same = await createDocument(app, org, Buffer.from('original content two'), { filename: 'o2.txt' });
    const root = t.config.uploadFolder;
    fs.appendFileSync(path.join(root, bigger.key), 'extra');
    fs.writeFileSync(path.join(root, same.key), 'ORIGINAL CONTENT TWO');
    await processPendingJobs(app);
    expect((await getDoc(app, org, bigger.documentId)).error_message).toMatch(/File size mismatch: expected 20 bytes, the stored file has 25/);
    expect((await getDoc(app, org, same.documentId)).error_message).toMatch(/Checksum mismatch/);
  });

  it('fails when the stored bytes are gone', async () => {
    const d = await createDocument(app, org, Buffer.from('soon gone'), { filename: 'g.txt' });
    fs.rmSync(path.join(t.config.uploadFolder, d.key));
    await processPendingJobs(app);
    expect((await getDoc(app, org, d.documentId)).error_message).toBe('The stored file does not exist');
  });

  it('fails a document when the tenant is over its quota (e.g. the quota was lowered after the upload)', async () => {
    const small = await newOrg(app, 'Quota');
    const d = await createDocument(app, small, Buffer.alloc(700 * 1024, 1), { filename: 'a.bin', mimeType: 'application/octet-stream' });
    const mb = 1024 * 1024;
    await app.db.updateTable('tenants').set({ storage_quota_mb: 1, storage_used_bytes: 2 * mb }).where('id', '=', small.tenant.id).execute();
    await processPendingJobs(app);
    expect((await getDoc(app, small, d.documentId)).error_message).toBe(
      `Organization storage quota exceeded: ${2 * mb} bytes used of ${mb} (1 MB)`,
    );
    await app.db.updateTable('tenants').set({ storage_used_bytes: mb }).where('id', '=', small.tenant.id).execute();
    const ok = await createDocument(app, small, Buffer.alloc(1000, 3), { filename: 'b.bin', mimeType: 'application/octet-stream' });
    await processPendingJobs(app);
    expect((await getDoc(app, small, ok.documentId)).status).toBe('ready'); // exactly at the quota is within it
  });

  it('validates a file larger than the inline limit between two transactions', async () => {
    const big = Buffer.alloc(INLINE_MAX_BYTES + 10_000, 0x61);
    const d = await createDocument(app, org, big, { filename: 'big.txt', mimeType: 'text/plain' });
    await processPendingJobs(app);
    expect((await getDoc(app, org, d.documentId)).status).toBe('ready');
  });

  it('validates concurrent jobs of a tenant together: a duplicate job settles once, one unreadable file fails alone', async () => {
    const docs: StagedDoc[] = [];
    for (let i = 0; i < 20; i++) docs.push(await createDocument(app, org, Buffer.from(`burst ${i}`), { filename: `b${i}.txt` }));
    await app.tenantDbs.withTenant(org.tenant, (trx) =>
      recordJob(trx, { name: 'validate_document', tenantId: org.tenant.id, payload: { document_id: docs[0].documentId } }),
    );
    const unreadable = docs[7].key;
    const storage: BlobStore = {
      ...app.storage,
      get: async (key, range) => {
        if (key === unreadable) throw new Error('EIO: bad sector');
        return app.storage.get(key, range);
      },
    };
    const settled: string[] = [];
    await app.jobs.start('embedded', {
      storage,
      concurrency: 32,
      retry: { attempts: 2, backoffMs: 10, maxBackoffMs: 50 },
      onSettled: (_j, o) => settled.push(o),
    });
    try {
      for (const d of docs) await waitFor(() => getDoc(app, org, d.documentId), (x) => x.status !== 'pending');
    } finally {
      await app.jobs.stop();
    }
    for (const [i, d] of docs.entries()) {
      const doc = await getDoc(app, org, d.documentId);
      if (i === 7) expect(doc.error_message).toBe('Validation could not be completed after 2 attempts: EIO: bad sector');
      else expect(doc.status).toBe('ready');
      expect(await processedEvents(app, org, d.documentId)).toHaveLength(1);
    }
    expect(settled.filter((o) => o === 'done')).toHaveLength(20); // 19 + the duplicate job (a no-op)
  });

  it('is a no-op for a document that is no longer pending (idempotent), and for a deleted one', async () => {
    const d = await createDocument(app, org, Buffer.from('twice'), { filename: 't.txt' });
    await processPendingJobs(app);
    const before = await getDoc(app, org, d.documentId);
    // The same job again (e.g. redelivered): nothing changes, no second event.
    const { validateDocument } = await import('../../src/jobs/index.js');
    const out = await validateDocument.run(app.jobs.context, {
      id: 'x', name: 'validate_document', tenantId: org.tenant.id, payload: { document_id: d.documentId }, attempt: 1, maxAttempts: 5,
    });
    expect(out).toMatchObject({ status: 'skipped' });
    expect(await getDoc(app, org, d.documentId)).toEqual(before);
    expect(await processedEvents(app, org, d.documentId)).toHaveLength(1);
    const gone = await validateDocument.run(app.jobs.context, {
      id: 'y', name: 'validate_document', tenantId: org.tenant.id, payload: { document_id: '00000000-0000-4000-8000-000000000000' }, attempt: 1, maxAttempts: 5,
    });
    expect(gone).toMatchObject({ status: 'skipped', reason: 'document not found' });
  });
});

describe('DELETE_FAILED_UPLOADS', () => {
  let t: TestApp;
  let app: FastifyInstance;
  let org: Org;
  beforeAll(async () => {
    t = await buildTestApp({ config: { deleteFailedUploads: true } });
    app = t.app;
    org = await newOrg(app);
  });
  afterAll(async () => t?.close());

  it("removes a failed upload's bytes unless another live document uses the file", async () => {
    const lonely = await createDocument(app, org, elfBytes(5000), { filename: 'x.png', mimeType: 'image/png' });
    const shared = elfBytes(6000);
    const failing = await createDocument(app, org, shared, { filename: 'y.png', mimeType: 'image/png' });
    const fine = await createDocument(app, org, shared, { filename: 'tool', mimeType: 'application/octet-stream' });
    expect(fine.fileId).toBe(failing.fileId);
    await processPendingJobs(app);
    expect((await getDoc(app, org, lonely.documentId)).status).toBe('failed');
    expect(fs.existsSync(path.join(t.config.uploadFolder, lonely.key))).toBe(false);
    expect((await getDoc(app, org, failing.documentId)).status).toBe('failed');
    expect((await getDoc(app, org, fine.documentId)).status).toBe('ready');
    expect(fs.existsSync(path.join(t.config.uploadFolder, failing.key))).toBe(true);
  });
});
