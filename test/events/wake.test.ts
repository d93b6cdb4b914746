/**
 * Waking relays without the outbox NOTIFY trigger (src/events/wake.ts): at
 * once in-process after commit, and across processes with at most one
 * `NOTIFY outbox` per interval, always one starting after the latest request.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { HAS_PG, requirePg } from '../helpers/env.js';
import { listenForOutbox, type OutboxListener } from '../../src/events/listen.js';
import {
  createOutboxNotifier, onOutboxWrite, outboxCommitted, outboxWritten, registerOutboxNotifier,
} from '../../src/events/wake.js';
import { newOrg, upload, type Org } from '../documents/helpers.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(check: () => boolean, timeoutMs = 3_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await sleep(5);
  }
}

describe('outbox notifier (throttled NOTIFY)', () => {
  it('sends the first request at once and gathers the requests of the next interval into one send', async () => {
    const sent: number[] = [];
    const n = createOutboxNotifier(async () => { sent.push(Date.now()); }, { intervalMs: 40 });
    n.request();
    await sleep(0);
    expect(sent).toHaveLength(1);
    for (let i = 0; i < 50; i++) n.request();
    await sleep(10);
    expect(sent).toHaveLength(1);
    await until(() => sent.length === 2);
    expect(sent[1] - sent[0]).toBeGreaterThanOrEqual(35);
    await sleep(80);
    expect(sent).toHaveLength(2); // nothing more was asked for
    await n.close();
  });

  it('sends again after a send that was in flight when the request came (it may predate the commit)', async () => {
    let release: () => void = () => undefined;
    let calls = 0;
    const n = createOutboxNotifier(() => {
      calls += 1;
      return new Promise<void>((r) => { release = r; });
    }, { intervalMs: 1 });
    n.request();
    await sleep(5);
    expect(calls).toBe(1);
    n.request(); // while the first is in flight
    await sleep(10);
    expect(calls).toBe(1);
    release();
    await until(() => calls === 2);
    release();
    await n.close();
  });

  it('keeps going after a failed send, and stops when closed', async () => {
    let calls = 0;
    const warnings: unknown[] = [];
    const n = createOutboxNotifier(async () => {
      calls += 1;
      throw new Error('connection refused');
    }, { intervalMs: 1, log: { warn: (o) => warnings.push(o) } });
    n.request();
    await until(() => calls === 1);
    await sleep(5);
    n.request();
    await until(() => calls === 2);
    expect(warnings).toHaveLength(1); // once per outage
    await n.close();
    n.request();
    await sleep(10);
    expect(calls).toBe(2);
  });

  it('flush sends a pending request without waiting for the interval', async () => {
    let calls = 0;
    const n = createOutboxNotifier(async () => { calls += 1; }, { intervalMs: 10_000 });
    await n.flush!();
    expect(calls).toBe(0); // nothing asked for
    n.request();
    await sleep(0);
    n.request(); // waits for the 10 s interval...
    await n.flush!(); // ...unless flushed
    expect(calls).toBe(2);
    await n.close();
  });

  it('outboxCommitted wakes this process at once and asks every registered notifier; outboxWritten does it shortly after', async () => {
    const kinds: string[] = [];
    const off = onOutboxWrite((k) => kinds.push(k));
    let requests = 0;
    const unregister = registerOutboxNotifier({ request: () => { requests += 1; }, close: async () => undefined });
    try {
      outboxCommitted(['job']);
      expect(kinds).toEqual(['job']);
      expect(requests).toBe(1);

      kinds.length = 0;
      outboxWritten('event');
      outboxWritten('job');
      expect(kinds).toEqual([]); // never inside the writer's statement
      await until(() => requests === 2);
      expect(kinds.filter((k) => k === 'event').length).toBeGreaterThanOrEqual(2); // early hint + after settling
      expect(kinds).toContain('job');
    } finally {
      off();
      unregister();
    }
  });
});

describe.skipIf(!HAS_PG)('cross-process wake-up on postgres', () => {
  let t: TestApp;
  let app: FastifyInstance;
  let org: Org;
  let listener: OutboxListener | null = null;

  beforeAll(async () => {
    requirePg();
    t = await buildTestApp({ mode: 'postgres' });
    app = t.app;
    org = await newOrg(app, 'Wake');
  });
  afterAll(async () => {
    await listener?.close();
    await t?.close();
  });

  it('a process LISTENing on outbox (a worker) hears an upload committed by the API process', async () => {
    let heard = 0;
    listener = listenForOutbox(t.config.databaseUrl!, () => { heard += 1; });
    await until(() => heard === 1); // connected (it wakes once to catch up)
    await sleep(50);
    heard = 0;
    const res = await upload(app, org.admin, org.tid, randomBytes(64));
    expect(res.statusCode).toBe(201);
    await until(() => heard > 0);
  });
});
