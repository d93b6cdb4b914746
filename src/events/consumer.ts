/**
 * The event consumer (the second seed's Kafka consumer worker): routes events
 * by type to handlers, at least once, de-duplicated by event_id (an in-memory
 * set for recent ids plus the `consumed_events` table, and handlers that are
 * idempotent on their own).
 *
 * - `document.deleted`: orphan cleanup - the deleted document's file (or, when
 *   the event does not name it, any file of the tenant) that no document
 *   references any more is removed: row (with a `file.deleted` event) and bytes.
 * - `tenant.created`: provisioning follow-up - the outbox sources are re-read
 *   (a dedicated database is relayed from now on) and a dedicated database is
 *   checked to be reachable.
 * - `audit.log`: appended to `audit_log` (unique event_id: once).
 *
 * Events reach it from a broker subscription (src/events/subscribers.ts) or,
 * with the log publisher (no broker), straight from the relay in the same
 * process (`createLocalPublisher`).
 */
import { sql, type Kysely } from 'kysely';
import type { ControlSchema } from '../db/schema.js';
import type { TenantDatabases, TenantRef } from '../db/tenant-db.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { EventEnvelope } from './envelope.js';
import { removeFileIfOrphaned } from '../documents/service.js';
import type { Publisher } from './publishers/types.js';
import type { OutboxSources } from './sources.js';
import { UUID_RE } from '../http/ids.js';

export interface ConsumerLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface ConsumerContext {
  db: Kysely<ControlSchema>;
  tenantDbs: TenantDatabases;
  storage: BlobStore;
  log: ConsumerLogger;
  sources?: OutboxSources;
}

export type EventHandler = (ctx: ConsumerContext, event: EventEnvelope) => Promise<void>;

export interface EventConsumer {
  readonly name: string;
  /** Handle one event; 'duplicate' when its event_id was already consumed, 'ignored' without a handler. */
  handle(event: EventEnvelope): Promise<'handled' | 'duplicate' | 'ignored'>;
  /** In order; rejects on the first failure (the caller redelivers). */
  handleBatch(events: EventEnvelope[]): Promise<void>;
}

async function tenantRef(ctx: ConsumerContext, tenantId: string | null): Promise<TenantRef | undefined> {
  if (!tenantId || !UUID_RE.test(tenantId)) return undefined;
  return ctx.db
    .selectFrom('tenants')
    .select(['id', 'isolation', 'db_server', 'db_name'])
    .where('id', '=', tenantId)
    .executeTakeFirst();
}

function str(v: unknown, max = 1000): string | null {
  if (v === undefined || v === null) return null;
  const s = typeof v === 'string' ? v : String(v);
  return s.length > max ? s.slice(0, max) : s;
}

/**
 * document.deleted: remove the file no document references any more - the one
 * the event names, else any of the tenant's (a sweep, 100 at a time). The
 * removal itself is the documents capability's `removeFileIfOrphaned`: row,
 * `file.deleted` event and bytes under the content lock uploads take, then the
 * quota given back. Idempotent.
 */
export const cleanupOrphanFiles: EventHandler = async (ctx, event) => {
  const tenant = await tenantRef(ctx, event.tenant_id);
  if (!tenant) return;
  const named = typeof event.data.file_id === 'string' && UUID_RE.test(event.data.file_id) ? event.data.file_id : null;
  const candidates = named
    ? [named]
    : (
        await ctx.tenantDbs.withTenant(tenant, (trx) =>
          trx
            .selectFrom('files as f')
            .select('f.id')
            .where('f.tenant_id', '=', tenant.id)
            .where(({ not, exists, selectFrom }) =>
              not(exists(selectFrom('documents as d').select('d.id').whereRef('d.file_id', '=', 'f.id'))),
            )
            .limit(100)
            .execute(),
        )
      ).map((r) => r.id);
  for (const fileId of candidates) {
    const removed = await removeFileIfOrphaned(ctx, tenant, fileId, { userId: null, reason: 'orphan_cleanup' });
    if (removed) ctx.log.info({ tenant_id: tenant.id, file_id: fileId, cause_event_id: event.event_id }, 'orphaned file removed');
  }
};

/** tenant.created: pick up a dedicated database, check that it answers. */
export const provisionTenant: EventHandler = async (ctx, event) => {
  ctx.sources?.invalidate();
  const tenant = await tenantRef(ctx, event.tenant_id);
  if (!tenant) return;
  if (tenant.isolation === 'dedicated') {
    await sql`SELECT 1`.execute(ctx.tenantDbs.dbFor(tenant));
  }
  ctx.log.info({ tenant_id: tenant.id, isolation: tenant.isolation }, 'tenant provisioned');
};

/** audit.log: one row per event, never twice. */
export const appendAudit: EventHandler = async (ctx, event) => {
  const d = event.data ?? {};
  const { action, resource_type, resource_id, ip, user_agent, actor_email, ...rest } = d as Record<string, unknown>;
  const details = typeof rest.details === 'object' && rest.details !== null ? rest.details : rest;
  await ctx.db
    .insertInto('audit_log')
    .values({
      event_id: event.event_id,
      tenant_id: event.tenant_id && UUID_RE.test(event.tenant_id) ? event.tenant_id : null,
      user_id: event.user_id && UUID_RE.test(event.user_id) ? event.user_id : null,
      actor_email: str(actor_email, 320),
      action: str(action, 200) ?? 'unknown',
      resource_type: str(resource_type, 100),
      resource_id: str(resource_id, 200),
      ip: str(ip, 100),
      user_agent: str(user_agent, 500),
      details: JSON.stringify(details ?? {}),
      occurred_at: event.timestamp,
    })
    .onConflict((oc) => oc.column('event_id').doNothing())
    .execute();
};

export const DEFAULT_HANDLERS: Readonly<Record<string, EventHandler>> = {
  'document.deleted': cleanupOrphanFiles,
  'tenant.created': provisionTenant,
  'audit.log': appendAudit,
};

/** Sees every event (in batches when the relay delivers in-process); must be idempotent on its own. */
export type BatchHandler = (ctx: ConsumerContext, events: EventEnvelope[]) => Promise<void>;

export function createEventConsumer(
  ctx: ConsumerContext,
  opts: { name?: string; handlers?: Record<string, EventHandler>; batchHandlers?: BatchHandler[]; durableDedupe?: boolean } = {},
): EventConsumer {
  const name = opts.name ?? 'worker';
  const handlers = opts.handlers ?? DEFAULT_HANDLERS;
  const durable = opts.durableDedupe ?? true;
  const db = ctx.db;
  // Recently handled ids (insertion-ordered map as a bounded LRU); only successes are recorded.
  const recent = new Map<string, true>();
  const remember = (id: string) => {
    recent.set(id, true);
    if (recent.size > 50_000) recent.delete(recent.keys().next().value as string);
  };

  async function alreadyConsumed(id: string): Promise<boolean> {
    if (!durable || !UUID_RE.test(id)) return false;
    const row = await db
      .selectFrom('consumed_events')
      .select('event_id')
      .where('consumer', '=', name)
      .where('event_id', '=', id)
      .executeTakeFirst();
    return row !== undefined;
  }

  const batchHandlers = opts.batchHandlers ?? [];

  // Redeliveries come within minutes or hours; a week of consumed ids is plenty.
  let lastPrune = Date.now();
  function pruneNowAndThen(): void {
    if (!durable || Date.now() - lastPrune < 3_600_000) return;
    lastPrune = Date.now();
    db.deleteFrom('consumed_events')
      .where('consumed_at', '<', sql<Date>`now() - interval '7 days'`)
      .execute()
      .catch((err) => ctx.log.warn({ err }, 'could not prune consumed_events'));
  }

  async function handleOne(event: EventEnvelope): Promise<'handled' | 'duplicate' | 'ignored'> {
    const handler = handlers[event.event_type];
    if (!handler) return 'ignored';
    pruneNowAndThen();
    if (recent.has(event.event_id) || (await alreadyConsumed(event.event_id))) {
      remember(event.event_id);
      return 'duplicate';
    }
    await handler(ctx, event);
    if (durable && UUID_RE.test(event.event_id)) {
      await db
        .insertInto('consumed_events')
        .values({ consumer: name, event_id: event.event_id })
        .onConflict((oc) => oc.columns(['consumer', 'event_id']).doNothing())
        .execute();
    }
    remember(event.event_id);
    return 'handled';
  }

  const consumer: EventConsumer = {
    name,
    async handle(event) {
      const r = await handleOne(event);
      for (const b of batchHandlers) await b(ctx, [event]);
      return r;
    },
    async handleBatch(events) {
      for (const e of events) await handleOne(e);
      for (const b of batchHandlers) await b(ctx, events);
    },
  };
  return consumer;
}

/** A publisher that hands events to a consumer in this process (the log publisher has no broker to read from). */
export function createLocalPublisher(consumer: EventConsumer): Publisher {
  return {
    name: `local:${consumer.name}`,
    publish: (events) => consumer.handleBatch(events),
    async ping() {},
    async close() {},
  };
}

/** Publishes to each in turn (e.g. the log, then the local consumer). */
export function combinePublishers(publishers: Publisher[]): Publisher {
  return {
    name: publishers.map((p) => p.name).join('+'),
    async publish(events) {
      for (const p of publishers) await p.publish(events);
    },
    async ping() {
      await Promise.all(publishers.map((p) => p.ping()));
    },
    async close() {
      await Promise.allSettled(publishers.map((p) => p.close()));
    },
  };
}
