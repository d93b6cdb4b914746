/** One load scenario: autocannon (programmatic) against the server, with the server's peak RSS over it. */
import autocannon, { type AutocannonOptions, type AutocannonResult } from 'autocannon';
import os from 'node:os';
import { postgresCpuTimeMs, trackPeakRss, treeCpuTimeMs } from './server.js';

export interface LoadResult {
  requestsPerSec: number;
  p50: number;
  p99: number;
  /** Responses that were 2xx, and everything else (non-2xx, socket errors, timeouts). */
  ok: number;
  failed: number;
  statusCodes: Record<string, number>;
  peakRss: number;
  hwmReset: boolean;
  /** Server CPU time (user + system) per 2xx response, in µs: steadier than req/s on a shared machine. */
  cpuUsPerRequest?: number;
  /** CPU time of the PostgreSQL backends of the server's database per 2xx response, in µs (backends that exit mid-run are missed). */
  dbCpuUsPerRequest?: number;
  /** The machine's 1-minute load average when the scenario started. */
  loadAvg: number;
  seconds: number;
}

export function runAutocannon(opts: AutocannonOptions): Promise<AutocannonResult> {
  return new Promise((resolve, reject) => {
    const timeoutMs = ((opts.duration ?? 10) + 30) * 1000;
    const guard: { timer?: NodeJS.Timeout } = {};
    const instance = autocannon({ timeout: 10, ...opts }, (err, result) => {
      clearTimeout(guard.timer);
      if (err) reject(err);
      else resolve(result);
    });
    // Belt and braces: autocannon stops by itself after `duration`; this only guards a hang.
    guard.timer = setTimeout(() => instance.stop(), timeoutMs);
  });
}

export async function measure(pid: number, opts: AutocannonOptions & { duration: number; warmupSec?: number; database?: string }): Promise<LoadResult> {
  const { database: _database, warmupSec: _warmup, ...acOpts } = opts;
  if (opts.warmupSec) await runAutocannon({ ...acOpts, duration: opts.warmupSec });
  const loadAvg = os.loadavg()[0];
  const cpu0 = treeCpuTimeMs(pid);
  const db0 = opts.database ? postgresCpuTimeMs(opts.database) : null;
  const peak = trackPeakRss(pid);
  let result: AutocannonResult;
  try {
    result = await runAutocannon(acOpts);
  } catch (err) {
    peak.stop();
    throw err;
  }
  const mem = peak.stop();
  const cpu1 = treeCpuTimeMs(pid);
  const db1 = opts.database ? postgresCpuTimeMs(opts.database) : null;
  const statusCodes = Object.fromEntries(Object.entries(result.statusCodeStats ?? {}).map(([k, v]) => [k, v.count]));
  const ok = result['2xx'];
  const failed = result.non2xx + result.errors + result.timeouts;
  return {
    requestsPerSec: ok / result.duration,
    p50: result.latency.p50,
    p99: result.latency.p99,
    ok,
    failed,
    statusCodes,
    peakRss: mem.peak,
    hwmReset: mem.hwmReset,
    cpuUsPerRequest: cpu0 !== null && cpu1 !== null && result['2xx'] > 0 ? ((cpu1 - cpu0) * 1000) / result['2xx'] : undefined,
    dbCpuUsPerRequest: db0 !== null && db1 !== null && result['2xx'] > 0 ? (Math.max(0, db1 - db0) * 1000) / result['2xx'] : undefined,
    loadAvg,
    seconds: result.duration,
  };
}
