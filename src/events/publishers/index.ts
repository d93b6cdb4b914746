/**
 * Picks the event publisher from configuration: an explicit `kind` wins;
 * otherwise Kafka when brokers are configured, else NATS when a URL is, else
 * the log publisher (the embedded default). Redis Streams only on
 * `kind: 'redis'`, because REDIS_URL alone also means "jobs on Redis".
 */
import { createKafkaPublisher } from './kafka.js';
import { createLogPublisher, type EventLogger } from './log.js';
import { createNatsPublisher } from './nats.js';
import { createRedisStreamsPublisher } from './redis-streams.js';
import type { Publisher } from './types.js';

export type { Publisher } from './types.js';
export type { EventLogger } from './log.js';
export { createLogPublisher } from './log.js';
export { createRedisStreamsPublisher, readRedisStream } from './redis-streams.js';
export { createNatsPublisher } from './nats.js';
export { createKafkaPublisher, toKafkaTopicMessages, type KafkaProducerLike } from './kafka.js';
export { createSeenSet, type SeenSet } from './dedupe.js';

export type PublisherKind = 'kafka' | 'nats' | 'redis' | 'log';

export interface PublisherConfig {
  kafkaBrokers?: string[];
  natsUrl?: string;
  redisUrl?: string;
  redisStream?: string;
  kind?: PublisherKind;
}

export function selectPublisherKind(cfg: PublisherConfig): PublisherKind {
  if (cfg.kind) return cfg.kind;
  if (cfg.kafkaBrokers && cfg.kafkaBrokers.length > 0) return 'kafka';
  if (cfg.natsUrl) return 'nats';
  return 'log';
}

export function createPublisher(cfg: PublisherConfig, logger: EventLogger): Publisher {
  const kind = selectPublisherKind(cfg);
  switch (kind) {
    case 'kafka':
      if (!cfg.kafkaBrokers?.length) throw new Error('event publisher "kafka" needs KAFKA_BROKERS');
      return createKafkaPublisher({ brokers: cfg.kafkaBrokers });
    case 'nats':
      if (!cfg.natsUrl) throw new Error('event publisher "nats" needs NATS_URL');
      return createNatsPublisher({ servers: cfg.natsUrl });
    case 'redis':
      if (!cfg.redisUrl) throw new Error('event publisher "redis" needs REDIS_URL');
      return createRedisStreamsPublisher({ url: cfg.redisUrl, stream: cfg.redisStream });
    case 'log':
      return createLogPublisher(logger);
  }
}
