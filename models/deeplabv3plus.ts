// DeepLabV3+ (Chen et al. 2018, "Encoder-Decoder with Atrous Separable Convolution for
// Semantic Image Segmentation") over a shared encoder (MobileNetV2 by default, or
// ResNet-18/34; encoders/index.ts), at output stride 16 (default) or 32.
//   ASPP on the last map: 1x1 conv, one 3x3 atrous conv per rate (AtrousConv2D, which
//   trains), image pooling (global mean, 1x1 conv), each + BN + ReLU; concat, 1x1
//   projection + BN + ReLU, dropout 0.1.
//   Decoder: the stride-4 map 1x1 -> 48 + BN + ReLU; the ASPP output bilinearly
//   upsampled to it, concat [aspp, low], two separable 3x3 convs, 1x1 to the classes,
//   bilinear x4 to the input.
// The image-pooling branch is never broadcast to h x w: a 1x1 conv of a concat is the sum
// of 1x1 convs of its parts, and the pooled part is constant over space, so the
// projection is conv1x1(concat of the spatial branches) + conv1x1(pooled [.,1,1,C]),
// added by tfjs's Add layer, which broadcasts [.,1,1,C] against [.,h,w,C] (checked below).
// The same function, gradients and parameter count as broadcast-then-concat, with stock
// layers only at any input size. PyTorch twin: bench/torch_models/deeplabv3plus.py.
import * as tf from '../backends/tf';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { runIfMain, SelfTest } from '../utils/self_test';
import { encoderOption, freezeStages, frozenStagesOption, getEncoder, sizeAt } from './encoders/index';
import { atrousConv2D, portableAtrousConv2D } from './layers/atrous';
import { fastBatchNorm, portableBatchNorm } from './layers/batch_norm';
import { glorotInit, heInit } from './layers/init';
import { convBnAct, convBnActFloats, convBnActParams, dsConv, dsConvFloats, dsConvParams } from './layers/mobilenet_parts';
import { portableDropout, seededDropout } from './layers/seeded_dropout';
import { portableCropToMatch, upsampleLike } from './layers/upsample';
import { modelChecks } from './model_checks';
import { countTrainable, ModelIO, registerModel } from './registry';

type T = tf.SymbolicTensor;

/** Low-level (stride-4) projection width: 48, the paper's choice (Chen et al. 2018, Table 1). */
const LOW_CHANNELS = 48;

const Options = z
  .object({
    encoder: encoderOption.default('mobilenet_v2'),
    // 16: the last encoder stage keeps stride 1 (undilated; see the encoders). 8 would need dilated depthwise convs.
    output_stride: z.union([z.literal(16), z.literal(32)]).default(16),
    frozen_stages: frozenStagesOption,
    // The paper's rates at output stride 16; at 32 the map is half as wide, so [3, 6, 9] is the equivalent.
    aspp_rates: z.array(z.number().finite().int().positive()).min(1).default([6, 12, 18]),
    // 128, not the paper's 256: at 256 the ASPP (2.7M params) outweighs the MobileNetV2
    // encoder (1.8M), and ASPP + decoder cost 5.1 GMACs on a 512x512 image against the
    // encoder's 2.4 (7.5 in all; 4.3 at 128, 3.1M params), too slow to train on a 2-core
    // CPU. 128 is LR-ASPP's width over MobileNetV3 (Howard et al. 2019; torchvision lraspp).
    aspp_channels: z.number().finite().int().positive().default(128),
    // null: as aspp_channels.
    decoder_channels: z.number().finite().int().positive().nullable().default(null),
  })
  .strict();

export type DeepLabOptions = z.infer<typeof Options>;

const bn = (x: T, name: string): T => fastBatchNorm({ momentum: 0.9, epsilon: 1e-5, name }).apply(x) as T; // momentum 0.9 = PyTorch's 0.1
const relu = (x: T, name: string): T => tf.layers.reLU({ name }).apply(x) as T;
const decoderWidth = (o: DeepLabOptions) => o.decoder_channels ?? o.aspp_channels;

/**
 * Atrous spatial pyramid pooling. Layers `aspp_b0_*` (1x1), `aspp_b{i}_*` (rates[i-1]),
 * `aspp_gap`, `aspp_pool_*` (image pooling), `aspp_concat`, `aspp_project_conv`
 * (spatial part), `aspp_project_pool_conv` (pooled part), `aspp_project_add|bn|relu`, `aspp_dropout`.
 */
function aspp(x: T, c: number, rates: number[], seed: number): T {
  const branches = [convBnAct(x, c, { kernel: 1, act: 'relu', name: 'aspp_b0', seed })];
  rates.forEach((rate, i) => {
    const name = `aspp_b${i + 1}`;
    const y = atrousConv2D({ filters: c, kernelSize: 3, dilationRate: rate, useBias: false, kernelInitializer: heInit(`${name}_conv`, seed), name: `${name}_conv` }).apply(x) as T;
    branches.push(relu(bn(y, `${name}_bn`), `${name}_relu`));
  });
  let pool = tf.layers.globalAveragePooling2d({ name: 'aspp_gap' }).apply(x) as T;
  pool = tf.layers.reshape({ targetShape: [1, 1, x.shape[3] as number], name: 'aspp_gap_reshape' }).apply(pool) as T;
  pool = convBnAct(pool, c, { kernel: 1, act: 'relu', name: 'aspp_pool', seed });
  const cat = tf.layers.concatenate({ axis: -1, name: 'aspp_concat' }).apply(branches) as T;
  const conv1x1 = (y: T, name: string) => tf.layers.conv2d({ filters: c, kernelSize: 1, useBias: false, kernelInitializer: heInit(name, seed), name }).apply(y) as T;
  // The projection's pooled part, [.,1,1,c], broadcast by the Add layer (header comment).
  let y = tf.layers.add({ name: 'aspp_project_add' }).apply([conv1x1(cat, 'aspp_project_conv'), conv1x1(pool, 'aspp_project_pool_conv')]) as T;
  y = relu(bn(y, 'aspp_project_bn'), 'aspp_project_relu');
  return seededDropout({ rate: 0.1, name: 'aspp_dropout' }).apply(y) as T;
}

export function buildDeepLabV3Plus(o: DeepLabOptions, io: ModelIO): tf.LayersModel {
  const enc = getEncoder(o.encoder);
  const input = tf.input({ shape: [null, null, io.inChannels], name: 'image' });
  const seed = io.seed;
  const f = enc.build(input, { outputStride: o.output_stride, seed, prefix: 'enc' });
  freezeStages(f, o.frozen_stages);
  const high = aspp(f.maps[4], o.aspp_channels, o.aspp_rates, seed);
  const low = convBnAct(f.maps[1], LOW_CHANNELS, { kernel: 1, act: 'relu', name: 'dec_low', seed });
  const up = upsampleLike(high, low, o.output_stride / 4, 'dec_aspp', 'bilinear');
  let x = tf.layers.concatenate({ axis: -1, name: 'dec_concat' }).apply([up, low]) as T;
  // Separable 3x3 convs, depthwise + BN + ReLU then pointwise + BN + ReLU: DeepLab's own
  // decoder (tensorflow/models research/deeplab, split_separable_conv2d with
  // decoder_use_separable_conv; smp uses one separable conv). At 128 + 48 channels a plain
  // 3x3 conv would cost ~8x the weights and MACs of the separable one.
  x = dsConv(x, decoderWidth(o), { name: 'dec_sep1', seed });
  x = dsConv(x, decoderWidth(o), { name: 'dec_sep2', seed });
  x = tf.layers.conv2d({ filters: io.outChannels, kernelSize: 1, kernelInitializer: glorotInit('head', seed), name: 'head' }).apply(x) as T;
  const logits = upsampleLike(x, input, 4, 'out', 'bilinear');
  return tf.model({ inputs: input, outputs: logits, name: 'deeplabv3plus' });
}

export function deeplabParamCount(o: DeepLabOptions, io: ModelIO): number {
  const enc = getEncoder(o.encoder);
  const [ce, c, d, r] = [enc.channels[4], o.aspp_channels, decoderWidth(o), o.aspp_rates.length];
  const asppParams = convBnActParams(ce, c, 1) * 2 + r * convBnActParams(ce, c, 3) + convBnActParams((r + 2) * c, c, 1); // 1x1 and pooling, atrous, projection
  const decoder = convBnActParams(enc.channels[1], LOW_CHANNELS, 1) + dsConvParams(c + LOW_CHANNELS, d) + dsConvParams(d, d) + (d + 1) * io.outChannels;
  return enc.paramCount(io.inChannels) + asppParams + decoder;
}

export function deeplabActivationFloats(o: DeepLabOptions, io: ModelIO, height: number, width: number): number {
  const enc = getEncoder(o.encoder);
  const [c, d, r, os] = [o.aspp_channels, decoderWidth(o), o.aspp_rates.length, o.output_stride];
  const px = (s: number) => sizeAt(height, s) * sizeAt(width, s);
  // Upsampled by `factor` from stride s, before the crop.
  const upPx = (s: number, factor: number) => sizeAt(height, s) * factor * sizeAt(width, s) * factor;
  let n = io.inChannels * height * width + enc.activationFloats(io.inChannels, height, width, { outputStride: os });
  // ASPP: branches, gap + reshape + pooled conv-BN-ReLU + its projection (1 pixel), concat, projection conv, add, BN, ReLU, dropout.
  n += (r + 1) * convBnActFloats(c, px(os)) + 2 * enc.channels[4] + convBnActFloats(c, 1) + c + (r + 1) * c * px(os) + 5 * c * px(os);
  // Decoder at stride 4.
  n += convBnActFloats(LOW_CHANNELS, px(4)) + c * upPx(os, os / 4) + c * px(4) + (c + LOW_CHANNELS) * px(4);
  n += dsConvFloats(c + LOW_CHANNELS, d, px(4)) + dsConvFloats(d, d, px(4)) + io.outChannels * px(4);
  return n + io.outChannels * (upPx(4, 4) + height * width); // x4 upsampled logits, cropped
}

export const deeplabv3plus = registerModel({
  name: 'deeplabv3plus',
  summary: 'DeepLabV3+ (Chen 2018) over MobileNetV2/ResNet: ASPP context plus a stride-4 decoder; scenes and objects at several scales',
  options: Options,
  widthKey: 'model.aspp_channels',
  activationBytes: 17, // bench/memory.ts: engine/memory.ts's calibration table
  build: buildDeepLabV3Plus,
  paramCount: deeplabParamCount,
  activationFloats: deeplabActivationFloats,
  portable: { FastBatchNorm: portableBatchNorm, CropToMatch: portableCropToMatch, AtrousConv2D: portableAtrousConv2D, SeededDropout: portableDropout },
});

const opts = (o: Partial<DeepLabOptions>) => Options.parse(o);
const SMALL: Partial<DeepLabOptions> = { aspp_channels: 8, aspp_rates: [2, 3, 4] };

export const selfTest: SelfTest = {
  ...modelChecks(deeplabv3plus, {
    small: SMALL,
    // /usr/bin/python3 bench/torch_models.py deeplabv3plus --params   prints 3127153
    // (MobileNetV2 encoder 1,811,712; BN weight+bias counted, running stats are buffers).
    torch: { options: {}, io: { inChannels: 3, outChannels: 1, seed: 0 }, params: 3_127_153 },
  }),
  'ResNet encoders: parameter counts equal the PyTorch twin; resnet18 builds and keeps odd sizes at stride 32'() {
    const io = { inChannels: 3, outChannels: 1, seed: 0 };
    // /usr/bin/python3 bench/torch_models.py deeplabv3plus --params --opt encoder=resnet18   prints 13206577
    // /usr/bin/python3 bench/torch_models.py deeplabv3plus --params --opt encoder=resnet34   prints 23314737
    assert.equal(deeplabParamCount(opts({ encoder: 'resnet18' }), io), 13_206_577);
    assert.equal(deeplabParamCount(opts({ encoder: 'resnet34' }), io), 23_314_737);
    const o = opts({ ...SMALL, encoder: 'resnet18', output_stride: 32 });
    const m = buildDeepLabV3Plus(o, { ...io, outChannels: 2 });
    assert.equal(countTrainable(m), deeplabParamCount(o, { ...io, outChannels: 2 }));
    const y = tf.tidy(() => m.predict(tf.zeros([1, 37, 51, 3])) as tf.Tensor);
    assert.deepEqual(y.shape, [1, 37, 51, 2]);
    y.dispose();
    m.dispose();
  },
  'ASPP: dilated branches at the given rates; the pooled projection equals conv1x1 of the concat with the broadcast pooled map'() {
    const o = opts({ ...SMALL, output_stride: 32 });
    const m = buildDeepLabV3Plus(o, { inChannels: 3, outChannels: 2, seed: 4 });
    o.aspp_rates.forEach((r, i) => assert.deepEqual((m.getLayer(`aspp_b${i + 1}_conv`).getConfig() as { dilationRate: number[] }).dilationRate, [r, r]));
    const names = ['aspp_concat', 'aspp_pool_relu', 'aspp_project_add'];
    const sub = tf.model({ inputs: m.inputs, outputs: names.map((n) => m.getLayer(n).output as T) });
    tf.tidy(() => {
      const [cat, pool, sum] = sub.predict(tf.randomNormal([2, 70, 90, 3], 0, 1, 'float32', 6)) as tf.Tensor4D[];
      assert.deepEqual(pool.shape, [2, 1, 1, 8]);
      assert.deepEqual(sum.shape, [2, 3, 3, 8]);
      // The paper's form: broadcast the pooled branch, concat it last, one 1x1 conv.
      const kernel = tf.concat([m.getLayer('aspp_project_conv').getWeights()[0], m.getLayer('aspp_project_pool_conv').getWeights()[0]], 2) as tf.Tensor4D;
      const full = tf.concat([cat, tf.broadcastTo(pool, [2, 3, 3, 8])], -1) as tf.Tensor4D;
      const d = tf.max(tf.abs(tf.sub(tf.conv2d(full, kernel, 1, 'same'), sum))).dataSync()[0];
      assert.ok(d < 1e-4, `difference ${d}`);
    });
    m.dispose();
  },
  async 'options: defaults, decoder width and a config that dumps'() {
    const o = opts({});
    assert.deepEqual(o, { encoder: 'mobilenet_v2', frozen_stages: 0, output_stride: 16, aspp_rates: [6, 12, 18], aspp_channels: 128, decoder_channels: null });
    assert.throws(() => opts({ output_stride: 8 as 16 }));
    assert.throws(() => opts({ encoder: 'vgg16' }));
    const io = { inChannels: 3, outChannels: 1, seed: 0 };
    // /usr/bin/python3 bench/torch_models.py deeplabv3plus --params --opt aspp_channels=256   prints 4670193
    assert.equal(deeplabParamCount(opts({ aspp_channels: 256 }), io), 4_670_193);
    // /usr/bin/python3 bench/torch_models.py deeplabv3plus --params --opt decoder_channels=64 --opt aspp_rates=3,6   prints 2717297
    assert.equal(deeplabParamCount(opts({ decoder_channels: 64, aspp_rates: [3, 6] }), io), 2_717_297);
    const { dumpConfig } = await import('../utils/config');
    const { parseConfig } = await import('../config/resolve');
    assert.match(dumpConfig(parseConfig({ model: { name: 'deeplabv3plus' } })), /decoder_channels: null/);
  },
};

runIfMain(module, selfTest);
