// Fast-SCNN (Poudel et al. 2019, "Fast-SCNN: Fast Semantic Segmentation Network",
// arXiv:1902.04502), as MMSegmentation's FastSCNN backbone + DepthwiseSeparableFCNHead
// (mmseg/models/backbones/fast_scnn.py, configs/_base_/models/fast_scnn.py):
//   learning to downsample: 3x3 conv s2 + BN + ReLU, DSConv s2, DSConv s2 (stride 8);
//   global feature extractor: MobileNetV2 inverted residual stages (stride 32), a pyramid
//     pooling module (bins 1, 2, 3, 6; branches of C/4 channels), concat, 3x3 conv;
//   feature fusion: the stride-8 map (1x1 conv + BN) + the stride-32 map upsampled x4
//     (depthwise 3x3 + BN + ReLU, 1x1 conv + BN), added, ReLU;
//   classifier: two DSConvs, dropout, 1x1 conv to the classes, x8 bilinear to the input.
// MMSeg's two auxiliary FCN heads (on the stride-8 and stride-32 maps) only add training
// losses and are dropped at inference; they are not built here. Differences from MMSeg, none
// changing the parameter count: the inverted residuals use MobileNetV2's ReLU6 (MMSeg: ReLU);
// the learning-to-downsample DSConvs keep the ReLU after the depthwise conv (MMSeg 1.x drops
// it, dw_act_cfg=None); upsampling is tfjs's bilinear (no half-pixel centres) cut to size; the
// pyramid bins where they do not divide the map size (BinAvgPool). Like MMSeg, the fusion
// module's depthwise conv is not dilated (the paper's is, by 4).
import * as tf from '../backends/tf';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { runIfMain, SelfTest } from '../utils/self_test';
import { portableBatchNorm } from './layers/batch_norm';
import { registerLayerClass } from './layers/custom_layers';
import { glorotInit } from './layers/init';
import {
  convBnAct, convBnActFloats, convBnActParams, depthwiseBnAct, depthwiseBnActParams, dsConv, dsConvFloats, dsConvParams,
  invertedResidual, invertedResidualFloats, invertedResidualParams, strided,
} from './layers/mobilenet_parts';
import { portableDropout, seededDropout } from './layers/seeded_dropout';
import { CropToMatch, portableCropToMatch, upsampleLike } from './layers/upsample';
import { modelChecks } from './model_checks';
import { ModelIO, registerModel } from './registry';

type T = tf.SymbolicTensor;

// ---------------------------------------------------------------------------
// Pyramid pooling at any input size, exportable with stock layers.
//
// PSPNet's bins are adaptive average pooling (PyTorch's AdaptiveAvgPool2d), which tfjs
// lacks and whose windows (floor(i*s/b) to ceil((i+1)*s/b)) overlap when b does not divide
// the map size s: no stock layer computes them. Here a bin branch pools with windows and
// strides of k = ceil(s/b) ('same' padding, padding left out of the averages), which gives
// ceil(s/k) <= b bins: the same as AdaptiveAvgPool2d when b divides s, else windows one
// pixel wider and a narrower edge bin. The branch is upsampled by k (bilinear, as
// UpSampling2D) and cropped to s (CropToMatch). k depends on the input size, so the pool and
// the upsampling are project layers; at the fixed export size k is known and they become a
// stock AveragePooling2D and UpSampling2D computing the same ops: the export is exact at
// every size, divisible or not.

/** Window and stride of a bin branch on an axis of `size` pixels: ceil(size / bins). */
export const binWindow = (size: number, bins: number) => Math.ceil(size / bins);
/** Pooled cells on that axis: ceil(size / k) (<= bins, = bins when bins divides size). */
export const binCells = (size: number, bins: number) => Math.ceil(size / binWindow(size, bins));

interface ShapesOfNode { inboundNodes: { inputShapes: number[][] | number[] }[] }
const inputShapes = (built: tf.layers.Layer) => (built as unknown as ShapesOfNode).inboundNodes[0].inputShapes;

/** A pyramid-pooling layer of one bin count (serialised with it). */
abstract class BinLayer extends tf.layers.Layer {
  readonly bins: number;
  constructor(args: { bins: number; name?: string; trainable?: boolean }) {
    super(args);
    this.bins = args.bins;
  }
  getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), bins: this.bins };
  }
}

/**
 * Average pooling of an [n, s_h, s_w, c] map into bins x bins cells (see above). The
 * forward pass equals tf.avgPool(x, k, k, 'same'); it is computed as zero padding, a
 * 'valid' pool and a per-cell rescale because tfjs 4.22's AvgPool gradient divides by
 * k_h*k_w also at windows that overhang the edge, while its forward pass divides by the
 * pixels inside (cpu and wasm alike): with the padding explicit both agree.
 */
export class BinAvgPool extends BinLayer {
  static className = 'BinAvgPool';
  computeOutputShape(s: tf.Shape | tf.Shape[]): tf.Shape {
    const [n, h, w, c] = s as tf.Shape;
    const cells = (v: number | null) => (v == null ? null : binCells(v, this.bins));
    return [n, cells(h), cells(w), c];
  }
  call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const x = (Array.isArray(inputs) ? inputs[0] : inputs) as tf.Tensor4D;
      const [, h, w] = x.shape;
      const [ph, pw] = [samePadding(h, this.bins), samePadding(w, this.bins)];
      const padded = tf.pad(x, [[0, 0], ph.pad, pw.pad, [0, 0]]);
      const sums = tf.avgPool(padded, [ph.k, pw.k], [ph.k, pw.k], 'valid'); // sum / (k_h k_w)
      if (ph.pad[0] + ph.pad[1] + pw.pad[0] + pw.pad[1] === 0) return sums;
      // k_h k_w / (pixels inside each window), a constant of the shapes.
      const scale = tf.outerProduct(tf.tensor1d(ph.inside.map((c) => ph.k / c)), tf.tensor1d(pw.inside.map((c) => pw.k / c)));
      return tf.mul(sums, tf.reshape(scale, [1, ph.inside.length, pw.inside.length, 1]));
    });
  }
}
registerLayerClass(BinAvgPool);

/** TF's 'same' padding of a pool with window = stride = k on `size` pixels, and the pixels inside each window. */
export function samePadding(size: number, bins: number): { k: number; pad: [number, number]; inside: number[] } {
  const k = binWindow(size, bins);
  const cells = Math.ceil(size / k);
  const total = cells * k - size;
  const top = Math.floor(total / 2); // TF puts the odd pixel at the end
  const inside = Array.from({ length: cells }, (_, i) => Math.min(size, (i + 1) * k - top) - Math.max(0, i * k - top));
  return { k, pad: [top, total - top], inside };
}

/** For export at a fixed size: a stock AveragePooling2D with the window known there (same forward). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function portableBinAvgPool(layer: any, built: tf.layers.Layer): void {
  const shapes = inputShapes(built);
  const [, h, w] = (Array.isArray(shapes[0]) ? shapes[0] : shapes) as number[]; // one input: [shape] or shape
  const k = [binWindow(h, layer.config.bins), binWindow(w, layer.config.bins)];
  layer.class_name = 'AveragePooling2D';
  layer.config = { name: layer.config.name, trainable: layer.config.trainable, pool_size: k, strides: k, padding: 'same', data_format: 'channels_last' };
}

/**
 * Upsamples the pooled cells [x] by the window k of BinAvgPool(bins) on `ref`'s size, as
 * UpSampling2D (bilinear) does: k * cells >= the map size, cut to it by a CropToMatch after.
 */
export class BinUpsample extends BinLayer {
  static className = 'BinUpsample';
  computeOutputShape(s: tf.Shape | tf.Shape[]): tf.Shape {
    const [x, ref] = s as tf.Shape[];
    const up = (cells: number | null, size: number | null) => (cells == null || size == null ? null : cells * binWindow(size, this.bins));
    return [x[0], up(x[1], ref[1]), up(x[2], ref[2]), x[3]];
  }
  call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const [x, ref] = inputs as tf.Tensor4D[];
    const [, h, w] = x.shape;
    // The op and arguments of tfjs's UpSampling2D.call, so the stand-in is exact.
    return tf.image.resizeBilinear(x, [h * binWindow(ref.shape[1], this.bins), w * binWindow(ref.shape[2], this.bins)]);
  }
}
registerLayerClass(BinUpsample);

/** For export at a fixed size: a stock UpSampling2D by the known k, on the first input only. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function portableBinUpsample(layer: any, built: tf.layers.Layer): void {
  const [, ref] = inputShapes(built) as number[][];
  layer.class_name = 'UpSampling2D';
  layer.config = {
    name: layer.config.name, trainable: layer.config.trainable, size: [binWindow(ref[1], layer.config.bins), binWindow(ref[2], layer.config.bins)],
    data_format: 'channels_last', interpolation: 'bilinear',
  };
  layer.inbound_nodes = layer.inbound_nodes.map((node: unknown[]) => node.slice(0, 1));
}

/** One pyramid branch: pool to bins, 1x1 conv + BN + ReLU, back to x's size. Layers `ppm${bins}_*`. */
function pyramidBranch(x: T, bins: number, channels: number, seed: number): T {
  const name = `ppm${bins}`;
  let y = new BinAvgPool({ bins, name: `${name}_pool` }).apply(x) as T;
  y = convBnAct(y, channels, { kernel: 1, act: 'relu', name, seed });
  y = new BinUpsample({ bins, name: `${name}_up` }).apply([y, x]) as T;
  return new CropToMatch({ name: `${name}_crop` }).apply([y, x]) as T;
}

// ---------------------------------------------------------------------------

const channels = (n: number) => z.array(z.number().finite().int().positive()).length(n);

const Options = z
  .object({
    // Learning to downsample: the stride-2 conv and the two stride-2 DSConvs (the last is
    // the stride-8 map the fusion module reuses).
    downsample_channels: channels(3).default([32, 48, 64]),
    // Global feature extractor: inverted residual stages, their block counts, the stride of
    // each stage's first block (2, 2, 1: stride 32) and the expansion.
    global_channels: channels(3).default([64, 96, 128]),
    global_blocks: channels(3).default([3, 3, 3]),
    global_strides: z.array(z.union([z.literal(1), z.literal(2)])).length(3).default([2, 2, 1]),
    expand_ratio: z.number().finite().int().positive().default(6),
    // Pyramid pooling bins (PSPNet's 1, 2, 3, 6), each a branch of global_channels[2]/4
    // channels; [] leaves the module out. See BinAvgPool for the bins at sizes b does not divide.
    pool_bins: z.array(z.number().finite().int().positive()).default([1, 2, 3, 6])
      .refine((b) => new Set(b).size === b.length, 'pool_bins must not repeat a bin count'),
    // The global extractor's output, the fusion module and the classifier (MMSeg: 128 each).
    fusion_channels: z.number().finite().int().positive().default(128),
    dropout: z.number().finite().min(0).max(0.9).default(0.1),
    // Scales every width above (rounded, at least 1): one knob for memory.
    width: z.number().finite().positive().max(4).default(1),
  })
  .strict();
type FastSCNNOptions = z.infer<typeof Options>;

/** The channel counts after the width multiplier. */
export function fastScnnWidths(o: FastSCNNOptions) {
  const c = (n: number) => Math.max(1, Math.round(n * o.width));
  const global = o.global_channels.map(c);
  return { down: o.downsample_channels.map(c), global, pool: Math.max(1, Math.floor(global[2] / 4)), fusion: c(o.fusion_channels) };
}

/** Product of the global stages' strides: the stride-32 map's factor below the stride-8 one. */
const globalStride = (o: FastSCNNOptions) => o.global_strides.reduce<number>((a, b) => a * b, 1);

export function buildFastSCNN(o: FastSCNNOptions, io: ModelIO): tf.LayersModel {
  const { down, global, pool, fusion } = fastScnnWidths(o);
  const seed = io.seed;
  const input = tf.input({ shape: [null, null, io.inChannels], name: 'image' });
  // Learning to downsample (stride 8).
  let x = convBnAct(input, down[0], { kernel: 3, stride: 2, act: 'relu', name: 'ltd', seed });
  x = dsConv(x, down[1], { stride: 2, name: 'ltd_ds1', seed });
  const higher = dsConv(x, down[2], { stride: 2, name: 'ltd_ds2', seed });
  // Global feature extractor.
  x = higher;
  for (let s = 0; s < 3; s++) {
    for (let b = 0; b < o.global_blocks[s]; b++) {
      x = invertedResidual(x, global[s], { expand: o.expand_ratio, stride: b === 0 ? o.global_strides[s] : 1, name: `gfe${s + 1}_${b + 1}`, seed });
    }
  }
  if (o.pool_bins.length) x = tf.layers.concatenate({ axis: -1, name: 'ppm_concat' }).apply([x, ...o.pool_bins.map((b) => pyramidBranch(x, b, pool, seed))]) as T;
  const lower = convBnAct(x, fusion, { kernel: 3, act: 'relu', name: 'gfe_out', seed });
  // Feature fusion at stride 8.
  let l = upsampleLike(lower, higher, globalStride(o), 'ffm_lower', 'bilinear');
  l = depthwiseBnAct(l, { act: 'relu', name: 'ffm_dw', seed });
  l = convBnAct(l, fusion, { kernel: 1, act: 'none', name: 'ffm_lower', seed });
  const h = convBnAct(higher, fusion, { kernel: 1, act: 'none', name: 'ffm_higher', seed });
  x = tf.layers.add({ name: 'ffm_add' }).apply([h, l]) as T;
  x = tf.layers.reLU({ name: 'ffm_relu' }).apply(x) as T;
  // Classifier.
  x = dsConv(x, fusion, { name: 'head_ds1', seed });
  x = dsConv(x, fusion, { name: 'head_ds2', seed });
  x = seededDropout({ rate: o.dropout, name: 'head_dropout' }).apply(x) as T;
  x = tf.layers.conv2d({ filters: io.outChannels, kernelSize: 1, kernelInitializer: glorotInit('head_logits', seed), name: 'head_logits' }).apply(x) as T;
  const logits = upsampleLike(x, input, 8, 'logits', 'bilinear');
  return tf.model({ inputs: input, outputs: logits, name: 'fast_scnn' });
}

export function fastScnnParamCount(o: FastSCNNOptions, io: ModelIO): number {
  const { down, global, pool, fusion } = fastScnnWidths(o);
  let n = convBnActParams(io.inChannels, down[0], 3) + dsConvParams(down[0], down[1]) + dsConvParams(down[1], down[2]);
  let cin = down[2];
  for (let s = 0; s < 3; s++) {
    for (let b = 0; b < o.global_blocks[s]; b++) {
      n += invertedResidualParams(cin, global[s], o.expand_ratio);
      cin = global[s];
    }
  }
  n += o.pool_bins.length * convBnActParams(global[2], pool, 1);
  n += convBnActParams(global[2] + o.pool_bins.length * pool, fusion, 3);
  n += depthwiseBnActParams(fusion) + convBnActParams(fusion, fusion, 1) + convBnActParams(down[2], fusion, 1);
  return n + 2 * dsConvParams(fusion, fusion) + (fusion + 1) * io.outChannels;
}

/** Floats of every layer output for one h x w sample, the input included. */
export function fastScnnActivationFloats(o: FastSCNNOptions, io: ModelIO, height: number, width: number): number {
  const { down, global, pool, fusion } = fastScnnWidths(o);
  const px = (stride: number) => strided(height, stride) * strided(width, stride); // 'same' strides round up
  let n = io.inChannels * px(1) + convBnActFloats(down[0], px(2)) + dsConvFloats(down[0], down[1], px(4)) + dsConvFloats(down[1], down[2], px(8));
  let [cin, stride] = [down[2], 8];
  for (let s = 0; s < 3; s++) {
    for (let b = 0; b < o.global_blocks[s]; b++) {
      const st = b === 0 ? o.global_strides[s] : 1;
      n += invertedResidualFloats(cin, global[s], o.expand_ratio, st, px(stride * st), px(stride));
      [cin, stride] = [global[s], stride * st];
    }
  }
  const [sh, sw] = [strided(height, stride), strided(width, stride)];
  for (const b of o.pool_bins) {
    const cells = binCells(sh, b) * binCells(sw, b);
    const up = binCells(sh, b) * binWindow(sh, b) * binCells(sw, b) * binWindow(sw, b);
    n += global[2] * cells + convBnActFloats(pool, cells) + pool * up + pool * sh * sw; // pool, conv-BN-ReLU, upsampled, cropped
  }
  if (o.pool_bins.length) n += (global[2] + o.pool_bins.length * pool) * sh * sw; // concat
  n += convBnActFloats(fusion, sh * sw);
  const f = globalStride(o);
  n += fusion * sh * f * sw * f + fusion * px(8); // x4 upsampled, cropped
  n += convBnActFloats(fusion, px(8)) + 2 * convBnActFloats(fusion, px(8), 'none') + 2 * fusion * px(8); // dw, lower, higher, add, ReLU
  n += 2 * dsConvFloats(fusion, fusion, px(8)) + fusion * px(8) + io.outChannels * px(8); // DSConvs, dropout, logits
  return n + io.outChannels * (strided(height, 8) * 8 * strided(width, 8) * 8 + height * width); // x8 upsampled, cropped
}

export const fastScnn = registerModel({
  name: 'fast_scnn',
  summary: 'Fast-SCNN (Poudel 2019): real-time two-branch network for CPUs and browsers; 1.4M parameters, stride-8 output',
  options: Options,
  widthKey: 'model.width',
  activationBytes: 17, // bench/memory.ts: engine/memory.ts's calibration table
  build: buildFastSCNN,
  paramCount: fastScnnParamCount,
  activationFloats: fastScnnActivationFloats,
  portable: { FastBatchNorm: portableBatchNorm, CropToMatch: portableCropToMatch, BinAvgPool: portableBinAvgPool, BinUpsample: portableBinUpsample, SeededDropout: portableDropout },
});

// ---------------------------------------------------------------------------

const SMALL = { downsample_channels: [4, 6, 8], global_channels: [8, 8, 12], global_blocks: [1, 1, 1], expand_ratio: 2, fusion_channels: 8 };

export const selfTest: SelfTest = {
  ...modelChecks(fastScnn, {
    small: SMALL,
    // /usr/bin/python3 bench/torch_models.py fast_scnn --params --classes 19
    torch: { options: {}, io: { inChannels: 3, outChannels: 19, seed: 0 }, params: 1_399_939 },
  }),
  'bin windows and padding: AdaptiveAvgPool2d where the bins divide the size, fewer or narrower bins elsewhere'() {
    assert.deepEqual(samePadding(12, 3), { k: 4, pad: [0, 0], inside: [4, 4, 4] });
    assert.deepEqual(samePadding(16, 3), { k: 6, pad: [1, 1], inside: [5, 6, 5] });
    assert.deepEqual(samePadding(16, 6), { k: 3, pad: [1, 1], inside: [2, 3, 3, 3, 3, 2] });
    assert.deepEqual(samePadding(5, 1), { k: 5, pad: [0, 0], inside: [5] });
    assert.equal(binCells(4, 3), 2);
    assert.equal(binCells(2, 6), 2);
  },
  'BinAvgPool equals tf.avgPool(same) forward; its gradient spreads each cell over the pixels it averaged'() {
    tf.tidy(() => {
      const x = tf.randomNormal([2, 16, 7, 3], 0, 1, 'float32', 4);
      for (const bins of [1, 2, 3, 6]) {
        const layer = new BinAvgPool({ bins });
        const y = layer.apply(x) as tf.Tensor;
        const kh = binWindow(16, bins);
        const kw = binWindow(7, bins);
        const ref = tf.avgPool(x as tf.Tensor4D, [kh, kw], [kh, kw], 'same');
        assert.deepEqual(y.shape, [2, binCells(16, bins), binCells(7, bins), 3]);
        assert.ok(tf.max(tf.abs(tf.sub(y, ref))).dataSync()[0] < 1e-5, `bins ${bins}`);
        // d(sum of the cells)/dx: each pixel gets 1 / (pixels in its window).
        const g = tf.grad((a: tf.Tensor) => tf.sum(layer.apply(a) as tf.Tensor))(x);
        const { inside: ih } = samePadding(16, bins);
        const { inside: iw, pad: pw } = samePadding(7, bins);
        const ph = samePadding(16, bins).pad;
        const cellOf = (i: number, k: number, top: number) => Math.floor((i + top) / k);
        const expected = tf.tensor4d(Array.from({ length: 16 * 7 }, (_, p) => 1 / (ih[cellOf(Math.floor(p / 7), kh, ph[0])] * iw[cellOf(p % 7, kw, pw[0])])), [1, 16, 7, 1]);
        assert.ok(tf.max(tf.abs(tf.sub(g, expected))).dataSync()[0] < 1e-6, `gradient, bins ${bins}`);
      }
    });
  },
  'layout: stride-8 and stride-32 maps, pyramid branches, fusion and head widths at the defaults'() {
    const m = buildFastSCNN(Options.parse({}), { inChannels: 3, outChannels: 19, seed: 0 });
    const shape = (n: string) => m.getLayer(n).outputShape as (number | null)[];
    assert.equal(shape('ltd_ds2_pw_relu')[3], 64);
    assert.equal(shape('gfe3_3_add')[3], 128);
    for (const b of [1, 2, 3, 6]) assert.equal(shape(`ppm${b}_crop`)[3], 32);
    assert.equal(shape('ppm_concat')[3], 256);
    assert.equal(shape('ffm_relu')[3], 128);
    assert.equal(shape('logits_crop')[3], 19);
    // A stride-32 map of 8x16 (input 256x512): 2 bins divide it; 6 bins give 4x6 cells (windows 2 and 3).
    const at = (n: string, h: number, w: number) => (m.getLayer(n) as unknown as BinAvgPool).computeOutputShape([1, h, w, 128]);
    assert.deepEqual(at('ppm6_pool', 8, 16), [1, 4, 6, 128]);
    assert.deepEqual(at('ppm2_pool', 8, 16), [1, 2, 2, 128]);
    m.dispose();
  },
  'pool_bins [] leaves the pyramid out; repeated bins are refused'() {
    const o = Options.parse({ ...SMALL, pool_bins: [] });
    const m = buildFastSCNN(o, { inChannels: 3, outChannels: 2, seed: 0 });
    assert.ok(!m.layers.some((l) => l.name.startsWith('ppm')));
    assert.equal(fastScnnParamCount(o, { inChannels: 3, outChannels: 2, seed: 0 }), m.countParams() - m.nonTrainableWeights.reduce((s, w) => s + (w.shape as number[]).reduce((a, b) => a * b, 1), 0));
    m.dispose();
    assert.throws(() => Options.parse({ pool_bins: [1, 2, 2] }), /must not repeat/);
  },
};

runIfMain(module, selfTest);
