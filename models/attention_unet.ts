// Attention U-Net (Oktay et al. 2018, "Attention U-Net: Learning Where to Look for the
// Pancreas"): unet.ts's encoder and decoder (same parts, widths and options) with an
// additive attention gate on every skip connection before the concat. As in the widely
// used PyTorch implementations (LeeJunHyun/Image_Segmentation's Attention_block), the
// gating signal g is the decoder map after x2 upsampling and CropToMatch, i.e. at the
// skip's resolution:
//   psi = sigmoid(BN(conv1x1(ReLU(BN(W_g g) + BN(W_x skip)))))   (1 channel)
//   gated = skip * psi                                           (broadcast over channels)
//   DoubleConv(concat[gated, up])
// with F_int = skip channels / 2. Every layer is stock tfjs except FastBatchNorm and
// CropToMatch, which export replaces (see `portable`): tfjs's Multiply merge layer
// broadcasts the [.,h,w,1] map against [.,h,w,C] (its output shape rule and tf.mul both
// broadcast; checked below), so no project layer is needed for the gate.
// PyTorch twin: bench/torch_models/attention_unet.py; with its weights copied in (eval
// mode, each up_mode, with and without BN) the logits agreed within 1e-7 at 37x51 when
// written (not a self-test: it needs torch). Cost: +3% FLOPs over the U-Net, but a wasm
// training step took ~1.3x its CPU time (base 8, depth 3, 64x64, batch 8): the gates are
// many small layers at the skips' resolution.
import * as tf from '../backends/tf';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../utils/self_test';
import { fastBatchNorm, portableBatchNorm } from './layers/batch_norm';
import { glorotInit, heInit } from './layers/init';
import { DoubleConv, Down, OutConv, Up, UpMode } from './layers/unet_parts';
import { portableCropToMatch } from './layers/upsample';
import { modelChecks } from './model_checks';
import { countTrainable, registerModel } from './registry';
import { levelWidths, unetActivationFloats, unetOptions, UNetOptionsSchema } from './unet';

type T = tf.SymbolicTensor;

export interface AttentionUNetOptions {
  inChannels: number;
  outChannels: number;
  base: number;
  depth: number;
  upMode: UpMode;
  batchNorm: boolean;
  /** Seeds the weight initialisation (training.seed). */
  seed?: number;
}

/** The gate's intermediate width for a skip of `skipChannels`: half, at least 1. */
export function gateWidth(skipChannels: number): number {
  return Math.max(1, Math.floor(skipChannels / 2));
}

const bn = (name: string) => fastBatchNorm({ momentum: 0.9, epsilon: 1e-5, name });

/**
 * Additive attention gate: `g` (the upsampled decoder map) and `skip` have the same
 * height and width. Returns the gated skip and the 1-channel attention map psi in (0, 1).
 * Layers: `${name}_wg[_bn]`, `${name}_wx[_bn]`, `_add`, `_relu`, `_psi[_bn]`, `_sigmoid`, `_gate`.
 */
export function AttentionGate(g: T, skip: T, fInt: number, name: string, batchNorm = true, seed = 0): { gated: T; psi: T } {
  const conv1x1 = (x: T, filters: number, n: string, init: typeof heInit) => {
    const y = tf.layers.conv2d({ filters, kernelSize: 1, useBias: !batchNorm, kernelInitializer: init(n, seed), name: n }).apply(x) as T;
    return batchNorm ? (bn(`${n}_bn`).apply(y) as T) : y;
  };
  const g1 = conv1x1(g, fInt, `${name}_wg`, heInit);
  const x1 = conv1x1(skip, fInt, `${name}_wx`, heInit);
  let a = tf.layers.add({ name: `${name}_add` }).apply([g1, x1]) as T;
  a = tf.layers.reLU({ name: `${name}_relu` }).apply(a) as T;
  // Followed by a sigmoid, not a ReLU: Glorot (init.ts).
  a = conv1x1(a, 1, `${name}_psi`, glorotInit);
  const psi = tf.layers.activation({ activation: 'sigmoid', name: `${name}_sigmoid` }).apply(a) as T;
  const gated = tf.layers.multiply({ name: `${name}_gate` }).apply([skip, psi]) as T;
  return { gated, psi };
}

/**
 * unet_parts.ts's Up with the skip gated: x2 upsampling (or a 2x2 transposed conv), crop
 * to the skip, gate the skip with the cropped map as g, concat [gated skip, up], DoubleConv.
 * Names as Up's (`${name}_up`/`_upconv`, `_crop`, `_concat`, `_conv1`...) plus `${name}_att_*`.
 */
export function AttentionUp(x: T, skip: T, filters: number, name: string, mode: UpMode = 'nearest', batchNorm = true, seed = 0): T {
  return Up(x, skip, filters, name, mode, batchNorm, seed, (up, s) => AttentionGate(up, s, gateWidth(s.shape[3] as number), `${name}_att`, batchNorm, seed).gated);
}

/** Builds an Attention U-Net accepting any input height and width (NHWC). Output: raw logits. */
export function buildAttentionUNet(o: AttentionUNetOptions): tf.LayersModel {
  const ch = levelWidths(o.base, o.depth);
  const input = tf.input({ shape: [null, null, o.inChannels], name: 'image' });
  const seed = o.seed ?? 0;
  let x = DoubleConv(input, ch[0], 'enc0', o.batchNorm, seed);
  const skips: T[] = [];
  for (let i = 1; i <= o.depth; i++) {
    skips.push(x);
    x = Down(x, ch[i], `enc${i}`, o.batchNorm, seed);
  }
  for (let i = o.depth - 1; i >= 0; i--) x = AttentionUp(x, skips[i], ch[i], `dec${i}`, o.upMode, o.batchNorm, seed);
  const logits = OutConv(x, o.outChannels, 'head', seed);
  return tf.model({ inputs: input, outputs: logits, name: 'attention_unet' });
}

/**
 * Trainable parameters, from the definition (as PyTorch counts them: conv weights and
 * biases, batch-norm gamma and beta). Counted here in full rather than as unetParamCount
 * plus the gates: that count assumes batch norm and omits the transposed convs' biases.
 */
export function attentionUNetParamCount(o: Omit<AttentionUNetOptions, 'seed'>): number {
  const ch = levelWidths(o.base, o.depth);
  const perChannel = o.batchNorm ? 2 : 1; // gamma + beta, or the conv's bias
  const dc = (i: number, c: number) => 9 * i * c + 9 * c * c + 2 * perChannel * c;
  const gate = (fg: number, fl: number) => {
    const f = gateWidth(fl);
    return (fg + fl) * f + 2 * perChannel * f + f + perChannel; // W_g, W_x, psi (1 channel)
  };
  let n = dc(o.inChannels, ch[0]);
  for (let i = 1; i <= o.depth; i++) n += dc(ch[i - 1], ch[i]);
  for (let i = 0; i < o.depth; i++) {
    n += dc(ch[i] + ch[i + 1], ch[i]) + gate(ch[i + 1], ch[i]);
    if (o.upMode === 'transpose') n += 4 * ch[i + 1] ** 2 + ch[i + 1]; // 2x2 kernel and bias
  }
  return n + (ch[0] + 1) * o.outChannels;
}

/** Floats of every layer output of one forward pass for one sample (the input included). */
export function attentionUNetActivationFloats(o: Omit<AttentionUNetOptions, 'seed'>, height: number, width: number): number {
  const ch = levelWidths(o.base, o.depth);
  const px = (i: number) => Math.ceil(height / 2 ** i) * Math.ceil(width / 2 ** i);
  // Per gate at the skip's resolution: W_g and W_x (conv[, BN]), add, ReLU at F_int;
  // psi conv[, BN], sigmoid at 1; the gated skip at the skip's width.
  const gate = (i: number) => px(i) * ((o.batchNorm ? 6 : 4) * gateWidth(ch[i]) + (o.batchNorm ? 3 : 2) + ch[i]);
  let n = unetActivationFloats(o, height, width);
  for (let i = 0; i < o.depth; i++) n += gate(i);
  return n;
}

export const attentionUnet = registerModel({
  name: 'attention_unet',
  summary: 'Attention U-Net (Oktay 2018): U-Net whose skips pass additive attention gates; small or faint targets in clutter',
  options: UNetOptionsSchema,
  widthKey: 'model.base',
  activationBytes: 15, // bench/memory.ts: engine/memory.ts's calibration table
  build: (o, io) => buildAttentionUNet({ ...unetOptions(o), ...io }),
  paramCount: (o, io) => attentionUNetParamCount({ ...unetOptions(o), ...io }),
  activationFloats: (o, io, h, w) => attentionUNetActivationFloats({ ...unetOptions(o), ...io }, h, w),
  portable: { FastBatchNorm: portableBatchNorm, CropToMatch: portableCropToMatch },
});

// bench/torch_models.py attention_unet --params --opt up_mode=U --opt batch_norm=B (base 16,
// depth 4, 3 in, 1 class); the gates add 25,056 (BN) to unet.py's 1,226,305.
const TORCH_PARAMS: [UpMode, boolean, number][] = [
  ['nearest', true, 1_251_361],
  ['nearest', false, 1_249_901],
  ['bilinear', true, 1_251_361],
  ['transpose', true, 1_403_265],
  ['transpose', false, 1_401_805],
];

const small = (o: Partial<AttentionUNetOptions> = {}): AttentionUNetOptions => ({ inChannels: 3, outChannels: 2, base: 4, depth: 3, upMode: 'nearest', batchNorm: true, seed: 1, ...o });

/** Sets the moving statistics to seeded non-trivial values, so inference-mode BN is not an identity. */
function perturbStats(m: tf.LayersModel): void {
  let k = 0;
  for (const v of m.weights) if (/moving_(mean|variance)/.test(v.name)) v.write(tf.randomUniform(v.shape as number[], 0.5, 1.5, 'float32', 11 + k++));
}

export const selfTest: SelfTest = {
  ...modelChecks(attentionUnet, {
    small: { base: 4, depth: 2 },
    torch: { options: { base: 16, depth: 4 }, io: { inChannels: 3, outChannels: 1, seed: 0 }, params: 1_251_361 },
  }),
  'tfjs Multiply broadcasts a [.,h,w,1] map over the channels of [.,h,w,C], shape and values'() {
    const a = tf.input({ shape: [null, null, 5] });
    const p = tf.input({ shape: [null, null, 1] });
    const out = tf.layers.multiply().apply([a, p]) as T;
    assert.deepEqual(out.shape, [null, null, null, 5]);
    const m = tf.model({ inputs: [a, p], outputs: out });
    const xa = tf.randomNormal([2, 3, 4, 5], 0, 1, 'float32', 1);
    const xp = tf.randomUniform([2, 3, 4, 1], 0, 1, 'float32', 2);
    const y = m.predict([xa, xp]) as tf.Tensor;
    const want = tf.mul(xa, tf.tile(xp, [1, 1, 1, 5]));
    assert.deepEqual(y.shape, [2, 3, 4, 5]);
    assert.ok(tf.max(tf.abs(tf.sub(y, want))).dataSync()[0] < 1e-7);
    tf.dispose([xa, xp, y, want]);
    m.dispose();
  },
  'psi has 1 channel at each skip resolution, lies in (0, 1), and gates the skip by broadcast'() {
    for (const upMode of ['nearest', 'transpose'] as UpMode[]) {
      // Initial moving statistics (BN near identity): seeded ones can push every W_g + W_x
      // sum below zero at base 4, where F_int is 2, and psi is then one constant.
      const m = buildAttentionUNet(small({ upMode }));
      const names = [0, 1, 2].flatMap((i) => [`enc${i}_relu2`, `dec${i}_att_sigmoid`, `dec${i}_att_gate`]);
      const probe = tf.model({ inputs: m.inputs, outputs: names.map((n) => m.getLayer(n).output as T) });
      const x = tf.randomNormal([2, 37, 51, 3], 0, 1, 'float32', 4);
      for (const training of [false, true]) {
        const outs = probe.apply(x, { training }) as tf.Tensor[];
        for (let i = 0; i < 3; i++) {
          const [skip, psi, gated] = outs.slice(3 * i, 3 * i + 3);
          const at = `level ${i}, ${upMode}, training ${training}`;
          const [h, w] = [Math.ceil(37 / 2 ** i), Math.ceil(51 / 2 ** i)];
          assert.deepEqual(skip.shape, [2, h, w, levelWidths(4, 3)[i]], `skip, ${at}`);
          assert.deepEqual(psi.shape, [2, h, w, 1], `psi, ${at}`);
          assert.deepEqual(gated.shape, skip.shape, `gated, ${at}`);
          const [lo, hi] = [tf.min(psi).dataSync()[0], tf.max(psi).dataSync()[0]];
          assert.ok(lo > 0 && hi < 1 && hi > lo, `psi in [${lo}, ${hi}], ${at}`);
          const d = tf.tidy(() => tf.max(tf.abs(tf.sub(gated, tf.mul(skip, psi)))).dataSync()[0]);
          assert.ok(d < 1e-6, `gated differs from skip * psi by ${d}, ${at}`);
        }
        tf.dispose(outs);
      }
      tf.dispose(x);
      m.dispose();
    }
  },
  'gate widths: F_int is half the skip, concat is [gated skip, up], biases only without batch norm'() {
    const widths = levelWidths(16, 4);
    for (const batchNorm of [true, false]) {
      const m = buildAttentionUNet({ inChannels: 3, outChannels: 1, base: 16, depth: 4, upMode: 'nearest', batchNorm });
      for (let i = 0; i < 4; i++) {
        for (const c of ['wg', 'wx']) assert.equal(m.getLayer(`dec${i}_att_${c}`).outputShape[3], widths[i] / 2, `dec${i} ${c}`);
        assert.equal(m.getLayer(`dec${i}_att_psi`).outputShape[3], 1);
        assert.equal(m.getLayer(`dec${i}_att_gate`).outputShape[3], widths[i]);
        assert.equal(m.getLayer(`dec${i}_concat`).outputShape[3], widths[i] + widths[i + 1]);
        // The concat's first input is the gate's output.
        const inbound = (m.getLayer(`dec${i}_concat`) as unknown as { inboundNodes: { inboundLayers: tf.layers.Layer[] }[] }).inboundNodes[0].inboundLayers;
        assert.deepEqual(inbound.map((l) => l.name), [`dec${i}_att_gate`, `dec${i}_crop`]);
        for (const c of ['wg', 'wx', 'psi']) {
          assert.equal(m.getLayer(`dec${i}_att_${c}`).getWeights().length, batchNorm ? 1 : 2, `dec${i} ${c} bias`);
          assert.equal(m.layers.some((l) => l.name === `dec${i}_att_${c}_bn`), batchNorm);
        }
      }
      m.dispose();
    }
  },
  'parameter count equals the built model and the PyTorch twin for each up_mode and batch_norm'() {
    for (const [upMode, batchNorm, torch] of TORCH_PARAMS) {
      const o = { inChannels: 3, outChannels: 1, base: 16, depth: 4, upMode, batchNorm };
      const m = buildAttentionUNet(o);
      assert.equal(countTrainable(m), torch, `${upMode} bn=${batchNorm}: built vs PyTorch`);
      assert.equal(attentionUNetParamCount(o), torch, `${upMode} bn=${batchNorm}: paramCount`);
      m.dispose();
    }
    for (const base of [1, 3]) {
      const o = small({ base, upMode: 'transpose', batchNorm: false });
      const m = buildAttentionUNet(o);
      assert.equal(attentionUNetParamCount(o), countTrainable(m), `base ${base}`);
      m.dispose();
    }
  },
  async 'activation floats equal the built layers exactly, each mode, with and without batch norm'() {
    const { tracedActivationFloats } = await import('./registry');
    for (const [upMode, batchNorm] of [['nearest', true], ['transpose', false], ['bilinear', false]] as [UpMode, boolean][]) {
      const o = small({ upMode, batchNorm });
      const m = buildAttentionUNet(o);
      for (const [h, w] of [[37, 51], [32, 32]]) assert.equal(attentionUNetActivationFloats(o, h, w), await tracedActivationFloats(m, h, w), `${upMode} bn=${batchNorm} ${h}x${w}`);
      m.dispose();
    }
  },
  'the same seed gives the same gate weights, another seed others'() {
    const [a, b, c] = [1, 1, 2].map((seed) => buildAttentionUNet(small({ seed })));
    const k = (m: tf.LayersModel, n: string) => Array.from(m.getLayer(n).getWeights()[0].dataSync());
    assert.deepEqual(k(a, 'dec1_att_wg'), k(b, 'dec1_att_wg'));
    assert.notDeepEqual(k(a, 'dec1_att_wg'), k(c, 'dec1_att_wg'));
    assert.notDeepEqual(k(a, 'dec1_att_wg').slice(0, 4), k(a, 'dec1_att_wx').slice(0, 4));
    [a, b, c].forEach((m) => m.dispose());
  },
  async 'the portable export has only stock layers (Multiply included) and the same outputs at an odd size'() {
    const { portableModel } = await import('../engine/portable');
    const { isProjectLayer } = await import('./layers/custom_layers');
    const m = buildAttentionUNet(small());
    perturbStats(m);
    const p = await portableModel(m, [30, 45], attentionUnet);
    const classes = new Set(p.layers.map((l) => l.getClassName()));
    for (const c of classes) assert.ok(!isProjectLayer(c), `${c} left in the portable model`);
    assert.ok(classes.has('Multiply') && classes.has('Cropping2D') && classes.has('BatchNormalization'));
    const x = tf.randomNormal([2, 30, 45, 3], 0, 1, 'float32', 5);
    const d = tf.tidy(() => tf.max(tf.abs(tf.sub(m.predict(x) as tf.Tensor, p.predict(x) as tf.Tensor))).dataSync()[0]);
    assert.ok(d < 1e-5, `max difference ${d}`);
    tf.dispose(x);
    m.dispose();
    p.dispose();
  },
};

runIfMain(module, selfTest);
