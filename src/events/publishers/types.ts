import type { EventEnvelope } from '../envelope.js';

/** Delivers event envelopes to a broker. */
export interface Publisher {
  readonly name: string;
  /**
   * Resolves only once the broker has acknowledged every event of the batch
   * (at-least-once: a rejected call may have delivered part of the batch, and a
   * retry delivers those again; consumers de-duplicate by event_id).
   */
  publish(events: EventEnvelope[]): Promise<void>;
  /** Rejects when the broker is unreachable. */
  ping(): Promise<void>;
  close(): Promise<void>;
}
