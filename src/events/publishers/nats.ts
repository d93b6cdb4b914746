/**
 * NATS JetStream publisher. On first use the stream is created if missing
 * (subjects `${subjectPrefix}.>`); each event goes to
 * `${subjectPrefix}.${event_type}` with `msgID = event_id`, so JetStream's
 * duplicate window drops a redelivered event, and every PubAck is awaited.
 * The nats client is loaded on the first connection, so a process that never
 * publishes to NATS never loads it.
 */
import type { JetStreamClient, JetStreamManager, NatsConnection } from 'nats';
import type { EventEnvelope } from '../envelope.js';
import type { Publisher } from './types.js';

export interface NatsPublisherOptions {
  /** One URL, a comma-separated list, or an array (`nats://127.0.0.1:4222`). */
  servers: string | string[];
  stream?: string;
  subjectPrefix?: string;
}

interface Conn {
  nc: NatsConnection;
  jsm: JetStreamManager;
  js: JetStreamClient;
}

function isNotFound(err: unknown): boolean {
  const e = err as { code?: string | number; api_error?: { code?: number; err_code?: number } };
  return e?.api_error?.err_code === 10059 || e?.api_error?.code === 404 || String(e?.code) === '404';
}

async function ensureStream(jsm: JetStreamManager, name: string, subject: string): Promise<void> {
  try {
    await jsm.streams.info(name);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    await jsm.streams.add({ name, subjects: [subject] });
  }
}

export function createNatsPublisher({
  servers,
  stream = 'EVENTS',
  subjectPrefix = 'events',
}: NatsPublisherOptions): Publisher {
  const serverList = Array.isArray(servers) ? servers : servers.split(',').map((s) => s.trim());
  let ready: Promise<Conn> | null = null;

  async function open(): Promise<Conn> {
    const { connect } = await import('nats');
    // Reconnect forever: during an outage publish() rejects on its PubAck timeout and the caller retries.
    const nc = await connect({ servers: serverList, name: 'tenantbase-events', maxReconnectAttempts: -1 });
    try {
      const jsm = await nc.jetstreamManager();
      await ensureStream(jsm, stream, `${subjectPrefix}.>`);
      return { nc, jsm, js: nc.jetstream() };
    } catch (err) {
      await nc.close();
      throw err;
    }
  }

  /** The connection, opened (and the stream ensured) once; a failed attempt is retried on the next call. */
  function conn(): Promise<Conn> {
    if (!ready) {
      const attempt = open();
      ready = attempt;
      const forget = () => {
        if (ready === attempt) ready = null;
      };
      // A failed attempt, or a connection that closes later, is replaced on the next call.
      attempt.then(({ nc }) => nc.closed().then(forget), forget);
    }
    return ready;
  }

  return {
    name: 'nats',
    async publish(events: EventEnvelope[]) {
      if (events.length === 0) return;
      const { js } = await conn();
      // One connection keeps publish order; the acks are awaited together.
      await Promise.all(
        events.map((e) =>
          js.publish(`${subjectPrefix}.${e.event_type}`, JSON.stringify(e), { msgID: e.event_id }),
        ),
      );
    },
    async ping() {
      const { jsm } = await conn();
      await jsm.streams.info(stream);
    },
    async close() {
      const pending = ready;
      ready = null;
      if (!pending) return;
      const c = await pending.catch(() => null);
      if (c && !c.nc.isClosed()) await c.nc.drain();
    },
  };
}
