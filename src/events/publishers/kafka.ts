/**
 * Kafka publisher (kafkajs). One topic per event type, named as the seeds name
 * them (topic = event_type, e.g. `document.uploaded`); message key = tenant_id,
 * so one tenant's events stay in order within a partition; value = the JSON
 * envelope; headers `event_id` and `event_type`. Idempotent producer, `acks: -1`
 * (all in-sync replicas). kafkajs itself is loaded on the first connect, so a
 * process that never publishes to Kafka never loads it.
 */
import type { Producer, TopicMessages } from 'kafkajs';
import type { EventEnvelope } from '../envelope.js';
import type { Publisher } from './types.js';

export interface KafkaPublisherOptions {
  brokers: string[];
  clientId?: string;
}

/** The part of a kafkajs producer the publisher uses (a fake one in unit tests). */
export type KafkaProducerLike = Pick<Producer, 'connect' | 'disconnect' | 'sendBatch'>;

/** Groups a batch into per-topic message lists, keeping the batch order inside each topic. */
export function toKafkaTopicMessages(events: EventEnvelope[]): TopicMessages[] {
  const byTopic = new Map<string, TopicMessages>();
  for (const e of events) {
    let entry = byTopic.get(e.event_type);
    if (!entry) {
      entry = { topic: e.event_type, messages: [] };
      byTopic.set(e.event_type, entry);
    }
    entry.messages.push({
      key: e.tenant_id,
      value: JSON.stringify(e),
      headers: { event_id: e.event_id, event_type: e.event_type },
    });
  }
  return [...byTopic.values()];
}

export function createKafkaPublisher(
  { brokers, clientId = 'tenantbase' }: KafkaPublisherOptions,
  deps: { producer?: KafkaProducerLike } = {},
): Publisher {
  let producer: KafkaProducerLike | null = deps.producer ?? null;
  let connected: Promise<KafkaProducerLike> | null = null;

  async function open(): Promise<KafkaProducerLike> {
    if (!producer) {
      const { Kafka, Partitioners, logLevel } = await import('kafkajs');
      producer = new Kafka({ clientId, brokers, logLevel: logLevel.WARN }).producer({
        idempotent: true,
        maxInFlightRequests: 1,
        createPartitioner: Partitioners.DefaultPartitioner,
      });
    }
    await producer.connect();
    return producer;
  }

  /** Connects once (the producer is made on the first call); a failed attempt is retried on the next call. */
  function connect(): Promise<KafkaProducerLike> {
    if (!connected) {
      connected = open();
      connected.catch(() => {
        connected = null;
      });
    }
    return connected;
  }

  return {
    name: 'kafka',
    async publish(events: EventEnvelope[]) {
      if (events.length === 0) return;
      const p = await connect();
      await p.sendBatch({ topicMessages: toKafkaTopicMessages(events), acks: -1 });
    },
    async ping() {
      // connect() fetches the cluster metadata from a broker, so it fails when none is reachable.
      await connect();
    },
    async close() {
      const pending = connected;
      connected = null;
      if (!pending) return;
      await pending.catch(() => undefined);
      await producer?.disconnect();
    },
  };
}
