// MobileNetV2 encoder (Sandler et al. 2018) as torchvision's mobilenet_v2 (width 1.0)
// builds its `features`, without the last 1x1 conv to 1280 channels (segmentation
// encoders drop it, as segmentation_models.pytorch does): a 3x3/2 stem to 32 channels
// (BN, ReLU6) and the inverted residuals of the paper's (t, c, n, s) table, from
// ../layers/mobilenet_parts. Five maps at strides 2, 4, 8, 16 and 32 (or 16): after the
// 16-, 24-, 32-, 96- and 320-channel blocks.
import * as tf from '../../backends/tf';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../utils/self_test';
import { convBnAct, convBnActFloats, convBnActParams, invertedResidual, invertedResidualFloats, invertedResidualParams } from '../layers/mobilenet_parts';
import { countTrainable, tracedActivationFloats } from '../registry';
import { imagenetMobileNetV2 } from './imagenet';
import { EncoderDefinition, EncoderOptions, Features, registerEncoder, sizeAt, T } from './index';

/** (expansion t, channels c, blocks n, first stride s) per stage, Sandler et al. 2018, Table 2. */
const STAGES: [number, number, number, number][] = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]];
/** Stages whose last block's output is a feature map (strides 2, 4, 8, 16, 32). */
const TAPS = [0, 1, 2, 4, 6];
const STEM = 32;
const CHANNELS = TAPS.map((i) => STAGES[i][1]);

/**
 * Every block (torchvision's features[1..17]) with its input width and stride. At output
 * stride 16 the 160-channel stage's first block keeps stride 1. torchvision/smp dilate
 * the later blocks instead (rate 2); here they are undilated, with a smaller receptive
 * field: tfjs 4.22 has no gradient for dilated convolutions, and the depthwise ones would
 * need their own space-to-batch path (../layers/atrous.ts covers regular convolutions).
 */
function blocks(outputStride: 16 | 32): { index: number; stage: number; cin: number; t: number; c: number; stride: number }[] {
  const out = [];
  let cin = STEM;
  let index = 1;
  for (const [stage, [t, c, n, s]] of STAGES.entries()) {
    const first = stage === 5 && outputStride === 16 ? 1 : s;
    for (let b = 0; b < n; b++) {
      out.push({ index: index++, stage, cin, t, c, stride: b === 0 ? first : 1 });
      cin = c;
    }
  }
  return out;
}

export const mobilenetV2: EncoderDefinition = registerEncoder({
  name: 'mobilenet_v2',
  channels: CHANNELS,
  // Keras's ImageNet weights, shipped in weights/mobilenet_v2_imagenet/ (imagenet.ts).
  pretrained: { imagenet: imagenetMobileNetV2 },
  build(x: T, o: EncoderOptions): Features {
    const p = o.prefix;
    x = convBnAct(x, STEM, { kernel: 3, stride: 2, act: 'relu6', name: `${p}_stem`, seed: o.seed });
    const maps: T[] = [];
    const strides: number[] = [];
    let stride = 2;
    const all = blocks(o.outputStride);
    for (const [i, b] of all.entries()) {
      // Names follow torchvision's features index: `${p}_block1` .. `${p}_block17`.
      x = invertedResidual(x, b.c, { expand: b.t, stride: b.stride, name: `${p}_block${b.index}`, seed: o.seed });
      stride *= b.stride;
      if (TAPS.includes(b.stage) && all[i + 1]?.stage !== b.stage) {
        maps.push(x);
        strides.push(stride);
      }
    }
    return { maps, strides, channels: CHANNELS };
  },
  paramCount(inChannels: number): number {
    return convBnActParams(inChannels, STEM, 3) + blocks(32).reduce((n, b) => n + invertedResidualParams(b.cin, b.c, b.t), 0);
  },
  activationFloats(inChannels: number, height: number, width: number, o: Pick<EncoderOptions, 'outputStride'>): number {
    const px = (s: number) => sizeAt(height, s) * sizeAt(width, s);
    let n = convBnActFloats(STEM, px(2), 'relu6');
    let stride = 2;
    for (const b of blocks(o.outputStride)) {
      const pxIn = px(stride);
      stride *= b.stride;
      n += invertedResidualFloats(b.cin, b.c, b.t, b.stride, px(stride), pxIn);
    }
    return n;
  },
});

function encoderModel(inChannels: number, outputStride: 16 | 32): tf.LayersModel {
  const input = tf.input({ shape: [null, null, inChannels], name: 'image' });
  const f = mobilenetV2.build(input, { outputStride, seed: 1, prefix: 'enc' });
  return tf.model({ inputs: input, outputs: f.maps, name: 'mobilenet_v2' });
}

export const selfTest: SelfTest = {
  'parameter count equals torchvision mobilenet_v2 features[:-1], and the built encoder'() {
    // torchvision mobilenet_v2: 3,504,872 - classifier (1280*1000 + 1000) - features[18]
    // (320*1280 + 2*1280) = 1,811,712. Twin (torchvision need not be installed):
    // /usr/bin/python3 bench/torch_models/parts.py mobilenet_v2   prints 1811712.
    assert.equal(mobilenetV2.paramCount(3), 1_811_712);
    for (const inChannels of [3, 1]) {
      const m = encoderModel(inChannels, 32);
      assert.equal(countTrainable(m), mobilenetV2.paramCount(inChannels), `${inChannels} channels`);
      m.dispose();
    }
  },
  async 'activation floats equal the built layers at odd sizes, output stride 32 and 16'() {
    for (const [outputStride, sizes] of [[32, [[37, 51], [64, 64]]], [16, [[37, 51]]]] as const) {
      const m = encoderModel(3, outputStride);
      for (const [h, w] of sizes) {
        const traced = (await tracedActivationFloats(m, h, w)) - 3 * h * w; // the input layer is not the encoder's
        assert.equal(mobilenetV2.activationFloats(3, h, w, { outputStride }), traced, `/${outputStride} ${h}x${w}`);
      }
      m.dispose();
    }
  },
  'maps at strides 2..32 (or 16) with widths 16, 24, 32, 96, 320, and the same weights at either stride'() {
    assert.deepEqual(mobilenetV2.channels, [16, 24, 32, 96, 320]);
    for (const outputStride of [32, 16] as const) {
      const f = mobilenetV2.build(tf.input({ shape: [37, 51, 3] }), { outputStride, seed: 0, prefix: `t_mnv2_${outputStride}` });
      assert.deepEqual(f.strides, [2, 4, 8, 16, outputStride]);
      f.maps.forEach((m, i) => assert.deepEqual(m.shape, [null, sizeAt(37, f.strides[i]), sizeAt(51, f.strides[i]), mobilenetV2.channels[i]]));
    }
    const [a, b] = ([32, 16] as const).map((s) => encoderModel(3, s));
    assert.deepEqual(a.weights.map((w) => w.originalName), b.weights.map((w) => w.originalName));
    // 17 inverted residuals, residual adds where stride 1 keeps the width (10 of them).
    assert.ok(a.layers.some((l) => l.name === 'enc_block17_project_bn') && !a.layers.some((l) => l.name === 'enc_block18_dw'));
    assert.equal(a.layers.filter((l) => l.name.endsWith('_add')).length, 10);
    a.dispose();
    b.dispose();
  },
  'a tiny forward pass is finite, and the same seed gives the same weights'() {
    const m = encoderModel(3, 16);
    const ys = tf.tidy(() => (m.predict(tf.randomNormal([1, 33, 35, 3], 0, 1, 'float32', 2)) as tf.Tensor[]).map((y) => y.dataSync()));
    assert.ok(ys.every((y) => y.every(Number.isFinite)));
    const m2 = encoderModel(3, 16);
    const k = (mm: tf.LayersModel) => Array.from(mm.getLayer('enc_block9_dw').getWeights()[0].dataSync().slice(0, 16));
    assert.deepEqual(k(m), k(m2));
    m.dispose();
    m2.dispose();
  },
};

runIfMain(module, selfTest);
