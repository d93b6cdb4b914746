/**
 * Writing to the transactional outbox. Call these with the transaction that
 * makes the change, so the change and its event/job commit (or not) together.
 * Delivery is the relay's job (src/events/relay.ts, src/jobs/).
 */
import type { Kysely } from 'kysely';
import type { TenantSchema } from '../db/schema.js';
import { makeEvent, type EventEnvelope, type EventType } from './envelope.js';

type Tx = Kysely<TenantSchema>;

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
  return event;
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
}
