/**
 * LISTEN on the `outbox` channel of the main database so relays wake as soon as
 * rows are committed, in any process: every process that writes outbox rows
 * (in the main database or a dedicated tenant's) sends `NOTIFY outbox` there
 * after committing them, at most one per short interval (src/events/wake.ts).
 * Reconnects with backoff; polling still covers any gap.
 */
import pg from 'pg';

export interface OutboxListener {
  close(): Promise<void>;
}

export function listenForOutbox(
  connectionString: string,
  onNotify: () => void,
  log?: { warn(obj: object, msg?: string): void },
): OutboxListener {
  let client: pg.Client | null = null;
  let closed = false;
  let failures = 0;
  let timer: NodeJS.Timeout | null = null;

  async function open(): Promise<void> {
    if (closed) return;
    const c = new pg.Client({ connectionString });
    c.on('error', () => {});
    c.on('end', () => {
      if (client === c) client = null;
      if (!closed) schedule();
    });
    c.on('notification', () => onNotify());
    try {
      await c.connect();
      await c.query('LISTEN outbox');
      if (closed) {
        await c.end().catch(() => undefined);
        return;
      }
      client = c;
      failures = 0;
      onNotify(); // catch up on anything committed while not listening
    } catch (err) {
      failures += 1;
      if (failures === 1) log?.warn({ err }, 'outbox LISTEN failed; relying on polling until it reconnects');
      await c.end().catch(() => undefined);
      schedule();
    }
  }

  function schedule(): void {
    if (closed || timer) return;
    timer = setTimeout(() => {
      timer = null;
      void open();
    }, Math.min(30_000, 500 * 2 ** Math.min(failures, 6)));
    timer.unref();
  }

  void open();

  return {
    async close() {
      closed = true;
      if (timer) clearTimeout(timer);
      const c = client;
      client = null;
      await c?.end().catch(() => undefined);
    },
  };
}
