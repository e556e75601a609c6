// The ONNX export, checked by ONNX itself: for every registered architecture, binary and
// multi-class, a run trained two steps (so batch-norm statistics are not the identity) is
// exported with --format onnx; onnx.checker accepts the file and ONNX Runtime (python3 with
// onnx and onnxruntime; `.ci/run` installs them) gives the TF.js model's logits within 1e-4
// and the same masks (off pixels within 2e-4 of a tie) on val images prepared as predict prepares them.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import * as tf from '../backends/tf';
import { initBackend } from '../backends';
import { train } from '../engine/trainer';
import { loadModel } from '../engine/model_io';
import { listSplit } from '../loaders/registry';
import { decodeImage } from '../pipeline/decode';
import { normaliseImage } from '../pipeline/batcher';
import { registeredModels } from '../models/registry';
import { loadConfig, parseConfig, resolveRun } from '../config/resolve';
import { exportOnnx, ONNX_FILE, ONNX_METADATA_KEY } from '../deploy/onnx_export';
import { exportModel } from '../api';
import { fixtureConfig, tmpDir } from '../loaders/fixtures';
import { ROOT } from './helpers/cli';

const RUNNER = [path.join(__dirname, 'fixtures', 'run_onnx.py'), path.join(__dirname, '..', '..', 'test', 'fixtures', 'run_onnx.py')].find((f) => fs.existsSync(f))!;
const INSTALL = 'python3 with onnx and onnxruntime is needed: pip install --index-url file:///opt/pypi/simple onnx onnxruntime (README "ONNX")';
const CONFIGS = [path.join(ROOT, 'configs'), path.join(ROOT, '..', 'configs')].find((d) => fs.existsSync(d))!;
const demoModel = (name: string) => loadConfig(path.join(CONFIGS, name === 'unet' ? 'demo.yaml' : `demo_${name}.yaml`)).model;

const dirs: string[] = [];
before(() => initBackend('wasm'));
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

test('--quantize and --web are refused with --format onnx, in one line', async () => {
  await assert.rejects(exportModel({}, { format: 'onnx', quantize: 'uint8' }), (e: Error) => /quantize uint8: not with (--)?format onnx/.test(e.message) && !e.message.includes('\n'));
  await assert.rejects(exportModel({}, { format: 'onnx', web: true }), (e: Error) => /web: not with (--)?format onnx/.test(e.message));
  await assert.rejects(exportModel({}, { format: 'tflite' as 'onnx' }), /format tflite: unknown export format/);
});

const maxDiffs: Record<string, number> = {};
after(() => console.log(`ONNX Runtime vs TF.js, max |logit difference|: ${JSON.stringify(maxDiffs)}`));

for (const name of registeredModels()) {
  for (const kind of ['binary', 'multiclass'] as const) {
    test(`${name} (${kind}): onnx.checker accepts the export; ONNX Runtime's logits equal TF.js's within 1e-4, masks identical off near-ties`, { timeout: 300_000 }, async () => {
      const dir = tmpDir(`onnx-${name}-${kind}`);
      dirs.push(dir);
      const multi = kind === 'multiclass' ? { num_classes: 4, synthetic: { kind: 'multiclass', train: 8, val: 2, image_size: 40 } } : { synthetic: { train: 8, val: 2, image_size: 40 } };
      const base = fixtureConfig(dir);
      const cfg = parseConfig({
        name: `${name}-${kind}`,
        backend: 'wasm',
        model: demoModel(name),
        data: { ...base.data, size: [32, 48], ...multi },
        // Two steps: the batch-norm moving statistics move off zero mean, unit variance.
        training: { epochs: 1, batch_size: 4, workers: 1, print_interval: 2, val_interval: 1 },
        checkpoint: { ckpt_root: base.checkpoint.ckpt_root, best_metric: kind === 'binary' ? 'val.dice' : 'val.mIoU' },
        results: { root: base.results.root },
      }, 'onnx test config');
      const run = await train(resolveRun(cfg), { quiet: true });
      run.model.dispose();
      const out = path.join(dir, 'onnx');
      await exportOnnx(resolveRun(cfg), { checkpoint: run.lastDir, output: out });

      // Inputs as predict prepares them: decoded at data.size, normalised as in training.
      const [h, w] = cfg.data.size;
      const files = (await listSplit(cfg, cfg.data.val_split)).map((p) => p.image).slice(0, 2);
      const batch = new Float32Array(files.length * h * w * 3);
      for (const [i, f] of files.entries()) batch.set(normaliseImage((await decodeImage(f, cfg.data.size)).data, cfg.data), i * h * w * 3);
      const input = path.join(dir, 'x.bin');
      const output = path.join(dir, 'y.bin');
      fs.writeFileSync(input, batch);
      const r = spawnSync('python3', [RUNNER, path.join(out, ONNX_FILE), input, [files.length, h, w, 3].join(','), output], { encoding: 'utf8' });
      assert.equal(r.status, 0, `${/No module named/.test(r.stderr) ? `${INSTALL}\n` : ''}${r.stderr.split('\n').slice(-4).join('\n')}`);
      const info = JSON.parse(r.stdout);
      assert.ok(info.opset >= 17);
      assert.deepEqual(info.input, ['batch', h, w, 3]);
      const meta = JSON.parse(info.metadata[ONNX_METADATA_KEY]);
      assert.deepEqual(meta.input.size, [h, w]);
      assert.deepEqual(meta.input.mean, cfg.data.mean);
      assert.equal(meta.input.normalize, cfg.data.normalize);

      const model = await loadModel(resolveRun(cfg), run.lastDir);
      const x = tf.tensor4d(batch, [files.length, h, w, 3]);
      const want = model.predict(x) as tf.Tensor4D;
      const buf = fs.readFileSync(output);
      const got = tf.tensor4d(new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4), want.shape);
      const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(want, got))).dataSync()[0]);
      maxDiffs[`${name}/${kind}`] = diff;
      assert.ok(diff < 1e-4, `max |logit difference| ${diff}`);
      const decide = (t: tf.Tensor4D) => tf.tidy(() => (t.shape[3] === 1 ? tf.greater(tf.sigmoid(t), cfg.training.threshold).squeeze([3]) : tf.argMax(t, 3)).dataSync());
      // A pixel whose TF.js decision margin (logit to the threshold's, or top class to the
      // runner-up) is under 2e-4 may fall either way within the 1e-4 tolerance: after two
      // steps a few such near-ties exist. Every other pixel must decide the same.
      const margin = tf.tidy(() => (want.shape[3] === 1
        ? tf.abs(tf.sub(want, Math.log(cfg.training.threshold / (1 - cfg.training.threshold)))).squeeze([3])
        : (() => { const top = tf.topk(want, 2); return tf.sub(top.values.slice([0, 0, 0, 0], [-1, -1, -1, 1]), top.values.slice([0, 0, 0, 1], [-1, -1, -1, 1])).squeeze([3]); })()).dataSync());
      const [a, b] = [decide(got), decide(want)];
      let ties = 0;
      for (let i = 0; i < a.length; i++) {
        if (margin[i] < 2e-4) ties++;
        else assert.equal(a[i], b[i], `pixel ${i}: ONNX Runtime decides ${a[i]}, TF.js ${b[i]} (margin ${margin[i]})`);
      }
      assert.ok(ties <= a.length / 100, `${ties} of ${a.length} pixels within 2e-4 of a tie`);
      assert.equal(want.shape[3], kind === 'binary' ? 1 : 4);
      tf.dispose([x, want, got]);
      model.dispose();
    });
  }
}
