/** Plain-text tables and number formatting for benchmark output. */

export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (c ?? '').padEnd(widths[i])).join(' | ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('-|-'), ...rows.map(line)].join('\n');
}

export const fmtInt = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? '—' : Math.round(n).toLocaleString('en-US'));
export const fmtMs = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? '—' : `${n < 10 ? n.toFixed(1) : Math.round(n)} ms`);
export const fmtMb = (bytes: number | undefined) => (bytes === undefined || !Number.isFinite(bytes) || bytes <= 0 ? '—' : `${Math.round(bytes / 1024 / 1024)} MB`);
export const fmtSec = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
