/**
 * The relay end to end with real brokers: outbox -> NATS JetStream / Redis
 * Streams -> the worker's consumer (audit trail, orphan cleanup), in order per
 * tenant, nothing lost and nothing handled twice across a relay crash.
 *
 * NATS JetStream (127.0.0.1:4222, or TEST_NATS_URL) is required, like the
 * publisher tests; Redis Streams run with REDIS_URL (or CI=true).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import type { Kysely } from 'kysely';
import { connect, DeliverPolicy, AckPolicy, type NatsConnection } from 'nats';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { HAS_REDIS } from '../helpers/env.js';
import { recordAudit } from '../../src/audit/record.js';
import { claimBatch } from '../../src/events/claim.js';
import { DEFAULT_HANDLERS, type EventHandler } from '../../src/events/consumer.js';
import type { EventEnvelope } from '../../src/events/envelope.js';
import { recordEvent } from '../../src/events/outbox.js';
import { createNatsPublisher, createRedisStreamsPublisher, readRedisStream } from '../../src/events/publishers/index.js';
import { subscribeNats, subscribeRedisStream } from '../../src/events/subscribers.js';
import type { TenantSchema } from '../../src/db/schema.js';
import { fileKey } from '../../src/storage/index.js';
import { createDocument, getDoc, newOrg, outboxRows, PNG_1PX, waitFor, type Org } from '../jobs/helpers.js';

const NATS_URL = process.env.TEST_NATS_URL ?? 'nats://127.0.0.1:4222';
const runId = randomBytes(5).toString('hex');
const silent = { error() {}, warn() {}, info() {}, debug() {} };

describe('relay -> NATS JetStream -> consumer (127.0.0.1:4222, required)', () => {
  const stream = `TEST_RELAY_${runId}`;
  const subjectPrefix = `test_relay_${runId}`;
  let t: TestApp;
  let app: FastifyInstance;
  let nc: NatsConnection;
  let org: Org;

  beforeAll(async () => {
    nc = await connect({ servers: NATS_URL });
    t = await buildTestApp();
    app = t.app;
    org = await newOrg(app, 'Nats');
    await app.jobs.start('embedded', {
      pollMs: 20,
      publisher: createNatsPublisher({ servers: NATS_URL, stream, subjectPrefix }),
      subscriber: (c) => subscribeNats(c, { servers: NATS_URL, stream, subjectPrefix, durable: `relay_${runId}`, log: silent }),
    });
  });
  afterAll(async () => {
    await app?.jobs.stop();
    await t?.close();
    if (nc) {
      const jsm = await nc.jetstreamManager();
      await jsm.streams.delete(stream).catch(() => undefined);
      await nc.close();
    }
  });

  async function streamEvents(): Promise<EventEnvelope[]> {
    const jsm = await nc.jetstreamManager();
    const total = (await jsm.streams.info(stream)).state.messages;
    const ci = await jsm.consumers.add(stream, { ack_policy: AckPolicy.None, deliver_policy: DeliverPolicy.All });
    const c = await nc.jetstream().consumers.get(stream, ci.name);
    const out: EventEnvelope[] = [];
    const msgs = await c.fetch({ max_messages: total, expires: 5_000 });
    for await (const m of msgs) out.push(m.json<EventEnvelope>());
    await jsm.consumers.delete(stream, ci.name);
    return out;
  }

  it('publishes an upload\'s events in order, once each, after the document is processed', async () => {
    const d = await createDocument(app, org, PNG_1PX, { filename: 'n.png', mimeType: 'image/png' });
    await waitFor(() => getDoc(app, org, d.documentId), (x) => x.status === 'ready');
    const events = await waitFor(
      async () => (await streamEvents()).filter((e) => e.data.document_id === d.documentId),
      (es) => es.length === 2,
    );
    expect(events.map((e) => e.event_type)).toEqual(['document.uploaded', 'document.processed']);
    expect(events[1]).toMatchObject({ tenant_id: org.tenant.id, data: { status: 'ready' } });
    const outbox = (await outboxRows(app, org, 'event')).filter((r) => r.payload.data.document_id === d.documentId);
    expect(outbox.every((r) => r.published_at !== null)).toBe(true);
    const all = await streamEvents();
    expect(new Set(all.map((e) => e.event_id)).size).toBe(all.length);
  });

  it('appends audit.log events to the audit trail, which admins read at GET /api/tenants/:tid/audit', async () => {
    await recordAudit(app.db as unknown as Kysely<TenantSchema>, {
      tenantId: org.tenant.id,
      userId: org.session.userId,
      actorEmail: org.session.email,
      action: 'document.export',
      resourceType: 'documents',
      resourceId: 'all',
      ip: '203.0.113.7',
      userAgent: 'vitest',
      details: { format: 'zip' },
    });
    const res = await waitFor(
      () => app.inject({ method: 'GET', url: `/api/tenants/${org.tenant.id}/audit?action=document.export`, headers: org.session.auth }),
      (r) => r.statusCode === 200 && r.json().total === 1,
    );
    expect(res.json().entries[0]).toMatchObject({
      action: 'document.export', user_id: org.session.userId, actor_email: org.session.email, ip: '203.0.113.7',
      user_agent: 'vitest', resource_type: 'documents', resource_id: 'all', details: { format: 'zip' },
    });
  });

  it('cleans up an orphaned file on document.deleted (row, bytes, file.deleted event)', async () => {
    const bytes = Buffer.from(`orphan ${runId}`);
    const staged = await app.storage.stage(Readable.from([bytes]), { maxBytes: 1_000_000 });
    const key = fileKey(org.tenant.id, staged.sha256);
    await staged.commit(key);
    const file = await app.tenantDbs.withTenant(org.tenant, async (trx) => {
      const f = await trx
        .insertInto('files')
        .values({ tenant_id: org.tenant.id, sha256: staged.sha256, md5: staged.md5, size: staged.size, storage_key: key })
        .returning('id')
        .executeTakeFirstOrThrow();
      await recordEvent(trx, 'document.deleted', { tenantId: org.tenant.id, userId: org.session.userId, data: { document_id: 'gone', file_id: f.id } });
      return f;
    });
    await waitFor(
      () => app.tenantDbs.withTenant(org.tenant, (trx) => trx.selectFrom('files').select('id').where('id', '=', file.id).executeTakeFirst()),
      (row) => row === undefined,
    );
    expect(fs.existsSync(path.join(t.config.uploadFolder, key))).toBe(false);
    const deleted = (await outboxRows(app, org, 'event')).filter((r) => r.topic === 'file.deleted' && r.payload.data.file_id === file.id);
    expect(deleted).toHaveLength(1);
    expect(deleted[0].payload.data).toMatchObject({ reason: 'orphan_cleanup', size: bytes.length });
  });
});

describe.skipIf(!HAS_REDIS)('relay -> Redis Streams -> consumer', () => {
  let t: TestApp;
  let app: FastifyInstance;
  let org: Org;
  const handled: string[] = [];
  let stream: string;

  beforeAll(async () => {
    t = await buildTestApp({ redis: true });
    app = t.app;
    org = await newOrg(app, 'Streams');
    stream = `${t.config.redisPrefix}relay-events`;
  });
  afterAll(async () => {
    await app?.jobs.stop();
    await t?.close();
  });

  it('a relay crash after publishing delivers some events twice; the consumer handles each once and none is lost', async () => {
    const url = t.config.redisUrl!;
    const publisher = createRedisStreamsPublisher({ url, stream });
    const count: EventHandler = async (_ctx, e) => {
      handled.push(e.event_id);
    };
    await app.jobs.drain({ waitForQueue: false }); // earlier rows (the org's) out of the way
    const emitted: EventEnvelope[] = [];
    for (let i = 0; i < 12; i++) {
      emitted.push(
        await app.tenantDbs.withTenant(org.tenant, (trx) =>
          recordEvent(trx, 'document.updated', { tenantId: org.tenant.id, userId: null, data: { seq: i } }),
        ),
      );
    }
    // A relay claims 5, publishes them, and dies before marking them published.
    const source = (await app.jobs.sources.list())[0];
    const mine = new Set(emitted.map((e) => e.event_id));
    let claimed = await claimBatch(source.db, 'event', { limit: 100, leaseMs: 300, ordered: true });
    claimed = claimed.filter((r) => mine.has((r.payload as EventEnvelope).event_id)).slice(0, 5);
    await publisher.publish(claimed.map((r) => r.payload as EventEnvelope));
    await publisher.close();

    // The restarted process: relay + consumer group on the stream.
    await app.jobs.start('embedded', {
      pollMs: 20,
      publisher: createRedisStreamsPublisher({ url, stream }),
      consumerHandlers: { ...DEFAULT_HANDLERS, 'document.updated': count },
      subscriber: (c) => subscribeRedisStream(c, { url, stream, group: `g-${runId}`, log: silent, blockMs: 100 }),
    });
    await waitFor(async () => handled.filter((id) => mine.has(id)).length, (n) => n >= 12, 20_000);
    await new Promise((r) => setTimeout(r, 300)); // a duplicate would arrive about now
    const entries = await readRedisStream(app.redis!, stream);
    const delivered = entries.map((e) => e.event.event_id).filter((id) => mine.has(id));
    expect(delivered).toHaveLength(12 + 5); // at least once: the crashed batch went out twice
    expect(new Set(delivered)).toEqual(mine); // nothing lost
    const handledMine = handled.filter((id) => mine.has(id));
    expect(handledMine).toHaveLength(12); // nothing handled twice
    expect(handledMine).toEqual(emitted.map((e) => e.event_id)); // in order
  });
});
