// Conv2D gradient kernels for the wasm backend, computed as forward
// convolutions so they run on XNNPACK. tfjs-backend-wasm 4.22 has no
// Conv2DBackpropFilter at all (training fails) and its Conv2DBackpropInput is a
// plain C loop about 10x slower than the forward Conv2D.
//   dW: conv of x^T by dy^T dilated by the stride (1x1 stride 1: one GEMM);
//       the formulation lives in conv_grads.ts, shared with the webgpu kernel.
//   dx: stride 1 -> conv of dy with the flipped, channel-swapped filter;
//       stride > 1 -> sub-pixel (phase) decomposition, no zero-interleaving.
// Intermediates are made by calling the wasm backend's own kernels directly
// and freed before returning; reshapes are free views of the same buffer.
import * as tf from './tf';
// Registers the stock wasm kernels first, so ours replace them rather than
// being overwritten when the package is imported later.
import '@tensorflow/tfjs-backend-wasm';
import assert from 'node:assert/strict';
import { UserError } from '../utils/errors';
import { SelfTest, runIfMain } from '../utils/self_test';
import { seededValues } from '../utils/rng';
import { KernelArgs, WasmBackendLike, isOurKernel, kernelInput, outputWithViews, replaceKernel } from './wasm_heap';
import { cropHW, filterGradInfo, relError, permute, registerFilterGradKernel, registeredFormulation, withScratch } from './conv_grads';

type Info = tf.TensorInfo;

function convInfoFor(
  kernel: string, xShape: number[], filterShape: number[], strides: unknown, pad: unknown,
  dataFormat: unknown, dimRoundingMode: unknown,
): tf.backend_util.Conv2DInfo {
  if (dataFormat !== undefined && dataFormat !== 'NHWC') {
    throw new UserError(`${kernel} on the wasm backend: dataFormat '${String(dataFormat)}' is not supported, expected 'NHWC'`);
  }
  return filterGradInfo(xShape, filterShape, strides, pad, dataFormat, dimRoundingMode);
}

/**
 * dx for stride 1: a convolution of dy with the spatially flipped filter whose
 * in/out channels are swapped, padded so the output lands on x's grid.
 */
function makeConv2DBackpropInput(fallback: tf.KernelFunc | undefined) {
  return function conv2DBackpropInput(args: KernelArgs): Info {
    const dy = kernelInput(args, 'dy', 'Conv2DBackpropInput');
    const filter = kernelInput(args, 'filter', 'Conv2DBackpropInput');
    const a = args.attrs ?? {};
    // The stock kernel is a slow loop, but it does handle NCHW.
    if (a.dataFormat !== undefined && a.dataFormat !== 'NHWC' && fallback) return fallback(args) as Info;
    const info = convInfoFor('Conv2DBackpropInput', a.inputShape as number[], filter.shape, a.strides, a.pad, a.dataFormat, a.dimRoundingMode);
    const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw, padInfo } = info;
    const { inHeight: h, inWidth: w, outHeight: oh, outWidth: ow, inChannels: ci, outChannels: co } = info;
    const top = kh - 1 - padInfo.top;
    const left = kw - 1 - padInfo.left;
    // Strided convs, and explicit pads wider than the kernel (which would need a
    // negative leading pad here), go through the phase decomposition instead.
    if (sh > 1 || sw > 1 || top < 0 || left < 0) {
      return subPixelBackpropInput(args.backend as WasmBackendLike, dy, filter, info);
    }
    const bottom = h + padInfo.top - oh;
    const right = w + padInfo.left - ow;
    return withScratch('wasm', args.backend as tf.KernelBackend, (s) => {
      // Flipping both spatial axes of a row-major [KH,KW] grid reverses its flat index.
      let f = s.reshape(filter, [kh * kw, ci, co]);
      if (kh * kw > 1) {
        f = reverseTaps(args.backend as WasmBackendLike, f);
        s.adopt(f);
      }
      f = s.reshape(permute(s, f, [0, 2, 1]), [kh, kw, co, ci]);
      // A negative trailing pad means dy's last rows never reach x: crop instead.
      const g = s.conv(dy, f, [1, 1], [[0, 0], [top, Math.max(0, bottom)], [left, Math.max(0, right)], [0, 0]]);
      return cropHW(s, g, h, w);
    });
  };
}

/**
 * Reverses axis 0 of [taps, ci, co] with one block copy per tap. The stock wasm
 * Reverse took 30 ms on a 3x3x256x256 filter, more than the conv it feeds.
 */
function reverseTaps(backend: WasmBackendLike, f: Info): Info {
  const [taps, ci, co] = f.shape;
  const block = ci * co;
  const { out, dst, srcs: [src] } = outputWithViews(backend, f.shape, [f]);
  for (let t = 0; t < taps; t++) dst.set(src.subarray((taps - 1 - t) * block, (taps - t) * block), t * block);
  return out;
}

/**
 * dx for strides > 1 without zero-interleaving dy (which would waste
 * (s^2-1)/s^2 of the MACs). Per axis, with i + top = s*m + r:
 * dx[i] = sum_t dy[m-t] * w[s*t + r]. So one stride-1 conv of dy with a
 * ceil(K/s)-tap filter yields all sh*sw phases r as channels; a transpose
 * interleaves them and a crop drops the `top`/`left` offset.
 */
function subPixelBackpropInput(backend: WasmBackendLike, dy: Info, filter: Info, info: tf.backend_util.Conv2DInfo): Info {
  const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw, padInfo } = info;
  const { batchSize: n, inHeight: h, inWidth: w, outHeight: oh, outWidth: ow, inChannels: ci, outChannels: co } = info;
  const th = Math.ceil(kh / sh);
  const tw = Math.ceil(kw / sw);
  // Filters are small next to activations, so a JS relayout is cheap.
  const src = backend.readSync(filter.dataId) as Float32Array;
  const dst = new Float32Array(th * tw * co * sh * sw * ci);
  let o = 0;
  for (let jh = 0; jh < th; jh++) {
    for (let jw = 0; jw < tw; jw++) {
      for (let c = 0; c < co; c++) {
        for (let rh = 0; rh < sh; rh++) {
          const fh = sh * (th - 1 - jh) + rh;
          for (let rw = 0; rw < sw; rw++) {
            const fw = sw * (tw - 1 - jw) + rw;
            if (fh >= kh || fw >= kw) { o += ci; continue; }
            const base = (fh * kw + fw) * ci * co + c;
            for (let i = 0; i < ci; i++) dst[o++] = src[base + i * co];
          }
        }
      }
    }
  }
  // Phase rows m = 0..mh-1 must cover every i + top < h + top.
  const mh = Math.ceil((h + padInfo.top) / sh);
  const mw = Math.ceil((w + padInfo.left) / sw);
  return withScratch('wasm', backend, (s) => {
    const f = backend.makeOutput([th, tw, co, sh * sw * ci], 'float32', undefined, dst);
    s.adopt(f);
    const z = s.conv(dy, f, [1, 1], [[0, 0], [th - 1, Math.max(0, mh - oh)], [tw - 1, Math.max(0, mw - ow)], [0, 0]]);
    // A 6-D transpose, not DepthToSpace: the wasm DepthToSpace kernel measured
    // ~20x slower than Transpose on the same data (and needs sh == sw).
    const [, zh, zw] = z.shape;
    const zt = permute(s, s.reshape(z, [n, zh, zw, sh, sw, ci]), [0, 1, 3, 2, 4, 5]);
    const d = s.reshape(zt, [n, zh * sh, zw * sw, ci]);
    if (padInfo.top === 0 && padInfo.left === 0) return cropHW(s, d, h, w);
    return s.run('Slice', { x: d }, { begin: [0, padInfo.top, padInfo.left, 0], size: [n, h, w, ci] });
  });
}

/** Installs the XNNPACK-based Conv2D gradient kernels for 'wasm'. Idempotent. */
export function registerWasmGradKernels(): void {
  registerFilterGradKernel('wasm', 'forward');
  // The stock input-gradient kernel stays reachable for NCHW and oversized explicit pads.
  replaceKernel('Conv2DBackpropInput', 'wasm', (stock) => makeConv2DBackpropInput(stock));
}

// ---------------------------------------------------------------------------
// Shared by the self-test, test/wasm_kernels.test.ts and bench/conv_grads.ts.

export interface GradCase {
  n: number; h: number; w: number; cin: number; cout: number; k: number;
  stride: number; pad: 'same' | 'valid';
}

export { seededValues };

/** Gradients of sum(conv2d(x, f) * r) w.r.t. x and f on the current backend. */
export function convGrads(c: GradCase, seed = 1): { dx: Float32Array; df: Float32Array } {
  return tf.tidy(() => {
    const x = tf.tensor4d(seededValues(c.n * c.h * c.w * c.cin, seed), [c.n, c.h, c.w, c.cin]);
    const f = tf.tensor4d(seededValues(c.k * c.k * c.cin * c.cout, seed + 1), [c.k, c.k, c.cin, c.cout]);
    const y = tf.conv2d(x, f, c.stride, c.pad);
    const r = tf.tensor(seededValues(y.size, seed + 2), y.shape);
    const g = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.stride, c.pad), r)));
    const [dx, df] = g([x, f]);
    return { dx: dx.dataSync() as Float32Array, df: df.dataSync() as Float32Array };
  });
}

export { relError };

/** Runs `body` on `name`, then restores whichever backend was active. */
export async function onBackend<T>(name: string, body: () => T): Promise<T> {
  const prev = tf.getBackend();
  await tf.setBackend(name);
  try {
    return body();
  } finally {
    if (prev && prev !== name) await tf.setBackend(prev);
  }
}

/** Compares wasm (with our kernels) against cpu on one case; returns the errors. */
export async function compareWithCpu(c: GradCase, seed = 1): Promise<{ dx: number; df: number }> {
  const ref = await onBackend('cpu', () => convGrads(c, seed));
  registerWasmGradKernels();
  const got = await onBackend('wasm', () => {
    // numTensors sees engine tensors; numDataIds also sees kernel intermediates.
    const before = [tf.memory().numTensors, tf.backend().numDataIds()];
    const out = convGrads(c, seed);
    assert.deepEqual([tf.memory().numTensors, tf.backend().numDataIds()], before, `leak on ${JSON.stringify(c)}`);
    return out;
  });
  return { dx: relError(got.dx, ref.dx), df: relError(got.df, ref.df) };
}

export const selfTest: SelfTest = {
  'register is idempotent and replaces the stock kernels': () => {
    registerWasmGradKernels();
    const f = tf.getKernel('Conv2DBackpropFilter', 'wasm')?.kernelFunc;
    const i = tf.getKernel('Conv2DBackpropInput', 'wasm')?.kernelFunc;
    registerWasmGradKernels();
    assert.equal(registeredFormulation('wasm'), 'forward');
    assert.ok(isOurKernel('Conv2DBackpropInput', 'wasm'));
    assert.equal(tf.getKernel('Conv2DBackpropFilter', 'wasm')?.kernelFunc, f);
    assert.equal(tf.getKernel('Conv2DBackpropInput', 'wasm')?.kernelFunc, i);
  },
};

runIfMain(module, selfTest);
