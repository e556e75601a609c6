// `npx predict` and `npx evaluate` on an ONNX export run it on ONNX Runtime (onnxruntime-node,
// a devDependency here) and must give what they give on the TF.js export of the same
// checkpoint: the same mask files, pixel for pixel, and the same metrics (within 1e-4);
// binary (threshold) and multi-class with flip TTA (argmax). Without onnxruntime-node an
// .onnx model is one line saying how to install it, and TF.js models never load it.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { initBackend } from '../backends';
import { train } from '../engine/trainer';
import { listSplit } from '../loaders/registry';
import { parseConfig, resolveRun } from '../config/resolve';
import { exportModel } from '../deploy/export_model';
import { exportOnnx, ONNX_FILE } from '../deploy/onnx_export';
import { assertOk, assertOneLineError, killLeftovers, RunResult, show, start, tinyConfig, tmpDir, writeConfig } from './helpers/cli';
import { noOnnxRuntimeEnv } from './helpers/no_onnxruntime';

const dirs: string[] = [];
before(() => initBackend('wasm'));
after(() => {
  killLeftovers();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

const cli = (cmd: 'predict' | 'evaluate', args: string[], env?: NodeJS.ProcessEnv): Promise<RunResult> => start(cmd, args, { env }).done;

/** A tiny run trained to confidence, its TF.js and ONNX exports, and a folder of its val images. */
async function fixture(kind: 'binary' | 'multiclass') {
  const dir = tmpDir(`ort-${kind}`);
  dirs.push(dir);
  const raw = tinyConfig(dir, {
    name: `ort-${kind}`,
    // Enough steps at a high rate that few pixels sit near a decision boundary.
    training: { epochs: 3, batch_size: 4, workers: 1, print_interval: 2, optimizer: { name: 'adam', lr: 0.01 } },
    ...(kind === 'multiclass'
      ? { data: { name: 'synthetic', root: path.join(dir, 'data'), size: [32, 32], num_classes: 4, synthetic: { kind: 'multiclass', train: 16, val: 6, image_size: 40 } }, evaluation: { tta: ['hflip'] }, checkpoint: { ckpt_root: path.join(dir, 'checkpoints'), best_metric: 'val.mIoU' } }
      : { data: { name: 'synthetic', root: path.join(dir, 'data'), size: [32, 32], synthetic: { kind: 'lesion', train: 16, val: 6, image_size: 40 } } }),
  });
  const config = writeConfig(dir, raw);
  const cfg = parseConfig(raw, 'onnx runtime test config');
  const parts = resolveRun(cfg);
  const run = await train(parts, { quiet: true });
  run.model.dispose();
  const tfjs = path.join(dir, 'tfjs');
  const onnx = path.join(dir, 'onnx');
  await exportModel(parts, { checkpoint: run.bestDir, output: tfjs });
  await exportOnnx(parts, { checkpoint: run.bestDir, output: onnx });
  const input = path.join(dir, 'in');
  fs.mkdirSync(input);
  for (const p of await listSplit(cfg, cfg.data.val_split)) fs.copyFileSync(p.image, path.join(input, path.basename(p.image)));
  return { dir, config, input, models: { tfjs: path.join(tfjs, 'model.json'), onnx: path.join(onnx, ONNX_FILE) } };
}

const pixels = async (file: string) => sharp(file).raw().toBuffer();

for (const kind of ['binary', 'multiclass'] as const) {
  describe(`${kind}: predict and evaluate on ONNX Runtime equal the TF.js export`, () => {
    let f: Awaited<ReturnType<typeof fixture>>;
    before(async () => {
      f = await fixture(kind);
    });

    test('predict: every mask, colour mask and overlay is identical, pixel for pixel', { timeout: 300_000 }, async () => {
      const outs: Record<string, string> = {};
      for (const [name, model] of Object.entries(f.models)) {
        outs[name] = path.join(f.dir, `pred-${name}`);
        const r = await cli('predict', ['--config', f.config, '--checkpoint', model, '--input', f.input, '--output', outs[name]]);
        assertOk(r);
        if (name === 'onnx') assert.match(r.stderr, /predicting 6 image\(s\) with .*model\.onnx \(ONNX Runtime [\d.]+ \(CPU, \d+ threads?\)\)/, show(r));
      }
      const files = fs.readdirSync(outs.tfjs).sort();
      assert.deepEqual(fs.readdirSync(outs.onnx).sort(), files);
      assert.equal(files.length, kind === 'binary' ? 12 : 18);
      for (const file of files) {
        const [a, b] = [await pixels(path.join(outs.tfjs, file)), await pixels(path.join(outs.onnx, file))];
        assert.equal(a.length, b.length, file);
        let differ = 0;
        for (let i = 0; i < a.length; i++) differ += a[i] !== b[i] ? 1 : 0;
        assert.equal(differ, 0, `${file}: ${differ} of ${a.length} values differ between the TF.js and the ONNX Runtime prediction`);
      }
    });

    test('evaluate: the same metrics within 1e-4, the same confusion matrix and per-image scores', { timeout: 300_000 }, async () => {
      const metrics: Record<string, any> = {};
      for (const [name, model] of Object.entries(f.models)) {
        const out = path.join(f.dir, `eval-${name}`);
        const r = await cli('evaluate', ['--config', f.config, '--checkpoint', model, '--output', out]);
        assertOk(r);
        if (name === 'onnx') assert.match(r.stderr, /evaluating .*model\.onnx \(ONNX Runtime [\d.]+ \(CPU, \d+ threads?\)\) on 6 val pairs/, show(r));
        metrics[name] = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8'));
      }
      const [a, b] = [metrics.tfjs, metrics.onnx];
      assert.deepEqual(a.tta, kind === 'binary' ? [] : ['hflip']);
      assert.deepEqual(Object.keys(b.metrics).sort(), Object.keys(a.metrics).sort());
      for (const k of Object.keys(a.metrics)) assert.ok(Math.abs(a.metrics[k] - b.metrics[k]) <= 1e-4, `${k}: TF.js ${a.metrics[k]}, ONNX Runtime ${b.metrics[k]}`);
      assert.deepEqual(b.confusion, a.confusion);
      assert.equal(b.per_image.length, 6);
      for (const [i, s] of a.per_image.entries()) assert.ok(Math.abs(s.dice - b.per_image[i].dice) <= 1e-4, `${s.id}: dice ${s.dice} vs ${b.per_image[i].dice}`);
      if (kind === 'binary') for (const [i, s] of a.threshold_sweep.entries()) assert.ok(Math.abs(s.dice - b.threshold_sweep[i].dice) <= 1e-4, `sweep at ${s.threshold}`);
    });

    if (kind === 'binary') {
      test('without onnxruntime-node an .onnx model is one line saying how to install it; TF.js models never load it', { timeout: 300_000 }, async () => {
        const env = noOnnxRuntimeEnv();
        const r = await cli('predict', ['--config', f.config, '--checkpoint', f.models.onnx, '--input', f.input, '--output', path.join(f.dir, 'pred-absent')], env);
        assertOneLineError(r, /model\.onnx: an ONNX model runs on the optional package onnxruntime-node, which is not installed; install it with: npm install onnxruntime-node --onnxruntime-node-install=skip$/);
        assert.ok(!fs.existsSync(path.join(f.dir, 'pred-absent')), 'nothing written');
        assertOk(await cli('evaluate', ['--config', f.config, '--checkpoint', f.models.tfjs, '--output', path.join(f.dir, 'eval-absent')], env));
      });

      test('an input scale the fixed-size ONNX graph cannot take is refused in one line', { timeout: 120_000 }, async () => {
        const r = await cli('evaluate', ['--config', f.config, '--checkpoint', f.models.onnx, '--set', 'evaluation.scales=[1,0.5]', '--output', path.join(f.dir, 'eval-scales')]);
        assertOneLineError(r, /evaluation\.scales \[1,0\.5\]: an ONNX model runs at its exported input size only \(32x32\)/);
      });
    }
  });
}
