/**
 * Summarise a V8 .cpuprofile (from `node --cpu-prof`): top functions by self
 * time, and self time by package / area. Usage:
 *   npx tsx bench/lib/profile-summary.ts <file.cpuprofile> [top=30]
 */
import fs from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Where a script belongs: a package under node_modules, node itself, or the project's own code. */
export function areaOf(url: string): string {
  if (!url) return '(native/vm)';
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1];
  if (url.startsWith('node:')) return 'node:' + url.slice(5).split('/')[0];
  const src = /\/(src\/[^/]+|bench|test)\//.exec(url);
  if (src) return src[1];
  return url.replace(/^file:\/\//, '');
}

export function summarise(profile: Profile, top = 30) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  // timeDeltas[i] is the time since the previous sample: charge it to sample i-1... close enough to charge to i.
  profile.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const total = [...selfUs.values()].reduce((a, b) => a + b, 0);

  const fns = new Map<string, number>();
  const areas = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const f = byId.get(id)!.callFrame;
    const file = f.url.replace(/^file:\/\//, '').replace(/^.*node_modules\//, '');
    const key = `${f.functionName || '(anonymous)'}  ${file ? `${file}:${f.lineNumber + 1}` : ''}`.trim();
    fns.set(key, (fns.get(key) ?? 0) + us);
    const area = areaOf(f.url);
    areas.set(area, (areas.get(area) ?? 0) + us);
  }
  const sorted = (m: Map<string, number>) => [...m.entries()].sort((a, b) => b[1] - a[1]);
  return { totalMs: total / 1000, functions: sorted(fns).slice(0, top), areas: sorted(areas) };
}

const isMain = process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/^.*\//, ''));
if (isMain) {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: tsx bench/lib/profile-summary.ts <file.cpuprofile> [top]');
    process.exit(2);
  }
  const top = Number(process.argv[3] ?? 30);
  const s = summarise(JSON.parse(fs.readFileSync(file, 'utf8')) as Profile, top);
  const pct = (us: number) => `${((us / 1000 / s.totalMs) * 100).toFixed(1).padStart(5)}%`;
  console.log(`sampled CPU time: ${s.totalMs.toFixed(0)} ms\n\nself time by area:`);
  for (const [area, us] of s.areas.slice(0, 25)) console.log(`  ${pct(us)}  ${(us / 1000).toFixed(0).padStart(7)} ms  ${area}`);
  console.log(`\ntop ${top} functions by self time:`);
  for (const [fn, us] of s.functions) console.log(`  ${pct(us)}  ${(us / 1000).toFixed(0).padStart(7)} ms  ${fn}`);
}
