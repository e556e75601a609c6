// ImageNet-pretrained weights for the mobilenet_v2 encoder (`model.encoder_weights: imagenet`,
// its entry's `pretrained.imagenet`).
// Nothing can be downloaded where this project trains (npm's registry only), so the weights
// come from an npm package that carries them: nsfwjs (MIT) ships Keras's MobileNetV2
// (width 1.0) as a tfjs layers model, 8-bit quantised; this package ships that model's
// two files (weights/mobilenet_v2_imagenet/, with nsfwjs's licence) rather than depending
// on nsfwjs's 41 MB. Its layers up to block_10 are
// frozen there, i.e. Keras's ImageNet weights; block_11 on were fine-tuned (from those
// weights) for nsfwjs's 5-class image classifier. Its classifier head is not used.
// Keras's MobileNetV2 has the same blocks as torchvision's, which models/encoders/mobilenet_v2.ts
// follows; only the names differ (Keras `block_k` is torchvision's features[k + 1]).
import * as tf from '../../backends/tf';
import assert from 'node:assert/strict';
import { readPackageFile } from '../../utils/package_files';
import type { NamedTensor } from '../../storage/format';
import { runIfMain, SelfTest } from '../../utils/self_test';

/** This project's weight name for a Keras MobileNetV2 weight name; null for the parts not used (last 1x1 conv, head). */
export function kerasToEncoderName(keras: string, prefix: string): string | null {
  const [layer, weight] = keras.split('/');
  if (layer === 'Conv1') return `${prefix}_stem_conv/${weight}`;
  if (layer === 'bn_Conv1') return `${prefix}_stem_bn/${weight}`;
  // Keras `expanded_conv` is block 0; `block_k` is k. Here they are block1 .. block17.
  const m = /^(?:expanded_conv|block_(\d+))_(expand|depthwise|project)(_BN)?$/.exec(layer);
  if (!m) return null;
  const block = `${prefix}_block${Number(m[1] ?? 0) + 1}`;
  const part = m[2] === 'depthwise' ? 'dw' : m[2];
  // Batch norms are `<part>_bn`; the expand conv is `expand_conv` (convBnAct), the others bare.
  const suffix = m[3] ? '_bn' : m[2] === 'expand' ? '_conv' : '';
  return `${block}_${part}${suffix}/${weight}`;
}

/** The weights' folder inside the package (and beside the training page). */
export const IMAGENET_DIR = 'weights/mobilenet_v2_imagenet';

interface KerasModelFiles { modelTopology: object; weightsManifest: { weights: tf.io.WeightsManifestEntry[] }[] }

/** nsfwjs's Keras MobileNetV2 as tfjs model artifacts (topology, weight specs, weight bytes). */
export async function kerasMobileNetV2Artifacts(): Promise<tf.io.ModelArtifacts & { weightSpecs: tf.io.WeightsManifestEntry[]; weightData: ArrayBuffer }> {
  // Read through the package-file seam: from the package in Node, fetched beside the training page in a browser.
  const read = (f: string) => readPackageFile(`${IMAGENET_DIR}/${f}`, "model.encoder_weights: 'imagenet'");
  const json = JSON.parse(new TextDecoder().decode(await read('model.json'))) as KerasModelFiles;
  const all = await read('weights.bin');
  return {
    modelTopology: json.modelTopology,
    weightSpecs: json.weightsManifest.flatMap((g) => g.weights),
    weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength) as ArrayBuffer,
  };
}

/** ImageNet weights named for the mobilenet_v2 encoder built with `prefix` (the models use 'enc'). */
export async function imagenetMobileNetV2(prefix = 'enc'): Promise<NamedTensor[]> {
  const { weightData, weightSpecs } = await kerasMobileNetV2Artifacts();
  const out: NamedTensor[] = [];
  for (const [name, t] of Object.entries(tf.io.decodeWeights(weightData, weightSpecs))) {
    const ours = kerasToEncoderName(name, prefix);
    if (ours) out.push({ name: ours, shape: t.shape, values: t.dataSync() as Float32Array });
    t.dispose();
  }
  return out;
}

export const selfTest: SelfTest = {
  'Keras names map onto the encoder: stem, first block, later blocks; head dropped'() {
    assert.equal(kerasToEncoderName('Conv1/kernel', 'enc'), 'enc_stem_conv/kernel');
    assert.equal(kerasToEncoderName('bn_Conv1/gamma', 'enc'), 'enc_stem_bn/gamma');
    assert.equal(kerasToEncoderName('expanded_conv_depthwise/depthwise_kernel', 'enc'), 'enc_block1_dw/depthwise_kernel');
    assert.equal(kerasToEncoderName('expanded_conv_project_BN/moving_mean', 'enc'), 'enc_block1_project_bn/moving_mean');
    assert.equal(kerasToEncoderName('block_1_expand/kernel', 'enc'), 'enc_block2_expand_conv/kernel');
    assert.equal(kerasToEncoderName('block_1_expand_BN/beta', 'enc'), 'enc_block2_expand_bn/beta');
    assert.equal(kerasToEncoderName('block_16_depthwise_BN/moving_variance', 'enc'), 'enc_block17_dw_bn/moving_variance');
    assert.equal(kerasToEncoderName('block_16_project/kernel', 'enc'), 'enc_block17_project/kernel');
    for (const n of ['Conv_1/kernel', 'Conv_1_bn/gamma', 'dense_1/kernel']) assert.equal(kerasToEncoderName(n, 'enc'), null);
  },
  async 'every weight of the built encoder gets a pretrained value of its shape'() {
    const { mobilenetV2 } = await import('./mobilenet_v2'); // lazily: mobilenet_v2.ts imports this file
    const input = tf.input({ shape: [null, null, 3] });
    const m = tf.model({ inputs: input, outputs: mobilenetV2.build(input, { outputStride: 16, seed: 0, prefix: 'enc' }).maps });
    const byName = new Map((await imagenetMobileNetV2('enc')).map((w) => [w.name, w]));
    for (const v of m.weights) {
      const w = byName.get(v.originalName ?? v.name);
      assert.ok(w, `no pretrained value for ${v.originalName}`);
      assert.deepEqual(w.shape, v.shape, v.originalName);
    }
    assert.equal(byName.size, m.weights.length);
    m.dispose();
  },
};

runIfMain(module, selfTest);
