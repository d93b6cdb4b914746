/**
 * The event relay over the outbox: at least once, in id order per tenant even
 * with two relays at once, marked published only after the publisher resolved,
 * retried with backoff when the broker fails, nothing lost or handled twice
 * across a relay crash and restart.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import { buildTestApp, dbModes, type TestApp } from '../helpers/app.js';
import { claimBatch } from '../../src/events/claim.js';
import { createEventConsumer, type EventHandler } from '../../src/events/consumer.js';
import type { EventEnvelope } from '../../src/events/envelope.js';
import { recordEvent } from '../../src/events/outbox.js';
import type { Publisher } from '../../src/events/publishers/index.js';
import { createEventRelay } from '../../src/events/relay.js';
import { createOutboxSources } from '../../src/events/sources.js';
import type { TenantRef } from '../../src/db/tenant-db.js';
import type { TenantSchema } from '../../src/db/schema.js';
import type { Kysely } from 'kysely';

const silent = { error() {}, warn() {}, info() {}, debug() {} };

function recordingPublisher(opts: { delayMs?: () => number; failFirst?: number } = {}) {
  const published: EventEnvelope[] = [];
  let calls = 0;
  const pub: Publisher = {
    name: 'recording',
    async publish(events) {
      calls += 1;
      if (opts.delayMs) await new Promise((r) => setTimeout(r, opts.delayMs!()));
      if (opts.failFirst && calls <= opts.failFirst) throw new Error('broker unavailable');
      published.push(...events);
    },
    async ping() {},
    async close() {},
  };
  return { pub, published, calls: () => calls };
}

describe.each(dbModes())('event relay on %s', (mode) => {
  let t: TestApp;
  let app: FastifyInstance;
  const tenants: TenantRef[] = [];

  beforeAll(async () => {
    t = await buildTestApp({ mode });
    app = t.app;
    for (let i = 0; i < 3; i++) {
      const id = randomUUID();
      await app.db.insertInto('tenants').values({ id, name: `relay-${id}`, slug: 'r', storage_quota_mb: 10 }).execute();
      tenants.push({ id, isolation: 'shared', db_server: null, db_name: null });
    }
  });
  afterAll(async () => t?.close());

  const main = () => app.db as unknown as Kysely<TenantSchema>;
  async function emit(n: number, tag: string): Promise<EventEnvelope[]> {
    const out: EventEnvelope[] = [];
    for (let i = 0; i < n; i++) {
      const tenant = tenants[i % tenants.length];
      out.push(
        await app.tenantDbs.withTenant(tenant, (trx) =>
          recordEvent(trx, 'document.updated', { tenantId: tenant.id, userId: null, data: { seq: i, tag } }),
        ),
      );
    }
    // A control-plane event (no tenant) in the mix.
    out.push(await recordEvent(main(), 'user.registered', { tenantId: null, userId: null, data: { tag } }));
    return out;
  }
  async function unpublished(): Promise<number> {
    const r = await sql<{ n: unknown }>`SELECT count(*) AS n FROM outbox WHERE kind = 'event' AND published_at IS NULL`.execute(main());
    return Number(r.rows[0].n);
  }
  const sources = () => createOutboxSources({ db: app.db, tenantDbs: app.tenantDbs });

  it('publishes every event once, in id order per tenant, across two concurrent relays with small batches', async () => {
    await createEventRelay({ sources: sources(), publisher: recordingPublisher().pub }).drain(); // earlier tests' rows
    const emitted = await emit(60, 'order');
    const { pub, published } = recordingPublisher({ delayMs: () => Math.random() * 5 });
    const r1 = createEventRelay({ sources: sources(), publisher: pub, batchSize: 4, log: silent });
    const r2 = createEventRelay({ sources: sources(), publisher: pub, batchSize: 4, log: silent });
    await Promise.all([r1.drain(), r2.drain(), r1.drain(), r2.drain()]);
    await r1.drain();
    const mine = published.filter((e) => (e.data as any).tag === 'order');
    expect(mine.map((e) => e.event_id).sort()).toEqual(emitted.map((e) => e.event_id).sort());
    for (const tenant of [...tenants.map((x) => x.id), null]) {
      const seqOut = mine.filter((e) => e.tenant_id === tenant).map((e) => e.event_id);
      const seqIn = emitted.filter((e) => e.tenant_id === tenant).map((e) => e.event_id);
      expect(seqOut).toEqual(seqIn);
    }
    expect(await unpublished()).toBe(0);
  });

  it('keeps events when the broker fails and retries them with backoff, without letting later ones overtake', async () => {
    const emitted = await emit(6, 'retry');
    const { pub, published, calls } = recordingPublisher({ failFirst: 2 });
    const relay = createEventRelay({ sources: sources(), publisher: pub, batchSize: 3, retryBaseMs: 50, log: silent });
    expect(await relay.runOnce()).toBe(0); // failed: released, due again in 50 ms
    expect(await relay.runOnce()).toBe(0); // backing off: nothing due, and nothing behind them overtakes
    expect(calls()).toBe(1);
    expect(await unpublished()).toBe(7);
    const errs = await sql<{ last_error: string | null; attempts: number }>`
      SELECT last_error, attempts FROM outbox WHERE kind = 'event' AND published_at IS NULL ORDER BY id LIMIT 1`.execute(main());
    expect(errs.rows[0]).toMatchObject({ last_error: 'broker unavailable', attempts: 1 });
    await new Promise((r) => setTimeout(r, 80));
    expect(await relay.runOnce()).toBe(0); // fails again: backoff doubles (100 ms)
    await new Promise((r) => setTimeout(r, 200));
    await relay.drain();
    expect(calls()).toBeGreaterThan(2);
    expect(published.map((e) => e.event_id).sort()).toEqual(emitted.map((e) => e.event_id).sort());
    for (const tenant of tenants) {
      expect(published.filter((e) => e.tenant_id === tenant.id).map((e) => e.event_id)).toEqual(
        emitted.filter((e) => e.tenant_id === tenant.id).map((e) => e.event_id),
      );
    }
  });

  it('loses nothing and handles nothing twice when a relay dies after publishing but before marking', async () => {
    await createEventRelay({ sources: sources(), publisher: recordingPublisher().pub }).drain(); // earlier tests' rows
    const emitted = await emit(9, 'crash');
    const handled: string[] = [];
    const count: EventHandler = async (_ctx, e) => {
      handled.push(e.event_id);
    };
    const consumer = createEventConsumer(
      { db: app.db, tenantDbs: app.tenantDbs, storage: app.storage, log: silent },
      { name: `relay-crash-${mode}`, handlers: { 'document.updated': count, 'user.registered': count } },
    );
    const deliveries: EventEnvelope[] = [];
    const broker: Publisher = {
      name: 'to-consumer',
      async publish(events) {
        deliveries.push(...events);
        await consumer.handleBatch(events);
      },
      async ping() {},
      async close() {},
    };
    // Relay #1 claims a batch (lease 200 ms), publishes it, and dies before marking it published.
    const source = (await sources().list())[0];
    const claimed = await claimBatch(source.db, 'event', { limit: 5, leaseMs: 200, ordered: true });
    expect(claimed).toHaveLength(5);
    await broker.publish(claimed.map((r) => r.payload as EventEnvelope));
    // Relay #2 (the restart): until the lease expires only the control-plane event (no tenant) is not
    // behind a claimed one; then everything else goes out, the claimed batch again.
    const relay = createEventRelay({ sources: sources(), publisher: broker, log: silent });
    expect(await relay.drain()).toBe(1);
    await new Promise((r) => setTimeout(r, 250));
    expect(await relay.drain()).toBe(9);
    expect(deliveries.length).toBe(15); // the 5 were delivered twice (at least once) ...
    expect([...handled].sort()).toEqual(emitted.map((e) => e.event_id).sort()); // ... and handled once
    expect(await unpublished()).toBe(0);
  });
});
