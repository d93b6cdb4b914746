/**
 * The embedded default must not load the optional heavy clients (issue #4:
 * peak server RSS): the AWS SDK (S3_* only), BullMQ (REDIS_URL workers only),
 * kafkajs (KAFKA_BROKERS only) and nats (NATS_URL only). A child process builds,
 * starts and drains the app with a resolve hook recording every module the ESM
 * loader resolves, and reports the CommonJS module cache too
 * (test/helpers/startup-imports-child.ts).
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const OPTIONAL = /\/node_modules\/(@aws-sdk\/[^/]+|bullmq|kafkajs|nats)\//;

interface Snapshot {
  esm: Array<{ url: string; parent: string }>;
  cjs: string[];
}

function optionalIn(s: Snapshot): string[] {
  const found = new Set<string>();
  for (const { url, parent } of s.esm) {
    const m = OPTIONAL.exec(url);
    if (m) found.add(`${m[1]} (esm, imported by ${parent})`);
  }
  for (const file of s.cjs) {
    const m = OPTIONAL.exec(file);
    if (m) found.add(`${m[1]} (commonjs)`);
  }
  return [...found].sort();
}

describe('embedded default start-up', () => {
  it('builds, starts and drains without loading the AWS SDK, BullMQ, kafkajs or nats', async () => {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', 'test/helpers/startup-imports-child.ts'],
      { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp' }, timeout: 90_000, maxBuffer: 64 * 1024 * 1024 },
    );
    const { atStart, control } = JSON.parse(stdout.trim().split('\n').at(-1)!) as { atStart: Snapshot; control: Snapshot };

    // The recording works: the app's own modules were seen, and a later import of nats shows up both ways.
    expect(atStart.esm.some((r) => r.url.endsWith('/src/app.ts'))).toBe(true);
    expect(optionalIn(control)).toEqual(expect.arrayContaining([expect.stringMatching(/^nats \(esm/), 'nats (commonjs)']));

    expect(optionalIn(atStart)).toEqual([]);
  }, 120_000);
});
