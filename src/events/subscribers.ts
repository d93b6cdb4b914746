/**
 * Broker subscriptions feeding the event consumer (src/events/consumer.ts) in
 * the worker: a NATS JetStream durable consumer, a Redis Streams consumer
 * group, or a Kafka consumer group - whichever the publisher writes to. Every
 * worker joins the same durable consumer / group, so each event is handled by
 * one of them; a message is acknowledged only after its handler succeeded
 * (at least once; the consumer de-duplicates by event_id). The NATS and Kafka
 * clients are loaded only when their subscription is made.
 */
import type { Consumer } from 'kafkajs';
import { Redis } from 'ioredis';
import type { NatsConnection } from 'nats';
import { EVENT_TYPES, type EventEnvelope } from './envelope.js';
import type { EventConsumer, ConsumerLogger } from './consumer.js';

export interface Subscription {
  readonly name: string;
  close(): Promise<void>;
}

function parse(text: string): EventEnvelope | null {
  try {
    const e = JSON.parse(text) as EventEnvelope;
    return e && typeof e.event_id === 'string' && typeof e.event_type === 'string' ? e : null;
  } catch {
    return null;
  }
}

/** NATS JetStream: durable pull consumer `durable` on `stream`; failed messages are redelivered after a delay. */
export async function subscribeNats(
  consumer: EventConsumer,
  opts: { servers: string | string[]; stream?: string; subjectPrefix?: string; durable?: string; log: ConsumerLogger; retryDelayMs?: number },
): Promise<Subscription> {
  const stream = opts.stream ?? 'EVENTS';
  const subjectPrefix = opts.subjectPrefix ?? 'events';
  const durable = opts.durable ?? 'tenantbase-worker';
  const servers = Array.isArray(opts.servers) ? opts.servers : opts.servers.split(',').map((s) => s.trim());
  const { AckPolicy, DeliverPolicy, connect } = await import('nats');
  const nc: NatsConnection = await connect({ servers, name: `tenantbase-${durable}`, maxReconnectAttempts: -1 });
  const jsm = await nc.jetstreamManager();
  try {
    await jsm.streams.info(stream);
  } catch {
    await jsm.streams.add({ name: stream, subjects: [`${subjectPrefix}.>`] });
  }
  try {
    await jsm.consumers.info(stream, durable);
  } catch {
    await jsm.consumers.add(stream, {
      durable_name: durable,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      filter_subject: `${subjectPrefix}.>`,
      ack_wait: 60_000_000_000, // ns
    });
  }
  const c = await nc.jetstream().consumers.get(stream, durable);
  const messages = await c.consume({ max_messages: 100 });
  const done = (async () => {
    for await (const m of messages) {
      const event = parse(m.string());
      if (!event) {
        opts.log.warn({ subject: m.subject }, 'nats: not an event envelope; dropped');
        m.term();
        continue;
      }
      try {
        await consumer.handle(event);
        m.ack();
      } catch (err) {
        opts.log.error({ err, event_id: event.event_id, event_type: event.event_type }, 'event handler failed; redelivering');
        m.nak(opts.retryDelayMs ?? 5_000);
      }
    }
  })();
  return {
    name: 'nats',
    async close() {
      messages.stop();
      await done.catch(() => undefined);
      if (!nc.isClosed()) await nc.drain().catch(() => undefined);
    },
  };
}

/** Redis Streams: consumer group `group`; entries left pending by a dead worker are claimed after `claimIdleMs`. */
export async function subscribeRedisStream(
  consumer: EventConsumer,
  opts: { url: string; stream?: string; group?: string; consumerName?: string; log: ConsumerLogger; blockMs?: number; claimIdleMs?: number },
): Promise<Subscription> {
  const stream = opts.stream ?? 'events';
  const group = opts.group ?? 'tenantbase-worker';
  const me = opts.consumerName ?? `worker-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  const redis = new Redis(opts.url, { maxRetriesPerRequest: null });
  redis.on('error', () => {});
  try {
    await redis.xgroup('CREATE', stream, group, '0', 'MKSTREAM');
  } catch (err) {
    if (!/BUSYGROUP/.test((err as Error).message)) throw err;
  }
  let running = true;

  async function handleEntries(entries: Array<[string, string[]]>): Promise<void> {
    for (const [id, flat] of entries) {
      const fields: Record<string, string> = {};
      for (let i = 0; i + 1 < (flat?.length ?? 0); i += 2) fields[flat[i]] = flat[i + 1];
      const event = parse(fields.payload ?? '');
      if (!event) {
        await redis.xack(stream, group, id);
        continue;
      }
      try {
        await consumer.handle(event);
        await redis.xack(stream, group, id);
      } catch (err) {
        // Left pending: claimed again after claimIdleMs.
        opts.log.error({ err, event_id: event.event_id, event_type: event.event_type }, 'event handler failed; will be retried');
      }
    }
  }

  const done = (async () => {
    let lastClaim = 0;
    while (running) {
      try {
        if (Date.now() - lastClaim > (opts.claimIdleMs ?? 30_000) / 2) {
          lastClaim = Date.now();
          const claimed = (await redis.xautoclaim(stream, group, me, opts.claimIdleMs ?? 30_000, '0', 'COUNT', 100)) as [string, Array<[string, string[]]>];
          if (claimed?.[1]?.length) await handleEntries(claimed[1].filter((e) => e && e[1]));
        }
        const res = (await redis.xreadgroup('GROUP', group, me, 'COUNT', 100, 'BLOCK', opts.blockMs ?? 1_000, 'STREAMS', stream, '>')) as
          | Array<[string, Array<[string, string[]]>]>
          | null;
        if (res) for (const [, entries] of res) await handleEntries(entries);
      } catch (err) {
        if (!running) break;
        opts.log.error({ err }, 'redis stream subscription error');
        await new Promise((r) => setTimeout(r, 1_000));
      }
    }
  })();
  return {
    name: 'redis',
    async close() {
      running = false;
      redis.disconnect();
      await done.catch(() => undefined);
    },
  };
}

/** Kafka: consumer group `groupId` on every event topic (topic = event_type). */
export async function subscribeKafka(
  consumer: EventConsumer,
  opts: { brokers: string[]; groupId?: string; log: ConsumerLogger },
): Promise<Subscription> {
  const { Kafka, logLevel } = await import('kafkajs');
  const kafka = new Kafka({ clientId: 'tenantbase-worker', brokers: opts.brokers, logLevel: logLevel.WARN });
  const c: Consumer = kafka.consumer({ groupId: opts.groupId ?? 'tenantbase-worker', allowAutoTopicCreation: true });
  await c.connect();
  await c.subscribe({ topics: [...EVENT_TYPES], fromBeginning: true });
  await c.run({
    // A throw makes kafkajs retry the message (the offset is committed only after success).
    eachMessage: async ({ message, topic }) => {
      const event = parse(message.value?.toString('utf8') ?? '');
      if (!event) {
        opts.log.warn({ topic }, 'kafka: not an event envelope; skipped');
        return;
      }
      await consumer.handle(event);
    },
  });
  return {
    name: 'kafka',
    async close() {
      await c.disconnect();
    },
  };
}
