// ResNet-18 and ResNet-34 encoders (He et al. 2016) as torchvision builds them, without
// the pooling and fc head: a 7x7/2 stem, a 3x3/2 max-pool and four stages of BasicBlocks.
// Five feature maps at strides 2 (stem), 4, 8, 16 and 32 (or 16), as
// segmentation_models.pytorch's ResNet encoders give them to its decoders.
import * as tf from '../../backends/tf';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../utils/self_test';
import { fastBatchNorm } from '../layers/batch_norm';
import { heInit } from '../layers/init';
import { countTrainable, tracedActivationFloats } from '../registry';
import { EncoderDefinition, EncoderOptions, Features, sizeAt, T } from './index';

const WIDTHS = [64, 128, 256, 512];

/** conv (no bias: batch norm follows) -> batch norm; the ReLU is the caller's. */
function convBN(x: T, filters: number, kernelSize: number, strides: number, name: string, seed: number): T {
  // All convolutions He-initialised, as torchvision's kaiming_normal_ does: every one feeds a ReLU (some after the add).
  x = tf.layers.conv2d({ filters, kernelSize, strides, padding: 'same', useBias: false, kernelInitializer: heInit(`${name}_conv`, seed), name: `${name}_conv` }).apply(x) as T;
  // momentum 0.9 = PyTorch's 0.1.
  return fastBatchNorm({ momentum: 0.9, epsilon: 1e-5, name: `${name}_bn` }).apply(x) as T;
}

/** torchvision's BasicBlock: two 3x3 conv-BN, a 1x1 conv-BN shortcut where stride or width changes, add, ReLU. */
function basicBlock(x: T, filters: number, strides: number, name: string, seed: number): T {
  const inChannels = x.shape[3] as number;
  let y = convBN(x, filters, 3, strides, `${name}_1`, seed);
  y = tf.layers.reLU({ name: `${name}_1_relu` }).apply(y) as T;
  y = convBN(y, filters, 3, 1, `${name}_2`, seed);
  const shortcut = strides !== 1 || inChannels !== filters ? convBN(x, filters, 1, strides, `${name}_down`, seed) : x;
  y = tf.layers.add({ name: `${name}_add` }).apply([y, shortcut]) as T;
  return tf.layers.reLU({ name: `${name}_relu` }).apply(y) as T;
}

/** Stride of each stage's first block: the last stage keeps stride 16 when outputStride is 16. */
function stageStrides(outputStride: 16 | 32): number[] {
  // torchvision/smp reach output stride 16 by dilating layer4 (rate 2). tf.conv2d has no
  // gradient for dilations > 1 in tfjs 4.22, so layer4 here is undilated: stride 1 with
  // the same weights, a smaller receptive field than the dilated original.
  return [1, 2, 2, outputStride === 16 ? 1 : 2];
}

function makeResNet(name: string, blocks: number[]): EncoderDefinition {
  const channels = [64, ...WIDTHS];
  return {
    name,
    channels,
    build(x: T, o: EncoderOptions): Features {
      const p = o.prefix;
      x = convBN(x, 64, 7, 2, `${p}_stem`, o.seed);
      x = tf.layers.reLU({ name: `${p}_stem_relu` }).apply(x) as T;
      const maps = [x];
      const strides = [2];
      // 'same' padding, so odd sizes round up as everywhere else (torchvision pads by 1).
      x = tf.layers.maxPooling2d({ poolSize: 3, strides: 2, padding: 'same', name: `${p}_pool` }).apply(x) as T;
      let stride = 4;
      stageStrides(o.outputStride).forEach((s, i) => {
        stride *= s;
        for (let b = 0; b < blocks[i]; b++) x = basicBlock(x, WIDTHS[i], b === 0 ? s : 1, `${p}_layer${i + 1}_${b}`, o.seed);
        maps.push(x);
        strides.push(stride);
      });
      return { maps, strides, channels };
    },
    paramCount(inChannels: number): number {
      const convBN = (cin: number, cout: number, k: number) => k * k * cin * cout + 2 * cout; // weights, gamma, beta
      let n = convBN(inChannels, 64, 7);
      let cin = 64;
      WIDTHS.forEach((c, i) => {
        for (let b = 0; b < blocks[i]; b++) {
          // The shortcut conv: each later stage's first block, where the width doubles.
          n += convBN(cin, c, 3) + convBN(c, c, 3) + (b === 0 && i > 0 ? convBN(cin, c, 1) : 0);
          cin = c;
        }
      });
      return n;
    },
    activationFloats(inChannels: number, height: number, width: number, o: Pick<EncoderOptions, 'outputStride'>): number {
      const px = (s: number) => sizeAt(height, s) * sizeAt(width, s);
      let n = 3 * 64 * px(2) + 64 * px(4); // stem conv, BN, ReLU; pool
      let stride = 4;
      stageStrides(o.outputStride).forEach((s, i) => {
        stride *= s;
        // conv, BN, ReLU, conv, BN, add, ReLU = 7 maps; the shortcut's conv and BN 2 more (first block, i > 0).
        for (let b = 0; b < blocks[i]; b++) n += (7 + (b === 0 && i > 0 ? 2 : 0)) * WIDTHS[i] * px(stride);
      });
      return n;
    },
  };
}

export const resnet18 = makeResNet('resnet18', [2, 2, 2, 2]);
export const resnet34 = makeResNet('resnet34', [3, 4, 6, 3]);

function encoderModel(e: EncoderDefinition, inChannels: number, outputStride: 16 | 32): tf.LayersModel {
  const input = tf.input({ shape: [null, null, inChannels], name: 'image' });
  const f = e.build(input, { outputStride, seed: 1, prefix: 'enc' });
  return tf.model({ inputs: input, outputs: f.maps, name: e.name });
}

export const selfTest: SelfTest = {
  'parameter counts equal torchvision without its fc layer, and the built encoders'() {
    // torchvision resnet18: 11,689,512 minus fc 512*1000+1000 = 11,176,512; resnet34: 21,797,672 - 513,000 = 21,284,672.
    // Twin: /usr/bin/python3 bench/torch_models/parts.py resnet18 (and resnet34) prints 11176512 (21284672).
    assert.equal(resnet18.paramCount(3), 11_176_512);
    assert.equal(resnet34.paramCount(3), 21_284_672);
    for (const [e, inChannels] of [[resnet18, 3], [resnet18, 1], [resnet34, 4]] as const) {
      const m = encoderModel(e, inChannels, 32);
      assert.equal(countTrainable(m), e.paramCount(inChannels), `${e.name} at ${inChannels} channels`);
      m.dispose();
    }
  },
  async 'activation floats equal the built layers at odd sizes, output stride 32 and 16'() {
    // Each trace allocates the encoder's weights again: ResNet-34 once is enough (only its block counts differ).
    const cases = [[resnet18, 32, [[37, 51], [64, 64]]], [resnet18, 16, [[37, 51]]], [resnet34, 32, [[37, 51]]]] as const;
    for (const [e, outputStride, sizes] of cases) {
      const m = encoderModel(e, 3, outputStride);
      for (const [h, w] of sizes) {
        const traced = (await tracedActivationFloats(m, h, w)) - 3 * h * w; // the input layer is not the encoder's
        assert.equal(e.activationFloats(3, h, w, { outputStride }), traced, `${e.name} /${outputStride} ${h}x${w}`);
      }
      m.dispose();
    }
  },
  'maps at strides 2..32 (or 16) with widths 64, 64, 128, 256, 512, and the same weights at either stride'() {
    for (const outputStride of [32, 16] as const) {
      const f = resnet18.build(tf.input({ shape: [37, 51, 3] }), { outputStride, seed: 0, prefix: `t_r18_${outputStride}` });
      assert.deepEqual(f.strides, [2, 4, 8, 16, outputStride]);
      f.maps.forEach((m, i) => assert.deepEqual(m.shape, [null, sizeAt(37, f.strides[i]), sizeAt(51, f.strides[i]), resnet18.channels[i]]));
    }
    const [a, b] = ([32, 16] as const).map((s) => encoderModel(resnet18, 3, s));
    assert.deepEqual(a.weights.map((w) => w.originalName), b.weights.map((w) => w.originalName));
    a.dispose();
    b.dispose();
  },
  'a tiny forward pass is finite, and the same seed gives the same weights'() {
    const m = encoderModel(resnet18, 3, 32);
    const ys = tf.tidy(() => (m.predict(tf.randomNormal([1, 33, 35, 3], 0, 1, 'float32', 2)) as tf.Tensor[]).map((y) => y.dataSync()));
    assert.ok(ys.every((y) => y.every(Number.isFinite)));
    const m2 = encoderModel(resnet18, 3, 32);
    const k = (mm: tf.LayersModel) => Array.from(mm.getLayer('enc_layer3_0_2_conv').getWeights()[0].dataSync().slice(0, 16));
    assert.deepEqual(k(m), k(m2));
    m.dispose();
    m2.dispose();
  },
};

runIfMain(module, selfTest);
