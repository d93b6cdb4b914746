/**
 * A background polling loop: sleeps `idleMs` when a pass finds nothing (or
 * until `wake()`), backs off exponentially (up to `maxBackoffMs`) while it
 * throws, and otherwise runs the next pass `minGapMs` after the previous one
 * started - at once when the pass was full (`burst` or more), so a backlog
 * drains at full speed while a trickle of work is gathered into fewer, larger
 * passes (each pass costs a few database round trips whatever its size).
 */
export interface LoopLogger {
  error(obj: object, msg?: string): void;
}

export interface Loop {
  start(): void;
  /** Run a pass soon (e.g. after a notification that rows were written). */
  wake(): void;
  /** Stop and wait for the pass in progress. */
  stop(): Promise<void>;
  readonly running: boolean;
}

export function createLoop(opts: {
  name: string;
  /** Returns how much work it did; > 0 runs the next pass immediately. */
  pass: () => Promise<number>;
  idleMs: number;
  /** Minimum time between the starts of two passes that found work (default 0). */
  minGapMs?: number;
  /** A pass that did at least this much runs the next one at once (default: never). */
  burst?: number;
  maxBackoffMs?: number;
  log?: LoopLogger;
}): Loop {
  const maxBackoff = opts.maxBackoffMs ?? 30_000;
  let running = false;
  let timer: NodeJS.Timeout | null = null;
  let sleeping: (() => void) | null = null;
  let interruptible = false;
  let current: Promise<void> | null = null;
  let woken = false;
  let failures = 0;

  function sleep(ms: number, canWake: boolean): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        if (timer) clearTimeout(timer);
        timer = null;
        sleeping = null;
        resolve();
      };
      sleeping = done;
      interruptible = canWake;
      timer = setTimeout(done, ms);
    });
  }

  async function run(): Promise<void> {
    const minGap = opts.minGapMs ?? 0;
    const burst = opts.burst ?? Number.POSITIVE_INFINITY;
    while (running) {
      woken = false;
      const started = Date.now();
      let delay: number;
      let idle = false;
      try {
        const n = await opts.pass();
        failures = 0;
        if (n >= burst) delay = 0;
        else if (n > 0 || woken) delay = Math.max(0, minGap - (Date.now() - started));
        else {
          delay = opts.idleMs;
          idle = true;
        }
      } catch (err) {
        failures += 1;
        delay = Math.min(maxBackoff, opts.idleMs * 2 ** Math.min(failures, 16));
        opts.log?.error({ err, loop: opts.name, failures }, `${opts.name}: pass failed; retrying in ${delay} ms`);
      }
      if (!running) break;
      // Only an idle sleep is cut short by wake(); a wake during the gap is served right after it.
      if (delay > 0) await sleep(delay, idle);
      else await new Promise((r) => setImmediate(r));
    }
  }

  return {
    start() {
      if (running) return;
      running = true;
      current = run().finally(() => {
        current = null;
      });
    },
    wake() {
      woken = true;
      if (failures === 0 && interruptible) sleeping?.();
    },
    async stop() {
      running = false;
      sleeping?.();
      await current;
    },
    get running() {
      return running;
    },
  };
}

/** Run `pass` until it finds nothing to do; the total it processed. */
export async function drainPasses(pass: () => Promise<number>): Promise<number> {
  let total = 0;
  for (;;) {
    const n = await pass();
    total += n;
    if (n === 0) return total;
  }
}
