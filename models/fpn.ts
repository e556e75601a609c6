// Feature Pyramid Network for semantic segmentation, as segmentation_models.pytorch's FPN
// (the semantic branch of Kirillov et al. 2019, "Panoptic Feature Pyramid Networks"):
// 1x1 laterals on the encoder's stride 32, 16, 8 and 4 maps, a top-down pathway (x2
// nearest, add), per level a segmentation block (3x3 conv, norm, ReLU, x2 bilinear,
// repeated down to stride 4), summed, dropout, 1x1 conv to the classes, x4 to the input.
import * as tf from '../backends/tf';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { runIfMain, SelfTest } from '../utils/self_test';
import { ENCODER_NAMES, encoderOption, freezeStages, frozenStagesOption, getEncoder, sizeAt, T } from './encoders/index';
import { fastBatchNorm, portableBatchNorm } from './layers/batch_norm';
import { glorotInit, heInit } from './layers/init';
import { portableDropout, seededDropout } from './layers/seeded_dropout';
import { portableCropToMatch, upsampleLike } from './layers/upsample';
import { modelChecks } from './model_checks';
import { countTrainable, ModelIO, registerModel, tracedActivationFloats } from './registry';

const Options = z
  .object({
    encoder: encoderOption.default('resnet18'),
    frozen_stages: frozenStagesOption,
    // smp: 256 and 128. Halved here: the stride-4 3x3 conv (pyramid -> segmentation
    // channels) costs 9*P*S per stride-4 pixel, 295k MACs at smp's widths, as much as
    // half of ResNet-18 itself; 128/64 cut it by 4 and halve the stride-4 pyramid maps,
    // so training stays workable on a 2-core CPU. Set 256/128 for smp's network.
    pyramid_channels: z.number().finite().int().positive().default(128),
    segmentation_channels: z.number().finite().int().positive().default(64),
    // smp's Dropout2d(0.2): whole channels, as a dropout with noise shape [n, 1, 1, c].
    dropout: z.number().finite().min(0).max(0.9).default(0.2),
  })
  .strict();
type FPNOptions = z.infer<typeof Options>;

// The decoder uses the encoder's last four maps, at strides 4, 8, 16, 32 (fine to coarse).
const LEVELS = [1, 2, 3, 4];
const OUTPUT_STRIDE = 32;

/** 3x3 conv (no bias), batch norm, ReLU. smp uses GroupNorm(32): tfjs has none; batch norm has the same parameters. */
function convBNReLU(x: T, filters: number, name: string, seed: number): T {
  x = tf.layers.conv2d({ filters, kernelSize: 3, padding: 'same', useBias: false, kernelInitializer: heInit(`${name}_conv`, seed), name: `${name}_conv` }).apply(x) as T;
  x = fastBatchNorm({ momentum: 0.9, epsilon: 1e-5, name: `${name}_bn` }).apply(x) as T;
  return tf.layers.reLU({ name: `${name}_relu` }).apply(x) as T;
}

export function buildFPN(o: FPNOptions, io: ModelIO): tf.LayersModel {
  const input = tf.input({ shape: [null, null, io.inChannels], name: 'image' });
  const f = getEncoder(o.encoder).build(input, { outputStride: OUTPUT_STRIDE, seed: io.seed, prefix: 'enc' });
  freezeStages(f, o.frozen_stages);
  const P = o.pyramid_channels;
  const S = o.segmentation_channels;
  // Top-down, coarse to fine: P5 = lateral(C5); Pk = up2(Pk+1) + lateral(Ck).
  const levels = [...LEVELS].reverse();
  const ps: T[] = [];
  for (const i of levels) {
    const s = f.strides[i];
    const lat = tf.layers.conv2d({ filters: P, kernelSize: 1, kernelInitializer: glorotInit(`fpn_lat${s}`, io.seed), name: `fpn_lat${s}` }).apply(f.maps[i]) as T;
    if (!ps.length) ps.push(lat);
    else {
      const up = upsampleLike(ps[ps.length - 1], lat, f.strides[i + 1] / s, `fpn_p${s}`, 'nearest');
      ps.push(tf.layers.add({ name: `fpn_p${s}_add` }).apply([up, lat]) as T);
    }
  }
  // Segmentation blocks: max(n, 1) conv-norm-ReLU, each followed by x2 bilinear (cropped
  // to the next finer P's size) until stride 4; n = 3, 2, 1, 0 for P5..P2.
  const branches = ps.map((p, k) => {
    const s0 = f.strides[levels[k]];
    const n = Math.log2(s0 / f.strides[LEVELS[0]]);
    let x = p;
    for (let j = 0; j < Math.max(n, 1); j++) {
      const name = `seg${s0}_${j}`;
      x = convBNReLU(x, S, name, io.seed);
      if (j < n) x = upsampleLike(x, ps[k + j + 1], 2, name, 'bilinear');
    }
    return x;
  });
  let x = tf.layers.add({ name: 'seg_merge' }).apply(branches) as T;
  // null in the noise shape: the batch size at run time.
  x = seededDropout({ rate: o.dropout, noiseShape: [null, 1, 1, S] as unknown as number[], name: 'seg_dropout' }).apply(x) as T;
  x = tf.layers.conv2d({ filters: io.outChannels, kernelSize: 1, kernelInitializer: glorotInit('head', io.seed), name: 'head' }).apply(x) as T;
  const logits = upsampleLike(x, input, f.strides[LEVELS[0]], 'head', 'bilinear');
  return tf.model({ inputs: input, outputs: logits, name: 'fpn' });
}

export function fpnParamCount(o: FPNOptions, io: ModelIO): number {
  const e = getEncoder(o.encoder);
  const P = o.pyramid_channels;
  const S = o.segmentation_channels;
  const laterals = LEVELS.reduce((n, i) => n + (e.channels[i] + 1) * P, 0);
  // Seven 3x3 conv-norms: the first of each of the four levels from P, three more from S (P5: 2, P4: 1).
  const seg = 4 * (9 * P * S + 2 * S) + 3 * (9 * S * S + 2 * S);
  return e.paramCount(io.inChannels) + laterals + seg + (S + 1) * io.outChannels;
}

/** Floats of every layer output for one h x w sample, the input included. */
export function fpnActivationFloats(o: FPNOptions, io: ModelIO, height: number, width: number): number {
  const e = getEncoder(o.encoder);
  const P = o.pyramid_channels;
  const S = o.segmentation_channels;
  const px = (s: number) => sizeAt(height, s) * sizeAt(width, s);
  // An x2 (or xf) upsampling of a stride-s map before its crop to stride s/f.
  const up = (c: number, s: number, f: number) => c * f * sizeAt(height, s) * f * sizeAt(width, s);
  const strides = [4, 8, 16, 32]; // the encoder's maps 1..4 at output stride 32
  let n = io.inChannels * height * width + e.activationFloats(io.inChannels, height, width, { outputStride: OUTPUT_STRIDE });
  n += P * px(32); // lateral 5
  for (const s of [16, 8, 4]) n += P * px(s) * 3 + up(P, 2 * s, 2); // lateral, upsampled, crop, add
  for (const s0 of strides) {
    const k = Math.log2(s0 / 4);
    let s = s0;
    for (let j = 0; j < Math.max(k, 1); j++) {
      n += 3 * S * px(s); // conv, norm, ReLU
      if (j < k) {
        n += up(S, s, 2) + S * px(s / 2);
        s /= 2;
      }
    }
  }
  n += 2 * S * px(4) + io.outChannels * px(4); // merge, dropout, head
  return n + up(io.outChannels, 4, 4) + io.outChannels * height * width;
}

export const fpn = registerModel({
  name: 'fpn',
  summary: 'FPN (Kirillov 2019, smp): pyramid decoder over a ResNet/MobileNet encoder; multi-scale scenes at stride-4 detail',
  options: Options,
  widthKey: 'model.pyramid_channels',
  activationBytes: 18, // bench/memory.ts: engine/memory.ts's calibration table
  build: buildFPN,
  paramCount: fpnParamCount,
  activationFloats: fpnActivationFloats,
  portable: { FastBatchNorm: portableBatchNorm, CropToMatch: portableCropToMatch, SeededDropout: portableDropout },
});

export const selfTest: SelfTest = {
  ...modelChecks(fpn, {
    small: { pyramid_channels: 8, segmentation_channels: 4 },
    // /usr/bin/python3 bench/torch_models.py fpn --params --classes 1 prints 11706369
    // (ResNet-18 without fc 11,176,512 + laterals 123,392 + segmentation blocks 406,400 + head 65).
    torch: { options: {}, io: { inChannels: 3, outChannels: 1, seed: 0 }, params: 11_706_369 },
  }),
  'ResNet-34: parameter count equals the PyTorch twin'() {
    // /usr/bin/python3 bench/torch_models.py fpn --params --opt encoder=resnet34 prints 21814529.
    assert.equal(fpnParamCount(Options.parse({ encoder: 'resnet34' }), { inChannels: 3, outChannels: 1, seed: 0 }), 21_814_529);
  },
  async 'every other encoder: output size, parameter and activation counts'() {
    const io = { inChannels: 3, outChannels: 3, seed: 2 };
    for (const encoder of ENCODER_NAMES.filter((e) => e !== 'resnet18')) {
      const o = Options.parse({ encoder, pyramid_channels: 8, segmentation_channels: 4 });
      const m = buildFPN(o, io);
      assert.equal(countTrainable(m), fpnParamCount(o, io), `${encoder}: paramCount vs built`);
      const y = tf.tidy(() => m.predict(tf.zeros([1, 37, 51, 3])) as tf.Tensor);
      assert.deepEqual(y.shape, [1, 37, 51, 3], encoder);
      y.dispose();
      const traced = await tracedActivationFloats(m, 37, 51);
      const counted = fpnActivationFloats(o, io, 37, 51);
      assert.ok(Math.abs(counted - traced) <= 0.02 * traced, `${encoder}: counted ${counted}, layers ${traced}`);
      m.dispose();
    }
  },
  'pyramid and segmentation widths, and the stride-4 merge'() {
    const m = buildFPN(Options.parse({ pyramid_channels: 8, segmentation_channels: 4 }), { inChannels: 3, outChannels: 2, seed: 0 });
    for (const s of [32, 16, 8, 4]) assert.equal(m.getLayer(`fpn_lat${s}`).outputShape[3], 8);
    for (const name of ['seg32_2_relu', 'seg16_1_relu', 'seg8_0_relu', 'seg4_0_relu', 'seg_merge']) assert.equal(m.getLayer(name).outputShape[3], 4, name);
    assert.throws(() => m.getLayer('seg4_1_relu')); // P2: one conv, no upsampling
    m.dispose();
  },
};

runIfMain(module, selfTest);
