/**
 * Waking the outbox relays when rows were written, without a database trigger
 * (tenant migration 0005 dropped `outbox_notify`: NOTIFY takes a database-wide
 * lock at commit, which made every transaction writing the outbox commit one
 * after the other).
 *
 * - In this process: `onOutboxWrite` listeners (the relays and the embedded
 *   runner of src/jobs/system.ts) are called at once.
 * - Other processes (a worker LISTENing on channel `outbox`, src/events/listen.ts):
 *   each registered notifier sends `NOTIFY outbox` on the main database, at most
 *   one per interval, always one starting after the latest request, so a relay
 *   woken by it sees every row committed before the request.
 *
 * `outboxCommitted()` is the precise call, made after the transaction that wrote
 * the rows committed. `recordEvent`/`recordJob` also call `outboxWritten()`
 * from inside the transaction: an early in-process wake (on PGlite a relay's
 * poll waits for the writing transaction and sees its rows), then the same wake
 * as `outboxCommitted()` a little later, by when the writer has usually
 * committed. Either way the relays' polling (OUTBOX_POLL_MS) still finds
 * anything a wake-up missed: nothing is lost, at worst delivered a poll later.
 */
import { EventEmitter } from 'node:events';

export type OutboxKind = 'event' | 'job';

const writes = new EventEmitter();
writes.setMaxListeners(0);

/** Called when outbox rows of `kind` were (or are about to be) committed. */
export function onOutboxWrite(listener: (kind: OutboxKind) => void): () => void {
  writes.on('write', listener);
  return () => writes.off('write', listener);
}

function wakeLocal(kinds: readonly OutboxKind[]): void {
  for (const kind of kinds) writes.emit('write', kind);
}

export interface OutboxNotifier {
  /** Ask for a NOTIFY that starts after this call (coalesced with other requests). */
  request(): void;
  /** Send what was asked for now, without waiting for the interval (a process about to exit). */
  flush?(): Promise<void>;
  /** Stop sending; waits for a NOTIFY in flight. */
  close(): Promise<void>;
}

/**
 * A throttled sender: a request made while nothing was sent for `intervalMs`
 * goes out at once; later ones are gathered into one send at the end of the
 * interval. A request made while a send is in flight gets a send of its own
 * after it (the one in flight may have started before the request's commit).
 */
export function createOutboxNotifier(
  send: () => Promise<unknown>,
  opts: { intervalMs?: number; log?: { warn(obj: object, msg?: string): void } } = {},
): OutboxNotifier {
  const intervalMs = opts.intervalMs ?? 20;
  let pending = false;
  let inFlight: Promise<void> | null = null;
  let timer: NodeJS.Timeout | null = null;
  let lastStart = -Infinity;
  let closed = false;
  let failed = false;

  function fire(): void {
    timer = null;
    if (!pending || closed) return;
    pending = false;
    lastStart = Date.now();
    inFlight = send()
      .then(() => {
        failed = false;
      })
      .catch((err) => {
        // Logged once per outage: the listeners' polling covers the gap.
        if (!failed) opts.log?.warn({ err }, 'outbox NOTIFY failed; relays in other processes rely on polling');
        failed = true;
      })
      .finally(() => {
        inFlight = null;
        if (pending) schedule();
      });
  }

  function schedule(): void {
    if (closed || inFlight || timer) return;
    const wait = lastStart + intervalMs - Date.now();
    if (wait <= 0) fire();
    else {
      timer = setTimeout(fire, wait);
      timer.unref();
    }
  }

  return {
    request() {
      pending = true;
      schedule();
    },
    async flush() {
      await inFlight;
      if (timer) clearTimeout(timer);
      timer = null;
      fire();
      await inFlight;
    },
    async close() {
      closed = true;
      if (timer) clearTimeout(timer);
      timer = null;
      await inFlight;
    },
  };
}

const notifiers = new Set<OutboxNotifier>();

/** Send this notifier's NOTIFY whenever outbox rows are committed in this process. */
export function registerOutboxNotifier(notifier: OutboxNotifier): () => void {
  notifiers.add(notifier);
  return () => {
    notifiers.delete(notifier);
  };
}

const BOTH: readonly OutboxKind[] = ['job', 'event'];

/** After the transaction that wrote outbox rows committed: wake the relays here now, and elsewhere (throttled). */
export function outboxCommitted(kinds: readonly OutboxKind[] = BOTH): void {
  wakeLocal(kinds);
  for (const n of notifiers) n.request();
}

/** How long after a write inside a transaction the post-commit wake-up is assumed. */
const SETTLE_MS = 10;
let settling: Set<OutboxKind> | null = null;

let settleTimer: NodeJS.Timeout | null = null;

/** Do now what outboxWritten() left for later (the writers have committed: e.g. a CLI command is done). */
export function settleOutboxWrites(): void {
  if (!settling) return;
  if (settleTimer) clearTimeout(settleTimer);
  settleTimer = null;
  const kinds = [...settling];
  settling = null;
  outboxCommitted(kinds);
}

/**
 * Rows were written in a transaction that has not committed yet: wake the relays
 * of this process after the current statement (never re-entrant into the
 * writer), and do what `outboxCommitted()` does SETTLE_MS later.
 */
export function outboxWritten(kind: OutboxKind): void {
  setImmediate(() => wakeLocal([kind]));
  if (settling) {
    settling.add(kind);
    return;
  }
  settling = new Set([kind]);
  settleTimer = setTimeout(settleOutboxWrites, SETTLE_MS);
  settleTimer.unref();
}
