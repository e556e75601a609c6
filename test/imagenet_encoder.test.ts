// `model.encoder_weights: imagenet`: the renamed Keras MobileNetV2 weights make this
// project's mobilenet_v2 encoder compute what Keras's MobileNetV2 computes, and a
// DeepLabV3+ run starts from them (encoder loaded, decoder from its initialisation).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, test } from 'node:test';
import * as tf from '../backends/tf';
import { initBackend } from '../backends';
import { applyMatchingWeights } from '../storage/checkpoint';
import { startState } from '../engine/resume';
import { runDirs } from '../engine/run_dirs';
import { imagenetMobileNetV2, kerasMobileNetV2Artifacts } from '../models/encoders/imagenet';
import { mobilenetV2 } from '../models/encoders/mobilenet_v2';
import { getModel } from '../models/registry';
import { createOptimizer } from '../training/optimizers';
import { fixtureConfig } from '../loaders/fixtures';
import { parseConfig, resolveRun } from '../config/resolve';
import { tmpDir } from './helpers/cli';

before(async () => {
  await initBackend('wasm');
});
const dirs: string[] = [];
after(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

/** nsfwjs's Keras MobileNetV2 as a tfjs layers model, cut at the layers our encoder taps. */
async function kerasTaps(): Promise<tf.LayersModel> {
  const artifacts = await kerasMobileNetV2Artifacts();
  // BN epsilon as here (1e-5; Keras 1e-3): the comparison then checks the mapping alone.
  const topology = JSON.parse(JSON.stringify(artifacts.modelTopology));
  for (const l of topology.model_config.config.layers) if (l.class_name === 'BatchNormalization') l.config.epsilon = 1e-5;
  const full = await tf.loadLayersModel(tf.io.fromMemory({ ...artifacts, modelTopology: topology }));
  const taps = ['expanded_conv_project_BN', 'block_2_add', 'block_5_add', 'block_12_add', 'block_16_project_BN'];
  return tf.model({ inputs: full.inputs, outputs: taps.map((n) => full.getLayer(n).output as tf.SymbolicTensor) });
}

test('the encoder with imagenet weights computes what Keras MobileNetV2 computes, at all five taps', async () => {
  const keras = await kerasTaps();
  const input = tf.input({ shape: [null, null, 3] });
  const ours = tf.model({ inputs: input, outputs: mobilenetV2.build(input, { outputStride: 32, seed: 0, prefix: 'enc' }).maps });
  const r = applyMatchingWeights(ours, await imagenetMobileNetV2('enc'), 'imagenet');
  assert.deepEqual(r.kept, []);
  // A smooth image in Keras's [-1, 1] input range, at its fixed 224x224 (even sizes: 'same'
  // padding equals Keras's explicit pads).
  const x = tf.tidy(() => tf.image.resizeBilinear(tf.randomUniform([1, 8, 8, 3], -1, 1, 'float32', 3), [224, 224]) as tf.Tensor4D);
  const a = keras.predict(x) as tf.Tensor[];
  const b = ours.predict(x) as tf.Tensor[];
  for (let i = 0; i < 5; i++) {
    assert.deepEqual(b[i].shape, a[i].shape, `tap ${i}`);
    const rel = tf.tidy(() => tf.norm(tf.sub(a[i], b[i])).div(tf.norm(a[i])).dataSync()[0]);
    assert.ok(rel < 1e-3, `tap ${i}: relative error ${rel}`);
  }
  // Not a coincidence of near-zero maps: a randomly initialised encoder is far off.
  const fresh = tf.model({ inputs: input, outputs: mobilenetV2.build(input, { outputStride: 32, seed: 0, prefix: 'fresh' }).maps });
  const c = fresh.predict(x) as tf.Tensor[];
  const far = tf.tidy(() => tf.norm(tf.sub(a[4], c[4])).div(tf.norm(a[4])).dataSync()[0]);
  assert.ok(far > 0.5, `random encoder relative error ${far}`);
  tf.dispose([x, ...a, ...b, ...c]);
  [keras, ours, fresh].forEach((m) => m.dispose());
});

test('DeepLabV3+ and FPN runs with encoder_weights: imagenet start from them; a U-Net gets one clear line', async () => {
  const dir = tmpDir('imagenet');
  dirs.push(dir);
  const pretrained = new Map((await imagenetMobileNetV2('enc')).map((w) => [w.name, w]));
  const models = [
    { name: 'deeplabv3plus', encoder: 'mobilenet_v2', aspp_channels: 16, encoder_weights: 'imagenet' },
    { name: 'fpn', encoder: 'mobilenet_v2', encoder_weights: 'imagenet' },
  ];
  for (const m of models) {
    const cfg = { ...fixtureConfig(dir), name: m.name, model: parseConfig({ model: m }).model };
    const model = getModel(cfg);
    const opt = createOptimizer(cfg);
    const lines: string[] = [];
    await startState(resolveRun(cfg), model, opt, runDirs(cfg), {}, { stepsPerEpoch: 4, trainPairs: 16 }, (l) => lines.push(l));
    const encoderWeights = model.weights.filter((v) => (v.originalName ?? v.name).startsWith('enc_'));
    assert.equal(encoderWeights.length, pretrained.size, m.name);
    for (const v of encoderWeights.slice(0, 40)) assert.deepEqual(v.read().dataSync(), pretrained.get(v.originalName ?? v.name)!.values, `${m.name} ${v.originalName}`);
    assert.match(lines[0], new RegExp(`^model\\.encoder_weights imagenet: loaded ${pretrained.size} of ${model.weights.length} weights \\(\\d+ values\\); \\d+ layers start from their initialisation`));
    model.dispose();
    opt.dispose();
  }
  const unet = fixtureConfig(dir, { name: 'unet', model: { encoder_weights: 'imagenet' } });
  const m2 = getModel(unet);
  const opt = createOptimizer(unet);
  await assert.rejects(startState(resolveRun(unet), m2, opt, runDirs(unet), {}, { stepsPerEpoch: 4, trainPairs: 16 }, () => {}), /^UserError: model\.encoder_weights: 'imagenet' weights exist for encoder mobilenet_v2 only, not for this model \(it has no model\.encoder\)/);
  m2.dispose();
  opt.dispose();
});
