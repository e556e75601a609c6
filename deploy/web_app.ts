// The static page written beside an export by `npx export --web`: deploy/web/ (html +
// plain JS, no build step) plus tfjs's prebuilt browser bundles copied from
// node_modules, so the folder works offline from any static server.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { runIfMain, SelfTest } from '../utils/self_test';
import { packageInfo, packageRoot } from '../utils/package_root';

export { packageInfo, packageRoot }; // where they were first: callers import them from here

/** A file of an installed package, or null when the package is absent (optional bundles). */
function resolveIn(pkg: string, file: string): string | null {
  try {
    return path.join(path.dirname(require.resolve(`${pkg}/package.json`)), file);
  } catch {
    return null;
  }
}

/**
 * The tfjs browser bundles, in load order: core, layers and the backends, each extending
 * the global `tf` (the umbrella's tf.min.js would need @tensorflow/tfjs installed).
 */
export function browserBundles(): { name: string; file: string }[] {
  const out: { name: string; file: string }[] = [];
  const add = (pkg: string, rel: string, required: boolean) => {
    const file = resolveIn(pkg, rel);
    if (file && fs.existsSync(file)) out.push({ name: path.basename(rel), file });
    else if (required) throw new Error(`${pkg}/${rel} not found: reinstall with npm install`);
  };
  add('@tensorflow/tfjs-core', 'dist/tf-core.min.js', true);
  add('@tensorflow/tfjs-layers', 'dist/tf-layers.min.js', true);
  add('@tensorflow/tfjs-backend-cpu', 'dist/tf-backend-cpu.min.js', true);
  add('@tensorflow/tfjs-backend-webgl', 'dist/tf-backend-webgl.min.js', true);
  add('@tensorflow/tfjs-backend-wasm', 'dist/tf-backend-wasm.min.js', true);
  for (const w of ['tfjs-backend-wasm.wasm', 'tfjs-backend-wasm-simd.wasm', 'tfjs-backend-wasm-threaded-simd.wasm']) add('@tensorflow/tfjs-backend-wasm', `dist/${w}`, true);
  add('@tensorflow/tfjs-backend-webgpu', 'dist/tf-backend-webgpu.min.js', false); // not a dependency: used when installed
  return out;
}

/** index.html (with script tags for the bundles present), app.js and the bundles. */
export function webAppFiles(): { name: string; data: Buffer }[] {
  const web = path.join(packageRoot(), 'deploy', 'web');
  const bundles = browserBundles();
  const scripts = bundles.filter((b) => b.name.endsWith('.js')).map((b) => `<script src="${b.name}"></script>`).join('\n');
  const html = fs.readFileSync(path.join(web, 'index.html'), 'utf8').replace('<!-- tfjs bundles -->', scripts);
  return [
    { name: 'index.html', data: Buffer.from(html) },
    { name: 'app.js', data: fs.readFileSync(path.join(web, 'app.js')) },
    ...bundles.map((b) => ({ name: b.name, data: fs.readFileSync(b.file) })),
  ];
}

export const selfTest: SelfTest = {
  'the page, its script and the tfjs bundles are found; the page loads tfjs before the app'() {
    const files = webAppFiles();
    const names = files.map((f) => f.name);
    for (const n of ['index.html', 'app.js', 'tf-core.min.js', 'tf-layers.min.js', 'tf-backend-webgl.min.js', 'tf-backend-wasm.min.js', 'tfjs-backend-wasm-simd.wasm']) assert.ok(names.includes(n), n);
    const html = files[0].data.toString();
    const at = (f: string) => html.indexOf(`src="${f}"`);
    assert.ok(at('tf-core.min.js') >= 0 && at('tf-core.min.js') < at('tf-layers.min.js') && at('tf-layers.min.js') < at('app.js'), 'core, then layers, app.js last');
    assert.equal(packageInfo().name, 'tfjs-semseg');
  },
};

runIfMain(module, selfTest);
