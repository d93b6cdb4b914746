/**
 * The event envelope every state change is published in (API.md, "Events"):
 * `{event_id, event_type, tenant_id, user_id, timestamp, data}`.
 */
import { randomUUID } from 'node:crypto';

export const EVENT_TYPES = [
  'tenant.created',
  'tenant.updated',
  'tenant.deleted',
  'member.added',
  'member.updated',
  'member.removed',
  'invitation.created',
  'document.uploaded',
  'document.updated',
  'document.processed',
  'document.deleted',
  'file.deleted',
  'user.registered',
  'audit.log',
] as const;

export type EventType = (typeof EVENT_TYPES)[number];

export interface EventEnvelope {
  event_id: string;
  event_type: EventType;
  tenant_id: string | null;
  user_id: string | null;
  /** ISO 8601, UTC (`Date.prototype.toISOString`). */
  timestamp: string;
  data: Record<string, unknown>;
}

/** A new envelope with a fresh random UUID as event_id. */
export function makeEvent(
  type: EventType,
  p: { tenantId: string | null; userId: string | null; data?: Record<string, unknown>; now?: Date },
): EventEnvelope {
  return {
    event_id: randomUUID(),
    event_type: type,
    tenant_id: p.tenantId,
    user_id: p.userId,
    timestamp: (p.now ?? new Date()).toISOString(),
    data: p.data ?? {},
  };
}
