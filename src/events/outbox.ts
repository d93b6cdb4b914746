/**
 * Writing to the transactional outbox. Call these with the transaction that
 * makes the change, so the change and its event/job commit (or not) together.
 * Delivery is the relay's job (src/events/relay.ts, src/jobs/).
 */
import { EventEmitter } from 'node:events';
import type { Kysely } from 'kysely';
import type { TenantSchema } from '../db/schema.js';
import { makeEvent, type EventEnvelope, type EventType } from './envelope.js';

type Tx = Kysely<TenantSchema>;

/**
 * In-process hint that outbox rows were just written (their transaction may not
 * have committed yet). Relays in this process poll sooner; on PGlite the poll
 * waits for the writing transaction and sees its rows. Across processes the
 * database's `outbox` notification does the same.
 */
const writes = new EventEmitter();
writes.setMaxListeners(0);

export function onOutboxWrite(listener: (kind: 'event' | 'job') => void): () => void {
  writes.on('write', listener);
  return () => writes.off('write', listener);
}

function hint(kind: 'event' | 'job'): void {
  // After the caller's current statement: never re-entrant into the writer.
  setImmediate(() => writes.emit('write', kind));
}

export async function recordEvent(
  trx: Tx,
  type: EventType,
  p: { tenantId: string | null; userId: string | null; data?: Record<string, unknown> },
): Promise<EventEnvelope> {
  const event = makeEvent(type, p);
  await trx
    .insertInto('outbox')
    .values({ tenant_id: p.tenantId, kind: 'event', topic: type, payload: JSON.stringify(event) })
    .execute();
  hint('event');
  return event;
}

/** Several events in one INSERT (same transaction rules as recordEvent). */
export async function recordEvents(
  trx: Tx,
  items: Array<{ type: EventType; tenantId: string | null; userId: string | null; data?: Record<string, unknown> }>,
): Promise<EventEnvelope[]> {
  if (items.length === 0) return [];
  const events = items.map((i) => makeEvent(i.type, i));
  await trx
    .insertInto('outbox')
    .values(events.map((e) => ({ tenant_id: e.tenant_id, kind: 'event' as const, topic: e.event_type, payload: JSON.stringify(e) })))
    .execute();
  hint('event');
  return events;
}

export interface JobRequest {
  name: string;
  tenantId: string;
  payload: Record<string, unknown>;
}

export async function recordJob(trx: Tx, job: JobRequest): Promise<void> {
  await trx
    .insertInto('outbox')
    .values({ tenant_id: job.tenantId, kind: 'job', topic: job.name, payload: JSON.stringify(job.payload) })
    .execute();
  hint('job');
}
