/**
 * The embedded default: no broker, each event becomes one log line.
 */
import type { EventEnvelope } from '../envelope.js';
import type { Publisher } from './types.js';

/** The part of a pino (or Fastify) logger this publisher uses. */
export interface EventLogger {
  info(obj: object, msg?: string): void;
}

export function createLogPublisher(logger: EventLogger): Publisher {
  return {
    name: 'log',
    async publish(events: EventEnvelope[]) {
      for (const event of events) logger.info({ event }, `event ${event.event_type}`);
    },
    async ping() {},
    async close() {},
  };
}
