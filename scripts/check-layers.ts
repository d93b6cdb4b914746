/**
 * The layer check (`npm run check:layers`, run by .ci/run): reads the runtime
 * imports of src/ with the TypeScript compiler (an import that brings only
 * types is erased at build time and does not count) and fails when
 *  - two folders of src/ import each other, directly or in a longer circle;
 *  - two files import each other in a circle;
 *  - an arrow runs up: a lower layer imports a higher one.
 *
 * The layers, from the top: the entry points and the composition root
 * (src/*.ts), the capabilities (every folder not named below), the HTTP layer
 * (src/http), then the infrastructure (INFRASTRUCTURE), which knows no
 * capability and nothing of HTTP. src/config.ts is plain settings: anyone may
 * import it, and it imports no capability.
 */
import path from 'node:path';
import ts from 'typescript';

const ROOT = path.resolve(import.meta.dirname, '..');
const SRC = path.join(ROOT, 'src');

/** Folders of src/ that are infrastructure: they import only each other (and src/config.ts). */
export const INFRASTRUCTURE = new Set(['db', 'storage', 'outbox', 'lib', 'secrets', 'mail-transport']);
const HTTP = 'http';
/** Files at the top of src/ that anyone may import (plain settings, no wiring). */
const SHARED_ROOT_FILES = new Set(['config.ts']);

type Layer = 'entry' | 'capability' | 'http' | 'infrastructure' | 'settings';

function unitOf(file: string): string {
  const rel = path.relative(SRC, file);
  const parts = rel.split(path.sep);
  return parts.length > 1 ? parts[0] : rel;
}

function layerOf(unit: string): Layer {
  if (SHARED_ROOT_FILES.has(unit)) return 'settings';
  if (unit.endsWith('.ts')) return 'entry';
  if (unit === HTTP) return 'http';
  if (INFRASTRUCTURE.has(unit)) return 'infrastructure';
  return 'capability';
}

const RANK: Record<Layer, number> = { entry: 4, capability: 3, http: 2, infrastructure: 1, settings: 0 };

/** May `from` import `to` at runtime? Same layer is fine (cycles are checked apart). */
function allowed(from: string, to: string): boolean {
  const a = layerOf(from);
  const b = layerOf(to);
  if (b === 'settings') return true;
  if (a === 'settings') return b === 'settings';
  if (b === 'entry') return a === 'entry';
  return RANK[a] >= RANK[b];
}

interface Edge {
  from: string;
  to: string;
}

function runtimeImports(program: ts.Program): Edge[] {
  const checker = program.getTypeChecker();
  const edges: Edge[] = [];
  const isValueBinding = (name: ts.Identifier): boolean => {
    const sym = checker.getSymbolAtLocation(name);
    if (!sym) return true;
    const target = sym.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(sym) : sym;
    return (target.flags & ts.SymbolFlags.Value) !== 0;
  };
  for (const sf of program.getSourceFiles()) {
    if (!sf.fileName.startsWith(SRC + path.sep) || sf.isDeclarationFile) continue;
    const add = (spec: string) => {
      if (!spec.startsWith('.')) return;
      const resolved = ts.resolveModuleName(spec, sf.fileName, program.getCompilerOptions(), ts.sys).resolvedModule;
      if (resolved && resolved.resolvedFileName.startsWith(SRC + path.sep) && !resolved.resolvedFileName.endsWith('.d.ts')) {
        edges.push({ from: sf.fileName, to: resolved.resolvedFileName });
      }
    };
    const visit = (node: ts.Node) => {
      if (ts.isImportDeclaration(node) && ts.isStringLiteral(node.moduleSpecifier)) {
        const clause = node.importClause;
        let runtime = !clause; // a bare `import './x.js'` runs the module
        if (clause && !clause.isTypeOnly) {
          if (clause.name && isValueBinding(clause.name)) runtime = true;
          const nb = clause.namedBindings;
          if (nb && ts.isNamespaceImport(nb)) runtime = true;
          if (nb && ts.isNamedImports(nb)) runtime ||= nb.elements.some((e) => !e.isTypeOnly && isValueBinding(e.name));
        }
        if (runtime) add(node.moduleSpecifier.text);
      } else if (ts.isExportDeclaration(node) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier) && !node.isTypeOnly) {
        const ec = node.exportClause;
        const runtime = !ec || ts.isNamespaceExport(ec) || ec.elements.some((e) => !e.isTypeOnly && isValueBinding(e.name));
        if (runtime) add(node.moduleSpecifier.text);
      } else if (
        ts.isCallExpression(node) &&
        node.expression.kind === ts.SyntaxKind.ImportKeyword &&
        node.arguments.length === 1 &&
        ts.isStringLiteral(node.arguments[0])
      ) {
        add(node.arguments[0].text);
      }
      ts.forEachChild(node, visit);
    };
    visit(sf);
  }
  return edges;
}

/** Strongly connected components with more than one node (Tarjan). */
function cycles(nodes: Iterable<string>, next: (n: string) => Iterable<string>): string[][] {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const out: string[][] = [];
  const strong = (v: string) => {
    idx.set(v, index);
    low.set(v, index);
    index += 1;
    stack.push(v);
    on.add(v);
    for (const w of next(v)) {
      if (!idx.has(w)) {
        strong(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) {
        low.set(v, Math.min(low.get(v)!, idx.get(w)!));
      }
    }
    if (low.get(v) === idx.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1) out.push(comp.sort());
    }
  };
  for (const n of nodes) if (!idx.has(n)) strong(n);
  return out;
}

export interface LayerReport {
  folderCycles: string[][];
  fileCycles: string[][];
  upward: Array<{ from: string; to: string; files: string[] }>;
  edges: number;
}

export function checkLayers(): LayerReport {
  const configPath = path.join(ROOT, 'tsconfig.json');
  const parsed = ts.getParsedCommandLineOfConfigFile(configPath, {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => {} });
  if (!parsed) throw new Error('cannot read tsconfig.json');
  const program = ts.createProgram({ rootNames: parsed.fileNames.filter((f) => f.startsWith(SRC + path.sep)), options: parsed.options });
  const edges = runtimeImports(program);
  const rel = (f: string) => path.relative(ROOT, f);

  const folderEdges = new Map<string, Map<string, string[]>>();
  const fileEdges = new Map<string, Set<string>>();
  for (const e of edges) {
    if (!fileEdges.has(e.from)) fileEdges.set(e.from, new Set());
    fileEdges.get(e.from)!.add(e.to);
    const a = unitOf(e.from);
    const b = unitOf(e.to);
    if (a === b) continue;
    if (!folderEdges.has(a)) folderEdges.set(a, new Map());
    const m = folderEdges.get(a)!;
    m.set(b, [...(m.get(b) ?? []), `${rel(e.from)} -> ${rel(e.to)}`]);
  }
  // Root files are units of their own; folder cycles are only between folders.
  const folders = [...folderEdges.keys()].filter((u) => !u.endsWith('.ts'));
  const folderCycles = cycles(folders, (u) => [...(folderEdges.get(u)?.keys() ?? [])].filter((v) => !v.endsWith('.ts')));
  const fileCycles = cycles(fileEdges.keys(), (f) => fileEdges.get(f) ?? []).map((c) => c.map(rel));
  const upward: LayerReport['upward'] = [];
  for (const [a, m] of folderEdges) for (const [b, files] of m) if (!allowed(a, b)) upward.push({ from: a, to: b, files });
  return { folderCycles, fileCycles, upward, edges: edges.length };
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(import.meta.filename)) {
  const report = checkLayers();
  let failed = false;
  for (const c of report.folderCycles) {
    failed = true;
    console.error(`folder cycle: ${c.join(' <-> ')}`);
  }
  for (const c of report.fileCycles) {
    failed = true;
    console.error(`file cycle: ${c.join(' <-> ')}`);
  }
  for (const u of report.upward) {
    failed = true;
    console.error(`upward import: ${u.from} (${layerOf(u.from)}) -> ${u.to} (${layerOf(u.to)})\n    ${u.files.join('\n    ')}`);
  }
  if (failed) {
    console.error('layer check failed (see scripts/check-layers.ts for the rules)');
    process.exit(1);
  }
  console.log(`layer check passed: ${report.edges} runtime imports, no cycle, no upward arrow`);
}
