// Gradients of max pooling and nearest upsampling. On wasm the stock kernels are
// generic C loops: in a U-Net training step at 128x128 batch 4 they took ~60 ms
// (MaxPoolGrad) and ~50 ms (ResizeNearestNeighborGrad), about 8% of the step, for
// work that is one read of the inputs and one write of the output; here they are a
// JavaScript pass over the heap, or XNNPACK's average pooling for whole-factor
// upsampling. On cpu, tfjs's nearest-upsampling gradient is wrong for batches > 1
// (see makeResizeNearestNeighborGrad) and is replaced too.
import * as tf from './tf';
import '@tensorflow/tfjs-backend-wasm';
import assert from 'node:assert/strict';
import { SelfTest, runIfMain } from '../utils/self_test';
import { seededValues } from '../utils/rng';
import { KernelArgs, WasmBackendLike, kernelInput, outputWithViews, replaceKernel } from './wasm_heap';

type Info = tf.TensorInfo;

/**
 * dx of 2-D max pooling: each window's dy goes to the first maximum of the
 * window in row-major order, as in tfjs's reference (cpu) kernel; windows
 * overlapping the padding only look at real pixels.
 */
export function makeMaxPoolGrad(fallback: tf.KernelFunc | undefined) {
  return function maxPoolGrad(args: KernelArgs): Info {
    const dy = kernelInput(args, 'dy', 'MaxPoolGrad');
    const x = kernelInput(args, 'input', 'MaxPoolGrad');
    const a = args.attrs ?? {};
    const info = tf.backend_util.computePool2DInfo(x.shape as [number, number, number, number],
      a.filterSize as [number, number] | number, a.strides as [number, number] | number, 1,
      a.pad as 'valid' | 'same' | number, a.dimRoundingMode as 'floor' | 'round' | 'ceil' | undefined);
    if (x.dtype !== 'float32' || dy.dtype !== 'float32') {
      if (fallback) return fallback(args as Parameters<tf.KernelFunc>[0]) as Info;
      throw new Error(`MaxPoolGrad on wasm: ${x.dtype} input is not supported`);
    }
    const { batchSize: n, inHeight: h, inWidth: w, outHeight: oh, outWidth: ow, inChannels: c } = info;
    const { strideHeight: sh, strideWidth: sw, filterHeight: fh, filterWidth: fw, padInfo } = info;
    const { out, dst, srcs: [xv, dyv] } = outputWithViews(args.backend as WasmBackendLike, x.shape, [x, dy]);
    dst.fill(0);
    let o = 0;
    for (let b = 0; b < n; b++) {
      const xb = b * h * w * c;
      for (let r = 0; r < oh; r++) {
        const r0 = Math.max(0, r * sh - padInfo.top);
        const r1 = Math.min(h, r * sh - padInfo.top + fh);
        for (let q = 0; q < ow; q++) {
          const q0 = Math.max(0, q * sw - padInfo.left);
          const q1 = Math.min(w, q * sw - padInfo.left + fw);
          if (r1 - r0 === 2 && q1 - q0 === 2) {
            // The U-Net's 2x2 window, unrolled: 10 vs 14 ms on [4,128,128,16].
            const k00 = xb + (r0 * w + q0) * c;
            const k10 = k00 + w * c;
            for (let ch = 0; ch < c; ch++, o++) {
              let at = -1;
              let best = -Infinity;
              if (xv[k00 + ch] > best) { best = xv[k00 + ch]; at = k00 + ch; }
              if (xv[k00 + c + ch] > best) { best = xv[k00 + c + ch]; at = k00 + c + ch; }
              if (xv[k10 + ch] > best) { best = xv[k10 + ch]; at = k10 + ch; }
              if (xv[k10 + c + ch] > best) at = k10 + c + ch;
              if (at >= 0) dst[at] += dyv[o];
            }
            continue;
          }
          for (let ch = 0; ch < c; ch++, o++) {
            let best = -Infinity;
            let at = -1;
            for (let i = r0; i < r1; i++) {
              for (let j = q0; j < q1; j++) {
                const k = xb + (i * w + j) * c + ch;
                if (xv[k] > best) { best = xv[k]; at = k; }
              }
            }
            if (at >= 0) dst[at] += dyv[o];
          }
        }
      }
    }
    return out;
  };
}

/** Source index along one axis for each output index, as tfjs's nearest-neighbour resize picks it. */
export function nearestSources(inSize: number, outSize: number, alignCorners: boolean, halfPixelCenters: boolean): Int32Array {
  const effIn = alignCorners && outSize > 1 ? inSize - 1 : inSize;
  const effOut = alignCorners && outSize > 1 ? outSize - 1 : outSize;
  const ratio = effIn / effOut;
  const src = new Int32Array(outSize);
  for (let r = 0; r < outSize; r++) {
    const frac = halfPixelCenters ? ratio * (r + 0.5) : ratio * r;
    const nearest = Math.min(inSize - 1, alignCorners ? Math.round(frac) : Math.floor(frac));
    src[r] = halfPixelCenters ? Math.max(0, nearest) : nearest;
  }
  return src;
}

/** dx of nearest resizing: each dy pixel added to the pixel the forward pass copied it from. */
export function resizeNearestAdjoint(dy: Float32Array, dyShape: number[], imagesShape: number[], alignCorners: boolean, halfPixelCenters: boolean, dx: Float32Array): void {
  const [n, h, w, c] = imagesShape;
  const [, dh, dw] = dyShape;
  const rows = nearestSources(h, dh, alignCorners, halfPixelCenters);
  const cols = nearestSources(w, dw, alignCorners, halfPixelCenters);
  dx.fill(0);
  let s = 0;
  for (let b = 0; b < n; b++) {
    for (let r = 0; r < dh; r++) {
      const to = (b * h + rows[r]) * w * c;
      for (let q = 0; q < dw; q++) {
        const d = to + cols[q] * c;
        for (let ch = 0; ch < c; ch++) dx[d + ch] += dy[s++];
      }
    }
  }
}

/**
 * Sums of fh x fw blocks: the nearest-upsampling gradient for whole factors, where
 * each input pixel was copied to one block (with or without half-pixel centres).
 * XNNPACK's average pooling times fh*fw: ~3.5 ms for a [4,128,128,32] dy against ~12 ms
 * for the loop in resizeNearestAdjoint.
 */
function blockSums(backend: WasmBackendLike, dy: Info, fh: number, fw: number): Info {
  const avgPool = tf.getKernel('AvgPool', 'wasm');
  if (!avgPool) throw new Error('ResizeNearestNeighborGrad on wasm: AvgPool kernel missing');
  const out = avgPool.kernelFunc({ inputs: { x: dy }, backend, attrs: { filterSize: [fh, fw], strides: [fh, fw], pad: 'valid' } }) as Info;
  const v = backend.typedArrayFromHeap(out) as Float32Array;
  const k = fh * fw;
  for (let i = 0; i < v.length; i++) v[i] *= k;
  return out;
}

/**
 * ResizeNearestNeighborGrad for wasm and cpu. On wasm it replaces a slow C loop;
 * on cpu it fixes tfjs-backend-cpu 4.22, whose kernel reads dy at the images'
 * batch offset and so gives wrong gradients for every image after the first.
 */
export function makeResizeNearestNeighborGrad(backendName: 'wasm' | 'cpu') {
  return function resizeNearestNeighborGrad(args: KernelArgs): Info {
    const images = kernelInput(args, 'images', 'ResizeNearestNeighborGrad');
    const dy = kernelInput(args, 'dy', 'ResizeNearestNeighborGrad');
    const align = Boolean(args.attrs?.alignCorners);
    const half = Boolean(args.attrs?.halfPixelCenters);
    if (backendName === 'wasm') {
      const [, h, w] = images.shape;
      const [, dh, dw] = dy.shape;
      if (!align && dh % h === 0 && dw % w === 0) return blockSums(args.backend as WasmBackendLike, dy, dh / h, dw / w);
      const { out, dst, srcs: [dyv] } = outputWithViews(args.backend as WasmBackendLike, images.shape, [dy]);
      resizeNearestAdjoint(dyv, dy.shape, images.shape, align, half, dst);
      return out;
    }
    const cpu = args.backend as tf.KernelBackend & { data: { get(id: object): { values: Float32Array } }; makeTensorInfo(shape: number[], dtype: 'float32', values: Float32Array): Info };
    const dx = new Float32Array(tf.util.sizeFromShape(images.shape));
    resizeNearestAdjoint(cpu.data.get(dy.dataId).values, dy.shape, images.shape, align, half, dx);
    return cpu.makeTensorInfo(images.shape, 'float32', dx);
  };
}

/** Replaces wasm's MaxPoolGrad and ResizeNearestNeighborGrad and cpu's ResizeNearestNeighborGrad (idempotent). */
export function registerPoolGrads(): void {
  replaceKernel('MaxPoolGrad', 'wasm', (stock) => makeMaxPoolGrad(stock));
  replaceKernel('ResizeNearestNeighborGrad', 'wasm', () => makeResizeNearestNeighborGrad('wasm'));
  replaceKernel('ResizeNearestNeighborGrad', 'cpu', () => makeResizeNearestNeighborGrad('cpu'));
}

// ---------------------------------------------------------------------------
// Shared by the self-test and test/wasm_kernels.test.ts.

export interface PoolCase { shape: [number, number, number, number]; pool: number; stride: number; pad: 'same' | 'valid'; ties?: boolean }

/** Gradient of sum(maxPool(x) * r) w.r.t. x on the current backend. */
export function maxPoolGradOf(c: PoolCase, seed = 1): Float32Array {
  return tf.tidy(() => {
    let vals = seededValues(c.shape.reduce((p, q) => p * q, 1), seed);
    // Rounded values make ties, which must go to the first maximum.
    if (c.ties) vals = vals.map((v) => Math.round(v * 2));
    const x = tf.tensor4d(vals, c.shape);
    const y = tf.maxPool(x, c.pool, c.stride, c.pad);
    const r = tf.tensor(seededValues(y.size, seed + 1), y.shape);
    return tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(a as tf.Tensor4D, c.pool, c.stride, c.pad), r)))(x).dataSync() as Float32Array;
  });
}

export interface ResizeCase { shape: [number, number, number, number]; size: [number, number]; alignCorners?: boolean; halfPixelCenters?: boolean }

/** Gradient of sum(resizeNearestNeighbor(x) * r) w.r.t. x on the current backend. */
export function resizeGradOf(c: ResizeCase, seed = 1): Float32Array {
  return tf.tidy(() => {
    const resize = (a: tf.Tensor) => tf.image.resizeNearestNeighbor(a as tf.Tensor4D, c.size, c.alignCorners, c.halfPixelCenters);
    const x = tf.tensor4d(seededValues(tf.util.sizeFromShape(c.shape), seed), c.shape);
    const r = tf.tensor(seededValues(resize(x).size, seed + 1), resize(x).shape);
    return tf.grad((a: tf.Tensor) => tf.sum(tf.mul(resize(a), r)))(x).dataSync() as Float32Array;
  });
}

/**
 * The same gradient from first principles: the forward pass run on pixel indices
 * says where each output pixel came from, and r is added back there.
 */
export function resizeGradReference(c: ResizeCase, seed = 1): Float32Array {
  return tf.tidy(() => {
    const size = tf.util.sizeFromShape(c.shape);
    const from = tf.image.resizeNearestNeighbor(tf.range(0, size).reshape(c.shape) as tf.Tensor4D, c.size, c.alignCorners, c.halfPixelCenters).dataSync();
    const r = seededValues(from.length, seed + 1);
    const dx = new Float32Array(size);
    from.forEach((i, k) => { dx[i] += r[k]; });
    return dx;
  });
}

/** Largest absolute difference between two equally long arrays. */
export const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

export const selfTest: SelfTest = {
  'MaxPoolGrad matches the cpu backend, ties included': async () => {
    const { onBackend } = await import('./wasm_kernels');
    const { initBackend } = await import('./index');
    await initBackend('wasm');
    registerPoolGrads();
    const c: PoolCase = { shape: [2, 5, 7, 3], pool: 2, stride: 2, pad: 'same', ties: true };
    const ref = await onBackend('cpu', () => maxPoolGradOf(c));
    assert.deepEqual(Array.from(await onBackend('wasm', () => maxPoolGradOf(c))), Array.from(ref));
  },
  'ResizeNearestNeighborGrad is the adjoint of the forward resize on wasm and cpu (batch 2)': async () => {
    const { onBackend } = await import('./wasm_kernels');
    registerPoolGrads();
    const c: ResizeCase = { shape: [2, 3, 4, 5], size: [6, 8] };
    const ref = resizeGradReference(c);
    for (const be of ['wasm', 'cpu']) {
      const d = maxDiff(await onBackend(be, () => resizeGradOf(c)), ref);
      assert.ok(d <= 1e-5, `${be}: differs from the adjoint by ${d}`);
    }
  },
};

runIfMain(module, selfTest);
