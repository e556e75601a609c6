// Gradients of depthwise convolution on wasm: tfjs-backend-wasm 4.22 has neither
// DepthwiseConv2dNativeBackpropFilter nor ...BackpropInput, so a depthwise layer
// (MobileNet-style encoders, separable convolutions) could not train there. Here both
// are one JavaScript pass over the wasm heap, for any stride, padding, channel
// multiplier and dilation. (tfjs's gradient itself refuses dilations > 1.)
import * as tf from './tf';
import '@tensorflow/tfjs-backend-wasm';
import assert from 'node:assert/strict';
import { SelfTest, runIfMain } from '../utils/self_test';
import { seededValues } from '../utils/rng';
import { KernelArgs, WasmBackendLike, kernelInput, outputWithViews, replaceKernel } from './wasm_heap';
import { withScratch } from './conv_grads';

type Info = tf.TensorInfo;

function depthwiseInfo(xShape: number[], filterShape: number[], a: tf.NamedAttrMap): tf.backend_util.Conv2DInfo {
  return tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number], filterShape as [number, number, number, number],
    a.strides as number | [number, number], (a.dilations ?? 1) as number | [number, number], a.pad as 'same' | 'valid' | number,
    a.dimRoundingMode as 'floor' | 'round' | 'ceil' | undefined, true);
}

/**
 * Visits every (output pixel, tap) that reads an input pixel: `fn(xBase, dyBase, fBase)`,
 * the offsets of its channel 0 in x, dy and the filter. Both gradients are sums over the
 * channels (and multipliers) at these offsets; the callers loop over channels inline, as
 * a call per channel made both kernels 5x slower.
 */
function forEachTap(info: tf.backend_util.Conv2DInfo, fn: (xBase: number, dyBase: number, fBase: number) => void): void {
  const { batchSize: n, inHeight: h, inWidth: w, inChannels: c, outHeight: oh, outWidth: ow, outChannels: co } = info;
  const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw, dilationHeight: dh, dilationWidth: dw, padInfo } = info;
  for (let b = 0; b < n; b++) {
    for (let r = 0; r < oh; r++) {
      for (let q = 0; q < ow; q++) {
        const dyBase = ((b * oh + r) * ow + q) * co;
        for (let i = 0; i < kh; i++) {
          const ir = r * sh + i * dh - padInfo.top;
          if (ir < 0 || ir >= h) continue;
          for (let j = 0; j < kw; j++) {
            const jc = q * sw + j * dw - padInfo.left;
            if (jc < 0 || jc >= w) continue;
            fn(((b * h + ir) * w + jc) * c, dyBase, (i * kw + j) * co);
          }
        }
      }
    }
  }
}

/** dFilter[kh,kw,c,m] = sum x[n, ih, iw, c] * dy[n, oh, ow, c*M + m]. */
function depthwiseBackpropFilter(args: KernelArgs): Info {
  const x = kernelInput(args, 'x', 'DepthwiseConv2dNativeBackpropFilter');
  const dy = kernelInput(args, 'dy', 'DepthwiseConv2dNativeBackpropFilter');
  const a = args.attrs ?? {};
  const filterShape = a.filterShape as number[];
  const info = depthwiseInfo(x.shape, filterShape, a);
  const { out, dst, srcs: [xv, dyv] } = outputWithViews(args.backend as WasmBackendLike, filterShape, [x, dy]);
  dst.fill(0);
  const c = info.inChannels;
  const mult = info.outChannels / c;
  forEachTap(info, (xb, dyb, fb) => {
    if (mult === 1) for (let ch = 0; ch < c; ch++) dst[fb + ch] += xv[xb + ch] * dyv[dyb + ch];
    else for (let ch = 0; ch < c; ch++) for (let m = 0; m < mult; m++) dst[fb + ch * mult + m] += xv[xb + ch] * dyv[dyb + ch * mult + m];
  });
  return out;
}

/** dx[n, ih, iw, c] = sum dy[n, oh, ow, c*M + m] * filter[kh, kw, c, m] over the taps reading it. */
function depthwiseBackpropInput(args: KernelArgs): Info {
  const dy = kernelInput(args, 'dy', 'DepthwiseConv2dNativeBackpropInput');
  const filter = kernelInput(args, 'filter', 'DepthwiseConv2dNativeBackpropInput');
  const a = args.attrs ?? {};
  const inputShape = a.inputShape as number[];
  const info = depthwiseInfo(inputShape, filter.shape, a);
  const viaForward = backpropInputViaForward(args.backend as WasmBackendLike, dy, filter, info);
  if (viaForward) return viaForward;
  const { out, dst, srcs: [dyv, fv] } = outputWithViews(args.backend as WasmBackendLike, inputShape, [dy, filter]);
  dst.fill(0);
  const c = info.inChannels;
  const mult = info.outChannels / c;
  forEachTap(info, (xb, dyb, fb) => {
    if (mult === 1) for (let ch = 0; ch < c; ch++) dst[xb + ch] += dyv[dyb + ch] * fv[fb + ch];
    else for (let ch = 0; ch < c; ch++) for (let m = 0; m < mult; m++) dst[xb + ch] += dyv[dyb + ch * mult + m] * fv[fb + ch * mult + m];
  });
  return out;
}

/**
 * dx at stride 1 (most depthwise layers): the forward depthwise convolution of dy with the
 * spatially flipped filter, on XNNPACK, padded so the output lands on x's grid; ~3x faster
 * than the pass over the heap (DeepLabV3+ at 128x4: 240 -> 69 ms per step). Null where
 * that does not apply (strides, dilations, channel multipliers): the heap pass does those.
 */
function backpropInputViaForward(backend: WasmBackendLike, dy: Info, filter: Info, info: tf.backend_util.Conv2DInfo): Info | null {
  const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw, dilationHeight: dh, dilationWidth: dw, padInfo } = info;
  const { inHeight: h, inWidth: w, outHeight: oh, outWidth: ow, inChannels: c, outChannels: co } = info;
  const top = kh - 1 - padInfo.top;
  const left = kw - 1 - padInfo.left;
  const bottom = h - oh - top + kh - 1;
  const right = w - ow - left + kw - 1;
  if (sh !== 1 || sw !== 1 || dh !== 1 || dw !== 1 || co !== c || Math.min(top, left, bottom, right) < 0) return null;
  // Flipping both spatial axes of a row-major [KH, KW] grid reverses its flat tap index.
  const src = backend.readSync(filter.dataId) as Float32Array;
  const flipped = new Float32Array(src.length);
  const taps = kh * kw;
  for (let t = 0; t < taps; t++) flipped.set(src.subarray((taps - 1 - t) * c, (taps - t) * c), t * c);
  return withScratch('wasm', backend as unknown as tf.KernelBackend, (s) => {
    const f = backend.makeOutput([kh, kw, c, 1], 'float32', undefined, flipped);
    s.adopt(f);
    return s.run('DepthwiseConv2dNative', { x: dy, filter: f }, { strides: [1, 1], pad: [[0, 0], [top, bottom], [left, right], [0, 0]], dilations: [1, 1], dataFormat: 'NHWC', dimRoundingMode: undefined });
  });
}

export function registerDepthwiseGrads(): void {
  replaceKernel('DepthwiseConv2dNativeBackpropFilter', 'wasm', () => depthwiseBackpropFilter);
  replaceKernel('DepthwiseConv2dNativeBackpropInput', 'wasm', () => depthwiseBackpropInput);
}

export const selfTest: SelfTest = {
  async 'both gradients equal the cpu reference: strides, padding, channel multipliers, odd sizes, batch 1-3'() {
    const { initBackend } = await import('./index');
    const cases: Array<{ n: number; h: number; w: number; c: number; mult: number; k: number; stride: number; pad: 'same' | 'valid' }> = [
      { n: 1, h: 9, w: 7, c: 3, mult: 1, k: 3, stride: 1, pad: 'same' },
      { n: 2, h: 8, w: 9, c: 6, mult: 1, k: 3, stride: 1, pad: 'valid' }, // the forward-convolution path, unpadded
      { n: 3, h: 7, w: 10, c: 4, mult: 1, k: 5, stride: 1, pad: 'same' },
      { n: 2, h: 8, w: 11, c: 4, mult: 2, k: 3, stride: 2, pad: 'same' },
      { n: 3, h: 10, w: 9, c: 2, mult: 1, k: 5, stride: 2, pad: 'valid' },
      { n: 2, h: 6, w: 6, c: 5, mult: 3, k: 1, stride: 1, pad: 'valid' },
    ];
    const grads = (c: typeof cases[number]) => tf.tidy(() => {
      const x = tf.tensor4d(seededValues(c.n * c.h * c.w * c.c, 1), [c.n, c.h, c.w, c.c]);
      const f = tf.tensor4d(seededValues(c.k * c.k * c.c * c.mult, 2), [c.k, c.k, c.c, c.mult]);
      const y = tf.depthwiseConv2d(x, f, c.stride, c.pad);
      const dy = tf.tensor(seededValues(y.size, 3), y.shape);
      const loss = (a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(tf.depthwiseConv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.stride, c.pad), dy));
      return tf.grads(loss)([x, f]).map((g) => Float32Array.from(g.dataSync()));
    });
    for (const c of cases) {
      await initBackend('wasm');
      const got = grads(c);
      await initBackend('cpu');
      const want = grads(c);
      got.forEach((g, i) => {
        let err = 0;
        g.forEach((v, j) => { err = Math.max(err, Math.abs(v - want[i][j])); });
        assert.ok(err <= 1e-4, `${JSON.stringify(c)} ${i ? 'dFilter' : 'dx'}: max diff ${err}`);
      });
    }
  },
};

runIfMain(module, selfTest);
