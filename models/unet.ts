// U-Net (Ronneberger et al. 2015) from the parts in unet_parts.ts, with padded
// convolutions so the output has the input's size. Widths base*2^min(i,3) per
// level, as in ../shared/bench/torch_unet.py, so speed comparisons are fair.
import * as tf from '../backends/tf';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { runIfMain, SelfTest } from '../utils/self_test';
import { portableBatchNorm } from './layers/batch_norm';
import { DoubleConv, Down, OutConv, Up, UpMode } from './layers/unet_parts';
import { portableCropToMatch } from './layers/upsample';
import { modelChecks } from './model_checks';
import { countTrainable, registerModel } from './registry';

export interface UNetOptions {
  inChannels: number;
  outChannels: number;
  base: number;
  depth: number;
  upMode: UpMode;
  batchNorm: boolean;
  /** Seeds the weight initialisation (training.seed). */
  seed?: number;
}

export function levelWidths(base: number, depth: number): number[] {
  return Array.from({ length: depth + 1 }, (_, i) => base * 2 ** Math.min(i, 3));
}

/**
 * Trainable parameters of this U-Net, from its definition (as torch_unet.py counts them:
 * conv weights and biases, batch-norm gamma and beta); the memory estimate uses it too.
 */
export function unetParamCount(o: Pick<UNetOptions, 'inChannels' | 'outChannels' | 'base' | 'depth' | 'upMode' | 'batchNorm'>): number {
  const ch = levelWidths(o.base, o.depth);
  // two 3x3 convs, each with gamma and beta (batch norm) or a bias (without)
  const dc = (i: number, c: number) => 9 * i * c + 9 * c * c + (o.batchNorm ? 4 : 2) * c;
  let n = dc(o.inChannels, ch[0]);
  for (let i = 1; i <= o.depth; i++) n += dc(ch[i - 1], ch[i]);
  for (let i = 0; i < o.depth; i++) n += dc(ch[i] + ch[i + 1], ch[i]) + (o.upMode === 'transpose' ? 4 * ch[i + 1] ** 2 + ch[i + 1] : 0);
  return n + (ch[0] + 1) * o.outChannels;
}

/** Builds a U-Net accepting any input height and width (NHWC). Output: raw logits. */
export function buildUNet(o: UNetOptions): tf.LayersModel {
  const ch = levelWidths(o.base, o.depth);
  const input = tf.input({ shape: [null, null, o.inChannels], name: 'image' });
  const seed = o.seed ?? 0;
  let x = DoubleConv(input, ch[0], 'enc0', o.batchNorm, seed);
  const skips: tf.SymbolicTensor[] = [];
  for (let i = 1; i <= o.depth; i++) {
    skips.push(x);
    x = Down(x, ch[i], `enc${i}`, o.batchNorm, seed);
  }
  for (let i = o.depth - 1; i >= 0; i--) x = Up(x, skips[i], ch[i], `dec${i}`, o.upMode, o.batchNorm, seed);
  const logits = OutConv(x, o.outChannels, 'head', seed);
  return tf.model({ inputs: input, outputs: logits, name: 'unet' });
}

/** Floats of every layer output of one forward pass for one sample (the input included). */
export function unetActivationFloats(o: Pick<UNetOptions, 'inChannels' | 'outChannels' | 'base' | 'depth' | 'upMode' | 'batchNorm'>, height: number, width: number): number {
  const ch = levelWidths(o.base, o.depth);
  // 'same' pooling rounds up, so level i is ceil(size / 2^i).
  const px = (i: number) => Math.ceil(height / 2 ** i) * Math.ceil(width / 2 ** i);
  const perConv = o.batchNorm ? 3 : 2; // conv, batch norm, ReLU outputs
  const doubleConv = (i: number) => 2 * perConv * ch[i] * px(i);
  let n = o.inChannels * px(0) + doubleConv(0);
  for (let i = 1; i <= o.depth; i++) n += ch[i - 1] * px(i) + doubleConv(i); // pool + convs
  for (let i = o.depth - 1; i >= 0; i--) {
    // the x2 map (upsampled or transposed conv) at its uncropped size, its crop, the concat, the convs
    const up = Math.ceil(height / 2 ** (i + 1)) * 2 * Math.ceil(width / 2 ** (i + 1)) * 2;
    n += ch[i + 1] * up + ch[i + 1] * px(i) + (ch[i] + ch[i + 1]) * px(i) + doubleConv(i);
  }
  return n + o.outChannels * px(0); // the logits
}

/** The U-Net's `model:` keys; Attention U-Net has the same. */
export const UNetOptionsSchema = z
  .object({
    base: z.number().finite().int().positive().default(16),
    depth: z.number().finite().int().min(1).max(6).default(4),
    up_mode: z.enum(['nearest', 'bilinear', 'transpose']).default('nearest'),
    batch_norm: z.boolean().default(true),
  })
  .strict();

/** YAML keys to UNetOptions' fields. */
export const unetOptions = (o: z.infer<typeof UNetOptionsSchema>) => ({ base: o.base, depth: o.depth, upMode: o.up_mode, batchNorm: o.batch_norm });

export const unet = registerModel({
  name: 'unet',
  summary: 'U-Net (Ronneberger 2015): the default for medical and binary masks; full-resolution skips',
  options: UNetOptionsSchema,
  widthKey: 'model.base',
  activationBytes: 13.6, // bench/memory.ts: engine/memory.ts's calibration table
  build: (o, io) => buildUNet({ ...unetOptions(o), ...io }),
  paramCount: (o, io) => unetParamCount({ ...unetOptions(o), ...io }),
  activationFloats: (o, io, h, w) => unetActivationFloats({ ...unetOptions(o), ...io }, h, w),
  portable: { FastBatchNorm: portableBatchNorm, CropToMatch: portableCropToMatch },
});

export const selfTest: SelfTest = {
  ...modelChecks(unet, {
    small: { base: 4, depth: 2 },
    // torch_unet.py --base 16 --depth 4 --classes 1 reports 1,226,305 parameters (BN
    // weight+bias counted; running stats are buffers there, non-trainable weights here).
    torch: { options: { base: 16, depth: 4 }, io: { inChannels: 3, outChannels: 1, seed: 0 }, params: 1_226_305 },
  }),
  'output has the input size for 64, 96 and 100 pixels'() {
    const m = buildUNet({ inChannels: 3, outChannels: 2, base: 8, depth: 4, upMode: 'nearest', batchNorm: true });
    for (const s of [64, 96, 100]) {
      const y = tf.tidy(() => m.predict(tf.zeros([1, s, s, 3])) as tf.Tensor);
      assert.deepEqual(y.shape, [1, s, s, 2], `size ${s}`);
      y.dispose();
    }
    const y = tf.tidy(() => m.predict(tf.zeros([2, 37, 51, 3])) as tf.Tensor);
    assert.deepEqual(y.shape, [2, 37, 51, 2]);
    y.dispose();
    m.dispose();
  },
  'channel count at every level'() {
    const m = buildUNet({ inChannels: 3, outChannels: 1, base: 16, depth: 4, upMode: 'nearest', batchNorm: true });
    const widths = levelWidths(16, 4);
    assert.deepEqual(widths, [16, 32, 64, 128, 128]);
    for (let i = 0; i <= 4; i++) assert.equal(m.getLayer(`enc${i}_relu2`).outputShape[3], widths[i], `enc${i}`);
    for (let i = 0; i < 4; i++) {
      assert.equal(m.getLayer(`dec${i}_concat`).outputShape[3], widths[i] + widths[i + 1], `dec${i} concat`);
      assert.equal(m.getLayer(`dec${i}_relu2`).outputShape[3], widths[i], `dec${i}`);
    }
    assert.equal(m.getLayer('head').outputShape[3], 1);
    m.dispose();
  },
  'the same seed gives the same initial weights, another seed others'() {
    const opts = { inChannels: 3, outChannels: 1, base: 4, depth: 2, upMode: 'nearest' as UpMode, batchNorm: true };
    const [a, b, c] = [1, 1, 2].map((seed) => buildUNet({ ...opts, seed }));
    const k = (m: tf.LayersModel) => Array.from(m.getLayer('enc1_conv2').getWeights()[0].dataSync());
    assert.deepEqual(k(a), k(b));
    assert.notDeepEqual(k(a), k(c));
    assert.notDeepEqual(k(a).slice(0, 8), Array.from(a.getLayer('enc1_conv1').getWeights()[0].dataSync()).slice(0, 8));
    [a, b, c].forEach((m) => m.dispose());
  },
  'the parameter count holds for every up mode, with and without batch norm'() {
    for (const upMode of ['nearest', 'bilinear', 'transpose'] as UpMode[]) {
      for (const batchNorm of [true, false]) {
        const o = { inChannels: 3, outChannels: 2, base: 4, depth: 3, upMode, batchNorm };
        const m = buildUNet(o);
        assert.equal(unetParamCount(o), countTrainable(m), `${upMode}, batch_norm ${batchNorm}`);
        m.dispose();
      }
    }
  },
  'upsampling modes build and keep size'() {
    for (const upMode of ['bilinear', 'transpose'] as UpMode[]) {
      const m = buildUNet({ inChannels: 3, outChannels: 3, base: 4, depth: 3, upMode, batchNorm: false });
      const y = tf.tidy(() => m.predict(tf.zeros([1, 30, 45, 3])) as tf.Tensor);
      assert.deepEqual(y.shape, [1, 30, 45, 3], upMode);
      y.dispose();
      m.dispose();
    }
  },
};


runIfMain(module, selfTest);
