// The import graph of the product folders (not test/ or bench/): no circle, and no import from a
// lower layer to a higher one. Every static import counts, type-only ones too (they say what a
// module depends on), and so does every require() or dynamic import() outside the self-tests.
// Exempt: loads inside a module's `selfTest` object, or inside a module-level helper used only
// there (the self-tests' lazy fixtures: `const fixtures = () => import(...)`), found from the
// syntax tree; and the two fixture modules, loaded only by self-tests and tests.
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

const ROOT = path.resolve(__dirname, '..', '..');

/** Bottom to top; a module may import its own layer and those below. */
const LAYERS: string[][] = [
  ['utils'],
  ['backends'],
  ['storage'], // checkpoint and export file formats, atomic folders
  ['pipeline', 'models', 'loaders', 'training', 'report'],
  ['config'], // resolution: asks the model, loss, optimizer and schedule registries
  ['engine'],
  ['deploy'],
  ['api'],
  ['commands'], // train.ts, evaluate.ts, predict.ts, export.ts at the root
];
const FIXTURES = new Set(['loaders/fixtures.ts', 'report/fixture_data.ts']);

/**
 * Loads that are not imports of a product module: optional packages and the files a
 * registry finds by name. `file` → specifiers allowed there, with why.
 */
const DYNAMIC_ALLOWED: Record<string, Record<string, string>> = {
  'backends/index.ts': { '@tensorflow/tfjs-node-gpu': 'optional package', '@tensorflow/tfjs-node': 'optional package', '@tensorflow/tfjs-backend-wasm': 'optional package' },
  'backends/webgpu.ts': { '@tensorflow/tfjs-backend-webgpu': 'optional package (Dawn, webgpu, is loaded by a Function-built import())' },
  'backends/wasm_threads.ts': { '*': "tfjs-backend-wasm's own threaded build files, by path" },
  'models/encoders/imagenet.ts': { 'nsfwjs/models/mobilenet_v2': 'optional package (ImageNet weights)' },
  'engine/onnx_runtime.ts': { 'onnxruntime-node': 'optional package (ONNX Runtime, for .onnx models)' },
  'utils/folder_registry.ts': { '*': 'a registry entry found by its file name (models, datasets, losses, ...)' },
  'utils/self_test.ts': { './exit': 'exit.ts imports self_test.ts; loaded when a self-test run ends' },
  'engine/stop.ts': { 'node:worker_threads': 'a worker script (run as a file, not imported)', 'node:fs': 'same' },
  'pipeline/pool.ts': { '*': "the worker's bootstrap source text (tsx when run from sources)" },
  'models/model_checks.ts': { '../engine/portable': "modelChecks builds each models/<name>.ts's self-tests", '../backends': 'same', './registry': 'same', './layers/custom_layers': 'same' },
  'deploy/web_train/registry_entries.ts': { '*': "the registries' entry files, by path (the browser bundle's import list)", '../../config/resolve': 'loads the registries to list their files', '../../loaders/registry': 'same' },
  'deploy/web_train/page.ts': { '@tensorflow/tfjs-backend-webgpu': 'browser backends, loaded in the page only (in Node they would register themselves)', '@tensorflow/tfjs-backend-webgl': 'same' },
  'backends/webgpu_kernels/program.ts': { '../index': 'webgpuVsCpu: a helper of other modules\' self-tests', '../webgpu_errors': 'same' },
};

function layerOf(file: string): number {
  const top = file.includes('/') ? file.split('/')[0] : 'commands';
  const i = LAYERS.findIndex((l) => l.includes(top));
  assert.ok(i >= 0, `${file}: folder ${top} has no layer in test/layers.test.ts`);
  return i;
}

function productFiles(): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(ROOT, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        if (!rel && !LAYERS.flat().includes(e.name)) continue; // test/, bench/, node_modules/, dist/, ...
        walk(r);
      } else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(r);
    }
  };
  walk('');
  return out.sort();
}

function resolveLocal(from: string, spec: string): string | null {
  if (!spec.startsWith('.')) return null; // a package
  const base = path.posix.normalize(path.posix.join(path.posix.dirname(from), spec));
  for (const c of [`${base}.ts`, `${base}/index.ts`]) if (fs.existsSync(path.join(ROOT, c))) return c;
  return null;
}

interface Edge { from: string; to: string; spec: string; dynamic: boolean }

/** The module-level names (and `selfTest`) whose bodies only the self-tests reach. */
function selfTestOnlyNames(sf: ts.SourceFile): Set<string> {
  const decls = new Map<string, ts.Node>();
  for (const st of sf.statements) {
    if (ts.isVariableStatement(st)) for (const d of st.declarationList.declarations) if (ts.isIdentifier(d.name)) decls.set(d.name.text, d);
    if (ts.isFunctionDeclaration(st) && st.name) decls.set(st.name.text, st);
  }
  const exported = (n: ts.Node) => {
    const st = ts.isVariableDeclaration(n) ? n.parent.parent : n;
    return ts.canHaveModifiers(st as ts.Node) && (ts.getModifiers(st as ts.HasModifiers) ?? []).some((m) => m.kind === ts.SyntaxKind.ExportKeyword);
  };
  // Who refers to each name: the declarations whose bodies mention it, or 'outside'.
  const users = new Map<string, Set<string>>();
  const visit = (n: ts.Node, owner: string) => {
    if (ts.isIdentifier(n) && decls.has(n.text) && !(n.parent && decls.get(n.text) === n.parent)) {
      if (!users.has(n.text)) users.set(n.text, new Set());
      users.get(n.text)!.add(owner);
    }
    ts.forEachChild(n, (c) => visit(c, owner));
  };
  for (const st of sf.statements) {
    const owner = ts.isFunctionDeclaration(st) && st.name ? st.name.text
      : ts.isVariableStatement(st) && st.declarationList.declarations.length === 1 && ts.isIdentifier(st.declarationList.declarations[0].name) ? st.declarationList.declarations[0].name.text
      : '(outside)';
    visit(st, owner);
  }
  const only = new Set(['selfTest']);
  for (let changed = true; changed;) {
    changed = false;
    for (const [name, node] of decls) {
      if (only.has(name) || exported(node)) continue;
      const others = [...(users.get(name) ?? [])].filter((o) => o !== name);
      if (others.length > 0 && others.every((o) => only.has(o))) {
        only.add(name);
        changed = true;
      }
    }
  }
  return only;
}

function edgesOf(file: string): { edges: Edge[]; loads: { spec: string; selfTest: boolean }[] } {
  const sf = ts.createSourceFile(file, fs.readFileSync(path.join(ROOT, file), 'utf8'), ts.ScriptTarget.ES2022, true);
  const exempt = selfTestOnlyNames(sf);
  const edges: Edge[] = [];
  const loads: { spec: string; selfTest: boolean }[] = [];
  const topName = (n: ts.Node): string | null => {
    let cur: ts.Node = n;
    while (cur.parent && cur.parent !== sf) cur = cur.parent;
    if (ts.isFunctionDeclaration(cur) && cur.name) return cur.name.text;
    if (ts.isVariableStatement(cur) && cur.declarationList.declarations.length === 1 && ts.isIdentifier(cur.declarationList.declarations[0].name)) return cur.declarationList.declarations[0].name.text;
    return null;
  };
  const visit = (n: ts.Node) => {
    if ((ts.isImportDeclaration(n) || ts.isExportDeclaration(n)) && n.moduleSpecifier && ts.isStringLiteral(n.moduleSpecifier)) {
      const to = resolveLocal(file, n.moduleSpecifier.text);
      if (to) edges.push({ from: file, to, spec: n.moduleSpecifier.text, dynamic: false });
    }
    if (ts.isCallExpression(n) && (n.expression.kind === ts.SyntaxKind.ImportKeyword || (ts.isIdentifier(n.expression) && n.expression.text === 'require'))) {
      const arg = n.arguments[0];
      const spec = arg && ts.isStringLiteralLike(arg) ? arg.text : '*';
      const name = topName(n);
      const selfTest = name !== null && exempt.has(name);
      loads.push({ spec, selfTest });
      const to = spec === '*' ? null : resolveLocal(file, spec);
      // A listed load (below) is a reasoned exception, not a dependency of the module.
      const listed = DYNAMIC_ALLOWED[file] && (spec in DYNAMIC_ALLOWED[file] || '*' in DYNAMIC_ALLOWED[file]);
      if (to && !selfTest && !listed) edges.push({ from: file, to, spec, dynamic: true });
    }
    ts.forEachChild(n, visit);
  };
  visit(sf);
  return { edges, loads };
}

const files = productFiles().filter((f) => !FIXTURES.has(f));
const graph = new Map(files.map((f) => [f, edgesOf(f)]));

test('every product folder has a layer; no product module imports a fixture module outside its self-test', () => {
  for (const f of files) layerOf(f);
  for (const { edges } of graph.values()) for (const e of edges) assert.ok(!FIXTURES.has(e.to), `${e.from} imports ${e.to}`);
});

test('no import from a lower layer to a higher one', () => {
  const bad: string[] = [];
  for (const { edges } of graph.values()) {
    for (const e of edges) if (layerOf(e.to) > layerOf(e.from)) bad.push(`${e.from} -> ${e.to}${e.dynamic ? ' (dynamic)' : ''}`);
  }
  assert.deepEqual(bad, [], `layers, bottom first: ${LAYERS.map((l) => l.join(', ')).join(' < ')}`);
});

test('no circle among product modules', () => {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const circles: string[] = [];
  const dfs = (f: string) => {
    state.set(f, 'open');
    stack.push(f);
    for (const e of graph.get(f)?.edges ?? []) {
      if (state.get(e.to) === 'open') circles.push([...stack.slice(stack.indexOf(e.to)), e.to].join(' -> '));
      else if (!state.has(e.to)) dfs(e.to);
    }
    stack.pop();
    state.set(f, 'done');
  };
  for (const f of files) if (!state.has(f)) dfs(f);
  assert.deepEqual(circles, []);
});

test('no require() or dynamic import() outside the self-tests, except optional packages and registries by file name', () => {
  const bad: string[] = [];
  for (const [f, { loads }] of graph) {
    for (const l of loads) {
      if (l.selfTest) continue;
      const allowed = DYNAMIC_ALLOWED[f];
      if (allowed && (l.spec in allowed || '*' in allowed)) continue;
      bad.push(`${f}: ${l.spec}`);
    }
  }
  assert.deepEqual(bad, []);
});
