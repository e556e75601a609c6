// `model.frozen_stages`: training leaves the frozen encoder stages' weights exactly as they
// started and moves the rest; their batch norms still track batch statistics.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '../backends/tf';
import { initBackend } from '../backends';
import { makeTrainStep } from '../engine/train_step';
import { getModel } from '../models/registry';
import { parseConfig } from '../config/resolve';
import { buildLoss } from '../training/losses';
import { createOptimizer } from '../training/optimizers';
import { mulberry32 } from '../utils/rng';

before(async () => {
  await initBackend('wasm');
});

const snapshot = (m: tf.LayersModel) => new Map(m.weights.map((w) => [w.originalName, w.read().dataSync().slice()]));
const same = (a: Float32Array | Int32Array | Uint8Array, b: Float32Array | Int32Array | Uint8Array) => a.every((v, i) => v === b[i]);

async function trainThreeSteps(model: Record<string, unknown>) {
  const cfg = parseConfig({ model, data: { num_classes: 3 }, training: { optimizer: { name: 'adam', lr: 0.01 } } });
  const net = getModel(cfg);
  const before = snapshot(net);
  const step = makeTrainStep(net, buildLoss(cfg), createOptimizer(cfg));
  const rng = mulberry32(5);
  const n = 2, h = 32, w = 32;
  const images = Float32Array.from({ length: n * h * w * 3 }, () => rng() * 2 - 1);
  const masks = new Uint8Array(n * h * w).map((_, i) => Math.floor(rng() * 3));
  for (let i = 0; i < 3; i++) assert.ok(Number.isFinite(await step({ images, masks, n, h, w, ids: ['a', 'b'] })));
  const after = snapshot(net);
  step.dispose();
  net.dispose();
  return { before, after, moved: (name: string) => !same(before.get(name)!, after.get(name)!) };
}

test('DeepLabV3+ with frozen_stages 2 never moves the stem and blocks 1-3, and trains the rest', async () => {
  const { before, moved } = await trainThreeSteps({ name: 'deeplabv3plus', aspp_channels: 16, frozen_stages: 2 });
  const frozen = /^enc_(stem|block[123])_/;
  const learned = [...before.keys()].filter((n) => !/moving_/.test(n));
  const stuck = learned.filter((n) => frozen.test(n));
  assert.ok(stuck.length >= 20, `${stuck.length} frozen weights`);
  for (const n of stuck) assert.ok(!moved(n), `${n} moved`);
  for (const n of ['enc_block4_expand_conv/kernel', 'enc_block17_project/kernel', 'aspp_b0_conv/kernel', 'head/kernel']) assert.ok(moved(n), `${n} did not move`);
  // Batch statistics still normalise the frozen layers, and their running averages follow them.
  assert.ok(moved('enc_stem_bn/moving_mean'));
});

test('FPN with frozen_stages 5 trains only its decoder; a U-Net has no frozen_stages', async () => {
  const { before, moved } = await trainThreeSteps({ name: 'fpn', encoder: 'resnet18', frozen_stages: 5 });
  const learned = [...before.keys()].filter((n) => !/moving_/.test(n));
  for (const n of learned.filter((n) => n.startsWith('enc_'))) assert.ok(!moved(n), `${n} moved`);
  assert.ok(learned.filter((n) => !n.startsWith('enc_')).some(moved));
  assert.throws(() => parseConfig({ model: { name: 'unet', frozen_stages: 1 } }), /model.*frozen_stages/);
});
