// MobileNet building blocks (conv-BN-activation, MobileNetV2's inverted residual, the
// depthwise-separable "DSConv" of Fast-SCNN), each with its closed-form parameter count and
// output floats for the models' paramCount and activationFloats. Every conv before a batch
// norm has no bias; every layer is named from the block's name, so weight names are stable.
// 'same' padding throughout: a stride-2 3x3 gives ceil(size/2), as PyTorch's padding=1 does.
import * as tf from '../../backends/tf';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../utils/self_test';
import { fastBatchNorm } from './batch_norm';
import { glorotInit, heInit } from './init';

type T = tf.SymbolicTensor;
export type Act = 'relu' | 'relu6' | 'none';

// momentum 0.9 = PyTorch's 0.1 (as unet_parts).
const bn = (x: T, name: string): T => fastBatchNorm({ momentum: 0.9, epsilon: 1e-5, name }).apply(x) as T;

function activation(x: T, act: Act, name: string): T {
  if (act === 'none') return x;
  return tf.layers.reLU({ ...(act === 'relu6' ? { maxValue: 6 } : {}), name }).apply(x) as T;
}

/** He init before a ReLU, Glorot otherwise (init.ts). */
const initFor = (act: Act, name: string, seed: number) => (act === 'none' ? glorotInit(name, seed) : heInit(name, seed));

/** k x k conv (no bias) -> batch norm -> activation. Layers `${name}_conv`, `_bn`, `_relu`/`_relu6`. */
export function convBnAct(x: T, filters: number, o: { kernel: number; stride?: number; act?: Act; name: string; seed: number }): T {
  const act = o.act ?? 'relu';
  const conv = `${o.name}_conv`;
  x = tf.layers.conv2d({ filters, kernelSize: o.kernel, strides: o.stride ?? 1, padding: 'same', useBias: false, kernelInitializer: initFor(act, conv, o.seed), name: conv }).apply(x) as T;
  x = bn(x, `${o.name}_bn`);
  return activation(x, act, `${o.name}_${act}`);
}

export function convBnActParams(cin: number, filters: number, kernel: number): number {
  return kernel * kernel * cin * filters + 2 * filters; // kernel, gamma, beta
}

/** Output floats of convBnAct per sample; `pixels` = output height x width. */
export function convBnActFloats(filters: number, pixels: number, act: Act = 'relu'): number {
  return (act === 'none' ? 2 : 3) * filters * pixels;
}

/** 3x3 depthwise (no bias) -> batch norm -> activation. Layers `${name}`, `${name}_bn`, `${name}_relu`/`_relu6`. */
export function depthwiseBnAct(x: T, o: { stride?: number; act?: Act; name: string; seed: number }): T {
  const act = o.act ?? 'relu';
  x = tf.layers.depthwiseConv2d({ kernelSize: 3, strides: o.stride ?? 1, padding: 'same', useBias: false, depthwiseInitializer: initFor(act, o.name, o.seed), name: o.name }).apply(x) as T;
  x = bn(x, `${o.name}_bn`);
  return activation(x, act, `${o.name}_${act}`);
}

export function depthwiseBnActParams(channels: number): number {
  return 9 * channels + 2 * channels;
}

/** Output size of a 'same' conv of this stride: ceil(size / stride). */
export const strided = (size: number, stride: number) => Math.ceil(size / stride);

/**
 * MobileNetV2 inverted residual (Sandler et al. 2018, torchvision's InvertedResidual):
 * 1x1 expand to in*expand channels + BN + ReLU6 (none when expand is 1), 3x3 depthwise
 * (stride) + BN + ReLU6, linear 1x1 project + BN; the input is added when the stride is 1
 * and the channel count is kept. Layers `${name}_expand[_bn|_relu6]`, `_dw[_bn|_relu6]`,
 * `_project[_bn]`, `_add`.
 */
export function invertedResidual(x: T, out: number, o: { expand: number; stride: number; name: string; seed: number }): T {
  const cin = x.shape[3] as number;
  const input = x;
  if (o.expand !== 1) x = convBnAct(x, cin * o.expand, { kernel: 1, act: 'relu6', name: `${o.name}_expand`, seed: o.seed });
  x = depthwiseBnAct(x, { stride: o.stride, act: 'relu6', name: `${o.name}_dw`, seed: o.seed });
  const project = `${o.name}_project`;
  x = tf.layers.conv2d({ filters: out, kernelSize: 1, useBias: false, kernelInitializer: glorotInit(project, o.seed), name: project }).apply(x) as T;
  x = bn(x, `${project}_bn`);
  if (o.stride === 1 && cin === out) x = tf.layers.add({ name: `${o.name}_add` }).apply([input, x]) as T;
  return x;
}

export function invertedResidualParams(cin: number, out: number, expand: number): number {
  const hidden = cin * expand;
  return (expand !== 1 ? convBnActParams(cin, hidden, 1) : 0) + depthwiseBnActParams(hidden) + convBnActParams(hidden, out, 1);
}

/** Output floats of invertedResidual per sample; pixelsIn/pixelsOut = input/output height x width. */
export function invertedResidualFloats(cin: number, out: number, expand: number, stride: number, pixelsOut: number, pixelsIn: number): number {
  const hidden = cin * expand;
  const residual = stride === 1 && cin === out ? out * pixelsOut : 0;
  return (expand !== 1 ? 3 * hidden * pixelsIn : 0) + 3 * hidden * pixelsOut + 2 * out * pixelsOut + residual;
}

/**
 * Depthwise-separable conv, Fast-SCNN's "DSConv" (MobileNetV1's block): 3x3 depthwise
 * (stride) + BN + ReLU, 1x1 pointwise + BN + ReLU. Layers `${name}_dw[_bn|_relu]`, `${name}_pw_*`.
 */
export function dsConv(x: T, out: number, o: { stride?: number; name: string; seed: number }): T {
  x = depthwiseBnAct(x, { stride: o.stride, act: 'relu', name: `${o.name}_dw`, seed: o.seed });
  return convBnAct(x, out, { kernel: 1, act: 'relu', name: `${o.name}_pw`, seed: o.seed });
}

export function dsConvParams(cin: number, out: number): number {
  return depthwiseBnActParams(cin) + convBnActParams(cin, out, 1);
}

/** Output floats of dsConv per sample; `pixels` = output height x width. */
export function dsConvFloats(cin: number, out: number, pixels: number): number {
  return 3 * cin * pixels + 3 * out * pixels;
}

// ---------------------------------------------------------------------------

/** A one-block model on [h, w, cin] inputs of any size, for the checks. */
function blockModel(cin: number, block: (x: T) => T): tf.LayersModel {
  const input = tf.input({ shape: [null, null, cin], name: 'image' });
  return tf.model({ inputs: input, outputs: block(input) });
}

const trainable = (m: tf.LayersModel) => m.trainableWeights.reduce((s, w) => s + (w.shape as number[]).reduce((a, b) => a * b, 1), 0);

async function outputFloats(m: tf.LayersModel, h: number, w: number): Promise<number> {
  const { tracedActivationFloats } = await import('../registry');
  return (await tracedActivationFloats(m, h, w)) - (m.inputs[0].shape[3] as number) * h * w; // the input layer is not the block's
}

export const selfTest: SelfTest = {
  async 'convBnAct: parameters, floats and output size (stride 1 and 2, odd sizes)'() {
    for (const [cin, f, k, s, act] of [[3, 8, 3, 2, 'relu'], [5, 4, 1, 1, 'relu6'], [4, 6, 3, 1, 'none']] as [number, number, number, number, Act][]) {
      const m = blockModel(cin, (x) => convBnAct(x, f, { kernel: k, stride: s, act, name: 'c', seed: 1 }));
      assert.equal(trainable(m), convBnActParams(cin, f, k));
      const y = tf.tidy(() => m.predict(tf.ones([2, 13, 8, cin])) as tf.Tensor);
      assert.deepEqual(y.shape, [2, strided(13, s), strided(8, s), f]);
      if (act === 'relu6') assert.ok(y.max().dataSync()[0] <= 6);
      y.dispose();
      assert.equal(await outputFloats(m, 13, 8), convBnActFloats(f, strided(13, s) * strided(8, s), act));
      m.dispose();
    }
  },
  async 'invertedResidual: parameters, floats, residual only at stride 1 with kept channels'() {
    for (const [cin, out, e, s] of [[8, 8, 6, 1], [8, 12, 6, 2], [8, 8, 1, 1], [6, 8, 1, 1], [8, 8, 4, 2]]) {
      const m = blockModel(cin, (x) => invertedResidual(x, out, { expand: e, stride: s, name: 'ir', seed: 2 }));
      const what = `${cin}->${out} expand ${e} stride ${s}`;
      assert.equal(trainable(m), invertedResidualParams(cin, out, e), what);
      assert.equal(m.layers.some((l) => l.name === 'ir_add'), s === 1 && cin === out, what);
      assert.equal(m.layers.some((l) => l.name === 'ir_expand_conv'), e !== 1, what);
      assert.equal((m.getLayer('ir_dw_relu6') as unknown as { maxValue: number }).maxValue, 6);
      const y = tf.tidy(() => m.predict(tf.ones([1, 11, 6, cin])) as tf.Tensor);
      assert.deepEqual(y.shape, [1, strided(11, s), strided(6, s), out], what);
      y.dispose();
      assert.equal(await outputFloats(m, 11, 6), invertedResidualFloats(cin, out, e, s, strided(11, s) * strided(6, s), 66), what);
      m.dispose();
    }
  },
  async 'dsConv: parameters, floats and output size'() {
    for (const [cin, out, s] of [[4, 6, 2], [6, 6, 1]]) {
      const m = blockModel(cin, (x) => dsConv(x, out, { stride: s, name: 'ds', seed: 3 }));
      assert.equal(trainable(m), dsConvParams(cin, out));
      assert.deepEqual(m.layers.map((l) => l.name), ['image', 'ds_dw', 'ds_dw_bn', 'ds_dw_relu', 'ds_pw_conv', 'ds_pw_bn', 'ds_pw_relu']);
      const y = tf.tidy(() => m.predict(tf.ones([1, 9, 14, cin])) as tf.Tensor);
      assert.deepEqual(y.shape, [1, strided(9, s), strided(14, s), out]);
      y.dispose();
      assert.equal(await outputFloats(m, 9, 14), dsConvFloats(cin, out, strided(9, s) * strided(14, s)));
      m.dispose();
    }
  },
  'the same seed gives the same weights, another seed others'() {
    const k = (seed: number) => {
      const m = blockModel(4, (x) => invertedResidual(x, 4, { expand: 2, stride: 1, name: 'ir', seed }));
      const w = Array.from(m.getLayer('ir_dw').getWeights()[0].dataSync());
      m.dispose();
      return w;
    };
    assert.deepEqual(k(1), k(1));
    assert.notDeepEqual(k(1), k(2));
  },
};

runIfMain(module, selfTest);
