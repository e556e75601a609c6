// The training loop's promises: exact resume, no tensor leaks, and a NaN loss that
// stops the run while keeping the last good checkpoint.
import { resolveRun } from '../config/resolve';
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '../backends/tf';
import { fixtureConfig, tmpDir } from '../loaders/fixtures';
import { initBackend } from '../backends';
import { loadCheckpoint } from '../storage/checkpoint';
import { UserError } from '../utils/errors';
import { train } from '../engine/trainer';
import { stopAt } from './helpers/stop_at';

before(async () => {
  await initBackend('wasm');
});

/** The weights a run ended with, as saved in last/ (the returned model holds best/ after the final evaluation). */
async function weightsOf(lastDir: string) {
  return (await loadCheckpoint(lastDir)).weights;
}

// Augmentation on, so resume must also reproduce the random draws of the data pipeline.
const aug = { hflip: { p: 0.5 }, rotate: { p: 0.5, degrees: 20 }, brightness: { p: 0.5, range: 0.2 }, noise: { p: 0.5, std: 0.05 } };

for (const [label, stopAtStep] of [
  ['at an epoch boundary', 4],
  ['in the middle of an epoch', 6],
] as const) {
  test(`resume ${label} gives weights identical to an uninterrupted run`, async () => {
    const dir = tmpDir('resume');
    const over = { training: { epochs: 3, batch_size: 4, print_interval: 2, workers: 2, augmentations: aug, optimizer: { name: 'adamw', lr: 0.01, weight_decay: 0.01 } }, checkpoint: { ckpt_root: path.join(dir, 'ck'), best_metric: 'val.dice', save_every_iters: 1 } };
    const straight = await train(resolveRun(fixtureConfig(dir, { ...over, name: 'straight' })), { quiet: true });
    const cfg = fixtureConfig(dir, { ...over, name: 'split' });
    const first = await train(resolveRun(cfg), { quiet: true, ...stopAt(stopAtStep) });
    assert.ok(first.interrupted);
    assert.equal(first.step, stopAtStep);
    assert.equal((await loadCheckpoint(first.lastDir)).meta.step, stopAtStep);
    first.model.dispose();
    const resumed = await train(resolveRun(cfg), { quiet: true, resume: true });
    assert.equal(resumed.step, straight.step);
    assert.equal(resumed.epoch, 3);
    const a = await weightsOf(straight.lastDir);
    const b = await weightsOf(resumed.lastDir);
    assert.equal(a.length, b.length);
    for (let i = 0; i < a.length; i++) assert.deepEqual(b[i], a[i], `weight ${a[i].name} differs`);
    straight.model.dispose();
    resumed.model.dispose();
    fs.rmSync(dir, { recursive: true });
  });
}

test('the tensor count after step 2 equals the count after step 200', async () => {
  const dir = tmpDir('leak');
  const counts = new Map<number, number>();
  const cfg = fixtureConfig(dir, {
    data: { synthetic: { train: 8, val: 4, image_size: 24 }, size: [24, 24] },
    training: { iterations: 200, batch_size: 2, val_interval: 1, print_interval: 7, augmentations: aug, lr_schedule: { name: 'poly', warmup_iters: 5 } },
  });
  const out = await train(resolveRun(cfg), { quiet: true, onStep: (s) => counts.set(s.step, tf.memory().numTensors) });
  assert.equal(out.step, 200);
  assert.equal(counts.get(200), counts.get(2));
  out.model.dispose();
  fs.rmSync(dir, { recursive: true });
});

test('a NaN loss stops the run with a clear error and keeps the last good checkpoint', async () => {
  const dir = tmpDir('nan');
  const cfg = fixtureConfig(dir, { training: { epochs: 3 }, checkpoint: { ckpt_root: path.join(dir, 'ck'), save_every_iters: 1, best_metric: 'val.dice' } });
  await assert.rejects(
    train(resolveRun(cfg), {
      quiet: true,
      onStep: ({ step, model }) => {
        // Poison one weight after step 5 has been saved: step 6's loss is NaN.
        if (step === 5) {
          const w = model.trainableWeights[0];
          w.write(tf.fill(w.shape as number[], NaN));
        }
      },
    }),
    (e: Error) => e instanceof UserError && /loss \(or a gradient\) became NaN at epoch 2, step 6/.test(e.message) && /last good checkpoint/.test(e.message),
  );
  const ck = await loadCheckpoint(path.join(dir, 'ck', 'fixture', 'last'));
  assert.equal(ck.meta.step, 5);
  for (const w of ck.weights) assert.ok(w.values.every(Number.isFinite), `${w.name} is not finite`);
  fs.rmSync(dir, { recursive: true });
});

test('a step with a NaN weight reports NaN and leaves the trainable weights untouched, though wasm hides the NaN from the loss', async () => {
  const { getModel } = await import('../models/registry');
  const { parseConfig } = await import('../config/resolve');
  const { buildLoss } = await import('../training/losses');
  const { createOptimizer } = await import('../training/optimizers');
  const { makeTrainStep } = await import('../engine/train_step');
  const cfg = parseConfig({ model: { base: 4, depth: 2 }, data: { size: [32, 32] } });
  const model = getModel(cfg);
  const step = makeTrainStep(model, buildLoss(cfg), createOptimizer(cfg));
  const n = 2, h = 32, w = 32;
  const batch = { images: Float32Array.from({ length: n * h * w * 3 }, (_, i) => Math.sin(i)), masks: Uint8Array.from({ length: n * h * w }, (_, i) => i % 3 === 0 ? 1 : 0), n, h, w, ids: ['a', 'b'] };
  assert.ok(Number.isFinite(await step(batch)));
  const first = model.trainableWeights[0];
  first.write(tf.fill(first.shape as number[], NaN));
  // The premise: on wasm the forward pass alone gives a finite loss (ReLU maps NaN to 0).
  const lossOnly = tf.tidy(() => buildLoss(cfg)(model.apply(tf.tensor4d(batch.images, [n, h, w, 3]), { training: true }) as tf.Tensor4D,
    tf.tensor3d(Int32Array.from(batch.masks), [n, h, w], 'int32')).dataSync()[0]);
  assert.ok(Number.isFinite(lossOnly), 'premise: the loss alone hides the NaN on wasm');
  // (The forward pass itself still moves batch norm's running statistics; the run stops.)
  const trainable = () => model.trainableWeights.map((v) => v.read().dataSync() as Float32Array);
  const before = trainable();
  assert.ok(Number.isNaN(await step(batch)));
  const after = trainable();
  for (let i = 1; i < before.length; i++) assert.deepEqual(after[i], before[i], `${model.trainableWeights[i].name} changed`);
  step.dispose();
  model.dispose();
});
