// Builds the browser training page's script (`npm run build` runs buildWebTrain after tsc):
// the project's own modules (config, registries, train step, losses, optimizers, schedules,
// metrics, the batcher and its paired augmentation, the evaluator) bundled by esbuild for
// the browser, not rewritten. What differs in the page is swapped at bundle time, each for
// a reason:
//   - pipeline/decode.ts -> browser_decode.ts: files come from the browser, not a path;
//   - utils/package_files.ts -> browser_package_files.ts: the package's data files (ImageNet
//     weights) are fetched from beside the page, where web-train copies them;
//   - utils/package_root.ts -> the name and version, read now (the export's metadata);
//   - registry_entries.ts -> a static import of every registry entry file, listed now from
//     the same folders Node reads at run time (utils/folder_registry.ts);
//   - node:assert, node:path, node:async_hooks, Buffer -> small shims (shims/);
//   - other Node-only modules (fs, os, worker_threads, sharp, ...) -> stubs that throw when
//     called; `nodeOnlyImporters` in the result lists who still imports one, none of them on
//     the page's path (test/web_train.test.ts trains, validates and exports through them).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as esbuild from 'esbuild';
import { packageInfo, packageRoot } from '../../utils/package_root';
import { runIfMain, SelfTest } from '../../utils/self_test';
import { registryEntryFiles, sourceOf } from './registry_entries';

/**
 * Where the built script goes: dist/web_train/ (shipped with dist/), outside the module
 * folders, whose every .js file is a module with self-tests (test/self_tests.test.ts).
 */
export const BUNDLE_FILE = path.join(packageRoot(), 'dist', 'web_train', 'web_train.bundle.js');

const SHIMS: Record<string, string> = { 'node:assert/strict': 'assert', 'node:assert': 'assert', assert: 'assert', 'node:path': 'path', path: 'path', 'node:async_hooks': 'async_hooks' };
const NODE_ONLY = /^(node:.*|fs|os|crypto|worker_threads|zlib|url|util|child_process|sharp|webgpu|@tensorflow\/tfjs-node(-gpu)?|nsfwjs(\/.*)?|onnxruntime-node)$/;

export interface BundleResult {
  file: string;
  bytes: number;
  /** Project modules in the bundle that import a Node-only module (stubbed), with what they import. */
  nodeOnlyImporters: Record<string, string[]>;
  /** Registry entry files imported. */
  entries: number;
}

export async function buildWebTrain(outfile = BUNDLE_FILE): Promise<BundleResult> {
  const root = packageRoot();
  const src = (rel: string) => path.join(root, rel);
  const here = src('deploy/web_train');
  const entries = registryEntryFiles().map((f) => sourceOf(f, root));
  const pkg = packageInfo();
  const nodeOnlyImporters: Record<string, Set<string>> = {};
  const plugin: esbuild.Plugin = {
    name: 'semseg-browser',
    setup(b) {
      b.onResolve({ filter: /.*/ }, (a) => {
        if (SHIMS[a.path]) return { path: path.join(here, 'shims', `${SHIMS[a.path]}.ts`) };
        if (NODE_ONLY.test(a.path)) {
          const who = path.relative(root, a.importer);
          (nodeOnlyImporters[who] ??= new Set()).add(a.path);
          return { path: a.path, namespace: 'node-only' };
        }
        if (!a.path.startsWith('.')) return undefined;
        const target = path.resolve(a.resolveDir, a.path);
        if (target === src('pipeline/decode')) return { path: path.join(here, 'browser_decode.ts') };
        if (target === src('utils/package_files')) return { path: path.join(here, 'browser_package_files.ts') };
        if (target === src('utils/package_root')) return { path: 'package_root', namespace: 'generated' };
        return undefined;
      });
      // CommonJS, so that named imports of a stub resolve at run time to more stubs.
      b.onLoad({ filter: /.*/, namespace: 'node-only' }, (a) => ({
        contents: `module.exports = require(${JSON.stringify(path.join(here, 'shims', 'node_stub.ts'))}).nodeOnly(${JSON.stringify(a.path)});`,
        loader: 'js',
        resolveDir: here,
      }));
      b.onLoad({ filter: /.*/, namespace: 'generated' }, () => ({
        contents: `export const packageInfo = () => (${JSON.stringify({ name: pkg.name, version: pkg.version })});\nexport const packageRoot = () => '/';`,
        loader: 'ts',
      }));
      b.onLoad({ filter: /registry_entries\.ts$/ }, () => ({
        contents: entries.map((f) => `import ${JSON.stringify(f)};`).join('\n'),
        loader: 'ts',
        resolveDir: here,
      }));
    },
  };
  const res = await esbuild.build({
    entryPoints: [path.join(here, 'page.ts')],
    bundle: true,
    platform: 'browser',
    format: 'iife',
    target: 'es2022',
    minify: true,
    legalComments: 'none',
    outfile,
    logLevel: 'silent',
    // Read at load time by the modules (a registry's folder). `module` (runIfMain's) comes from
    // shims/module.ts: esbuild 0.28's build hangs with it in `define`.
    define: { __dirname: '"/"', __filename: '"/web_train.js"', 'process.env.SEMSEG_DEBUG': 'undefined' },
    // tfjs's ES builds (its packages' main is the Node build, which would bring platform_node).
    mainFields: ['browser', 'module', 'main'],
    banner: { js: 'globalThis.__semsegBundle = true; globalThis.__semsegStaticRegistries = true;' },
    inject: [path.join(here, 'shims', 'buffer.ts'), path.join(here, 'shims', 'module.ts')],
    plugins: [plugin],
  });
  assert.equal(res.errors.length, 0);
  return {
    file: outfile,
    bytes: fs.statSync(outfile).size,
    nodeOnlyImporters: Object.fromEntries(Object.entries(nodeOnlyImporters).map(([k, v]) => [k, [...v].sort()]).sort()),
    entries: entries.length,
  };
}

/** The built script, building it first when absent (a checkout built with tsc alone). */
export async function webTrainBundle(): Promise<string> {
  if (!fs.existsSync(BUNDLE_FILE)) await buildWebTrain();
  return BUNDLE_FILE;
}

export const selfTest: SelfTest = {
  async 'bundles the page with every registry entry and no unresolved Node module'() {
    const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'webtrain-')), 'b.js');
    const r = await buildWebTrain(out);
    assert.ok(r.entries >= 20, `${r.entries} entries`);
    assert.ok(r.bytes > 100_000, `${r.bytes} bytes`);
    // The training path itself imports nothing Node-only (what does is stubbed, and not called).
    for (const m of ['engine/train_step.ts', 'pipeline/transforms.ts', 'pipeline/batcher.ts', 'pipeline/sample.ts', 'pipeline/mask_values.ts', 'training/losses.ts', 'training/metrics.ts', 'engine/inference.ts', 'deploy/web_train/page.ts', 'deploy/web_train/data.ts', 'deploy/web_train/browser_decode.ts', 'deploy/web_train/browser_package_files.ts', 'deploy/web_train/browser_store.ts', 'models/encoders/imagenet.ts']) {
      assert.equal(r.nodeOnlyImporters[m], undefined, `${m} imports ${r.nodeOnlyImporters[m]}`);
    }
    fs.rmSync(path.dirname(out), { recursive: true });
  },
};

runIfMain(module, selfTest);
