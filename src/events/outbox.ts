/**
 * Writing to the transactional outbox. Call these with the transaction that
 * makes the change, so the change and its event/job commit (or not) together.
 * Delivery is the relay's job (src/events/relay.ts, src/jobs/).
 */
import type { Kysely } from 'kysely';
import type { TenantSchema } from '../db/schema.js';
import { makeEvent, type EventEnvelope, type EventType } from './envelope.js';
import { outboxWritten } from './wake.js';

export { onOutboxWrite, outboxCommitted } from './wake.js';

type Tx = Kysely<TenantSchema>;

/**
 * Relays are woken by src/events/wake.ts: recordEvent/recordJob wake this
 * process's relays right away and, shortly after, every process's (one throttled
 * `NOTIFY outbox`). A caller that knows when its transaction committed can call
 * `outboxCommitted()` then; polling covers the rest.
 */
function hint(kind: 'event' | 'job'): void {
  outboxWritten(kind);
}

/** An outbox row to insert (e.g. in the same statement as the change: see src/documents/upload.ts). */
export interface OutboxRow {
  tenant_id: string | null;
  kind: 'event' | 'job';
  topic: string;
  payload: string;
}

/** The outbox row of an event, and the event. */
export function eventRow(
  type: EventType,
  p: { tenantId: string | null; userId: string | null; data?: Record<string, unknown> },
): { row: OutboxRow; event: EventEnvelope } {
  const event = makeEvent(type, p);
  return { row: { tenant_id: p.tenantId, kind: 'event', topic: type, payload: JSON.stringify(event) }, event };
}

/** The outbox row of a job. */
export function jobRow(job: JobRequest): OutboxRow {
  return { tenant_id: job.tenantId, kind: 'job', topic: job.name, payload: JSON.stringify(job.payload) };
}

export async function recordEvent(
  trx: Tx,
  type: EventType,
  p: { tenantId: string | null; userId: string | null; data?: Record<string, unknown> },
): Promise<EventEnvelope> {
  const { row, event } = eventRow(type, p);
  await trx.insertInto('outbox').values(row).execute();
  hint('event');
  return event;
}

/** Several events in one INSERT (same transaction rules as recordEvent). */
export async function recordEvents(
  trx: Tx,
  items: Array<{ type: EventType; tenantId: string | null; userId: string | null; data?: Record<string, unknown> }>,
): Promise<EventEnvelope[]> {
  if (items.length === 0) return [];
  const made = items.map((i) => eventRow(i.type, i));
  await trx.insertInto('outbox').values(made.map((m) => m.row)).execute();
  hint('event');
  return made.map((m) => m.event);
}

export interface JobRequest {
  name: string;
  tenantId: string;
  payload: Record<string, unknown>;
}

export async function recordJob(trx: Tx, job: JobRequest): Promise<void> {
  await trx.insertInto('outbox').values(jobRow(job)).execute();
  hint('job');
}
