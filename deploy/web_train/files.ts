// The files of the browser training page, as `npx tfjs-semseg web-train --output DIR` writes
// them: index.html, the bundled script (built by `npm run build`, see bundle.ts) and
// tfjs-backend-wasm's binaries, and the package's data files the page fetches (the ImageNet
// weights of `model.encoder_weights: imagenet`, with their licence), so the folder works
// offline from any static server.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../../utils/errors';
import { packageRoot } from '../../utils/package_root';
import { runIfMain, SelfTest } from '../../utils/self_test';
import { browserBundles } from '../web_app';
import { IMAGENET_DIR } from '../../models/encoders/imagenet';

/** The built script's name: dist/web_train/<this> (bundle.ts writes it), and in the page folder. */
export const BUNDLE_NAME = 'web_train.bundle.js';

export function webTrainFiles(bundle = path.join(packageRoot(), 'dist', 'web_train', BUNDLE_NAME)): { name: string; data: Buffer }[] {
  if (!fs.existsSync(bundle)) throw new UserError(`${bundle} not found: the page's script is built by \`npm run build\` (esbuild); rebuild the package`);
  return [
    { name: 'index.html', data: fs.readFileSync(path.join(packageRoot(), 'deploy', 'web_train', 'index.html')) },
    { name: BUNDLE_NAME, data: fs.readFileSync(bundle) },
    // The wasm backend finds its binaries beside the page (setWasmPaths('./')).
    ...browserBundles().filter((b) => b.name.endsWith('.wasm')).map((b) => ({ name: b.name, data: fs.readFileSync(b.file) })),
    // At the same paths as in the package: utils/package_files.ts's browser side fetches them there.
    ...fs.readdirSync(path.join(packageRoot(), IMAGENET_DIR)).sort().map((f) => ({ name: `${IMAGENET_DIR}/${f}`, data: fs.readFileSync(path.join(packageRoot(), IMAGENET_DIR, f)) })),
  ];
}

/**
 * Writes the page into `dir`: a new or empty folder, or an earlier page (replaced);
 * anything else is refused, so a mistyped --output never overwrites other files.
 */
export function writeWebTrain(dir: string, bundle?: string): { name: string; bytes: number }[] {
  const files = webTrainFiles(bundle);
  const ours = new Set(files.map((f) => f.name.split('/')[0])); // weights/ is ours as a whole
  if (fs.existsSync(dir)) {
    if (!fs.statSync(dir).isDirectory()) throw new UserError(`--output ${dir}: exists and is a file; expected a folder for the page`);
    const other = fs.readdirSync(dir).filter((n) => !ours.has(n));
    if (other.length) throw new UserError(`--output ${dir}: holds '${other[0]}'${other.length > 1 ? ` (+${other.length - 1} more)` : ''}, which the page did not write; choose an empty or new folder`);
  }
  fs.mkdirSync(dir, { recursive: true });
  for (const f of files) {
    fs.mkdirSync(path.dirname(path.join(dir, f.name)), { recursive: true });
    fs.writeFileSync(path.join(dir, f.name), f.data);
  }
  return files.map((f) => ({ name: f.name, bytes: f.data.length }));
}

export const selfTest: SelfTest = {
  'writes the page into a new folder, again over itself, and refuses a folder with other files'() {
    const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'wt-'));
    const bundle = path.join(dir, 'fake.js');
    fs.writeFileSync(bundle, '/* bundle */');
    const out = path.join(dir, 'page');
    const names = writeWebTrain(out, bundle).map((f) => f.name);
    for (const n of ['index.html', BUNDLE_NAME, 'tfjs-backend-wasm-simd.wasm', `${IMAGENET_DIR}/weights.bin`, `${IMAGENET_DIR}/LICENSE`]) assert.ok(names.includes(n), n);
    assert.ok(fs.existsSync(path.join(out, IMAGENET_DIR, 'model.json')));
    assert.match(fs.readFileSync(path.join(out, 'index.html'), 'utf8'), new RegExp(`src="${BUNDLE_NAME}"`));
    writeWebTrain(out, bundle);
    fs.writeFileSync(path.join(out, 'notes.txt'), 'mine');
    assert.throws(() => writeWebTrain(out, bundle), (e: Error) => e instanceof UserError && /holds 'notes\.txt', which the page did not write/.test(e.message));
    assert.throws(() => webTrainFiles(path.join(dir, 'none.js')), /not found: the page's script is built by `npm run build`/);
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
