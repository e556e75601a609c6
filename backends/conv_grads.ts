// Conv2D filter gradient (dW) built from fast kernels, written once against a
// small set of operations so the same formulation runs
//   - as tf ops on any backend (conv2dFilterGradViaForward / ...ViaMatMul), which
//     is how it is tested on cpu and wasm against tfjs's reference gradient, and
//   - as a registered Conv2DBackpropFilter kernel that calls the backend's own
//     kernels directly (wasm: forward formulation on XNNPACK; webgpu: matmul
//     formulation, see registerFilterGradKernel).
// Two formulations, because the fast kernel differs per backend:
//   forward: dW = conv of x^T [Cin,H,W,N] by dy^T [OH,OW,N,Cout] dilated by the
//            stride. One XNNPACK conv on wasm. On webgpu this conv has a tiny
//            output and a huge reduction, which its conv shader does not split.
//   matmul:  im2col of x (one strided slice per tap, concatenated), then one
//            matmul cols^T [KH*KW*Cin, N*OH*OW] x dy [N*OH*OW, Cout]. webgpu picks
//            its split-K matmul shader for exactly this shape (few outputs, long K).
import * as tf from './tf';
import assert from 'node:assert/strict';
import { UserError } from '../utils/errors';
import { seededValues } from '../utils/rng';
import { runIfMain, SelfTest } from '../utils/self_test';
import { withTiledMatMul } from './webgpu_kernels/program';

type Info = tf.TensorInfo;
export type Pads4 = [[number, number], [number, number], [number, number], [number, number]];
type ConvPad = 'valid' | 'same' | number | Pads4;
export type FilterGradFormulation = 'forward' | 'matmul';

/** The operations both formulations need; `T` is a tensor or a kernel-level TensorInfo. */
export interface GradOps<T> {
  shape(t: T): number[];
  /** Same data, new shape (free for row-major buffers). */
  reshape(t: T, shape: number[]): T;
  transpose(t: T, perm: number[]): T;
  slice(t: T, begin: number[], size: number[]): T;
  stridedSlice(t: T, begin: number[], end: number[], strides: number[]): T;
  pad(t: T, paddings: Array<[number, number]>): T;
  concat(ts: T[], axis: number): T;
  /** Rank-3 batched matmul. */
  matMul(a: T, b: T, transposeA: boolean, transposeB: boolean): T;
  /** Stride-1 NHWC convolution with explicit non-negative pads. */
  conv(x: T, filter: T, dilations: [number, number], pads: Pads4): T;
  /**
   * cols [N, OH, OW, KH*KW*Cin] of the matmul formulation in one go, where the backend
   * has such a kernel (IM2COL_KERNEL); null to build it from pad, slices and concat.
   */
  im2col?(x: T, info: tf.backend_util.Conv2DInfo): T | null;
}

/** A backend's optional one-dispatch im2col (webgpu: backends/webgpu_kernels/im2col.ts). */
export const IM2COL_KERNEL = 'SemsegIm2Col';

/** Transpose, or a free reshape when the perm only moves size-1 axes. */
export function permute<T>(ops: GradOps<T>, x: T, perm: number[]): T {
  const s = ops.shape(x);
  const moved = perm.filter((p) => s[p] !== 1);
  if (moved.every((p, i) => i === 0 || moved[i - 1] < p)) return ops.reshape(x, perm.map((p) => s[p]));
  return ops.transpose(x, perm);
}

/** Crops the leading [h, w] window of an NHWC tensor when it is larger. */
export function cropHW<T>(ops: GradOps<T>, x: T, h: number, w: number): T {
  const [n, xh, xw, c] = ops.shape(x);
  if (xh === h && xw === w) return x;
  return ops.slice(x, [0, 0, 0, 0], [n, h, w, c]);
}

/** Conv2DInfo of the forward conv; NHWC only, dilation 1 (tfjs has no dilated conv gradients). */
export function filterGradInfo(
  xShape: number[], filterShape: number[], strides: unknown, pad: unknown, dataFormat?: unknown, dimRoundingMode?: unknown,
): tf.backend_util.Conv2DInfo {
  if (dataFormat !== undefined && dataFormat !== 'NHWC') {
    throw new UserError(`Conv2DBackpropFilter: dataFormat '${String(dataFormat)}' is not supported, expected 'NHWC'`);
  }
  return tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number], filterShape as [number, number, number, number],
    strides as number | [number, number], 1, pad as ConvPad,
    dimRoundingMode as 'floor' | 'round' | 'ceil' | undefined, false, 'channelsLast');
}

/**
 * dW[kh,kw,ci,co] = sum_{n,oh,ow} x[n, oh*sh+kh-top, ow*sw+kw-left, ci] * dy[n,oh,ow,co]:
 * a stride-1 convolution of x^T [Cin,H,W,N] ("batch" = Cin, "channels" = N) by
 * dy^T [OH,OW,N,Cout] used as the filter, dilated by the forward stride.
 */
export function filterGradViaForward<T>(ops: GradOps<T>, x: T, dy: T, info: tf.backend_util.Conv2DInfo): T {
  const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw, padInfo } = info;
  const { inHeight: h, inWidth: w, outHeight: oh, outWidth: ow, batchSize: n, inChannels: ci, outChannels: co } = info;
  if (kh === 1 && kw === 1 && sh === 1 && sw === 1 && oh === h && ow === w) {
    // 1x1 stride 1: dW = x^T dy, one GEMM over all n*h*w pixels. As a 1x1 conv
    // XNNPACK reduces over a contiguous n*h*w axis, and dy needs no transpose.
    const xT = ops.reshape(permute(ops, x, [3, 0, 1, 2]), [ci, 1, 1, n * h * w]);
    const g = ops.conv(xT, ops.reshape(dy, [1, 1, n * h * w, co]), [1, 1], [[0, 0], [0, 0], [0, 0], [0, 0]]);
    return ops.reshape(g, [1, 1, ci, co]);
  }
  // Pads must be >= 0: when the forward conv never reads the last rows of x,
  // we convolve over them anyway and crop the extra output rows.
  const bottom = Math.max(0, kh + (oh - 1) * sh - padInfo.top - h);
  const right = Math.max(0, kw + (ow - 1) * sw - padInfo.left - w);
  const xT = permute(ops, x, [3, 1, 2, 0]);
  const dyT = permute(ops, dy, [1, 2, 0, 3]);
  const g = ops.conv(xT, dyT, [sh, sw], [[0, 0], [padInfo.top, bottom], [padInfo.left, right], [0, 0]]);
  return permute(ops, cropHW(ops, g, kh, kw), [1, 2, 0, 3]);
}

/**
 * The same dW as one matmul: cols[(n,oh,ow), (kh,kw,ci)] = x[n, oh*sh+kh-top, ow*sw+kw-left, ci]
 * (zero outside x), then dW = cols^T dy reshaped to [KH,KW,Cin,Cout].
 */
export function filterGradViaMatMul<T>(ops: GradOps<T>, x: T, dy: T, info: tf.backend_util.Conv2DInfo): T {
  const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw, padInfo } = info;
  const { inHeight: h, inWidth: w, outHeight: oh, outWidth: ow, batchSize: n, inChannels: ci, outChannels: co } = info;
  const fused = kh * kw > 1 || sh > 1 || sw > 1 ? ops.im2col?.(x, info) : null;
  if (fused) {
    const g = ops.matMul(ops.reshape(fused, [1, n * oh * ow, kh * kw * ci]), ops.reshape(dy, [1, n * oh * ow, co]), true, false);
    return ops.reshape(g, [kh, kw, ci, co]);
  }
  // Rows/cols of x the taps reach, in padded coordinates; beyond that nothing is read.
  const needH = kh + (oh - 1) * sh;
  const needW = kw + (ow - 1) * sw;
  const bottom = needH - padInfo.top - h;
  const right = needW - padInfo.left - w;
  let xp = x;
  if (padInfo.top > 0 || padInfo.left > 0 || bottom > 0 || right > 0) {
    xp = ops.pad(x, [[0, 0], [padInfo.top, Math.max(0, bottom)], [padInfo.left, Math.max(0, right)], [0, 0]]);
  }
  const taps: T[] = [];
  for (let i = 0; i < kh; i++) {
    for (let j = 0; j < kw; j++) {
      const [, ph, pw] = ops.shape(xp);
      if (i === 0 && j === 0 && sh === 1 && sw === 1 && ph === oh && pw === ow) { taps.push(xp); continue; }
      taps.push(sh === 1 && sw === 1
        ? ops.slice(xp, [0, i, j, 0], [n, oh, ow, ci])
        : ops.stridedSlice(xp, [0, i, j, 0], [n, i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1, ci], [1, sh, sw, 1]));
    }
  }
  // Tap-major then channel: the row order of a [KH,KW,Cin,Cout] filter.
  const cols = taps.length === 1 ? taps[0] : ops.concat(taps, 3);
  const g = ops.matMul(ops.reshape(cols, [1, n * oh * ow, kh * kw * ci]), ops.reshape(dy, [1, n * oh * ow, co]), true, false);
  return ops.reshape(g, [kh, kw, ci, co]);
}

const FORMULATIONS = { forward: filterGradViaForward, matmul: filterGradViaMatMul } as const;

// ---------------------------------------------------------------------------
// As tf ops, on whatever backend is active.

const tfOps: GradOps<tf.Tensor> = {
  shape: (t) => t.shape,
  reshape: (t, s) => tf.reshape(t, s),
  transpose: (t, perm) => tf.transpose(t, perm),
  slice: (t, b, s) => tf.slice(t, b, s),
  stridedSlice: (t, b, e, s) => tf.stridedSlice(t, b, e, s),
  pad: (t, p) => tf.pad(t, p),
  concat: (ts, axis) => tf.concat(ts, axis),
  matMul: (a, b, ta, tb) => tf.matMul(a, b, ta, tb),
  conv: (x, f, d, p) => tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, 1, p, 'NHWC', d),
};

type Strides = number | [number, number];
type FilterShape = [number, number, number, number];

/** dW of tf.conv2d(x, filter, strides, pad) given dy, as a forward convolution (see top). */
export function conv2dFilterGradViaForward(x: tf.Tensor4D, dy: tf.Tensor4D, filterShape: FilterShape, strides: Strides, pad: ConvPad): tf.Tensor4D {
  return tf.tidy(() => filterGradViaForward(tfOps, x, dy, filterGradInfo(x.shape, filterShape, strides, pad)) as tf.Tensor4D);
}

/** dW of tf.conv2d(x, filter, strides, pad) given dy, as im2col + one matmul (see top). */
export function conv2dFilterGradViaMatMul(x: tf.Tensor4D, dy: tf.Tensor4D, filterShape: FilterShape, strides: Strides, pad: ConvPad): tf.Tensor4D {
  return tf.tidy(() => filterGradViaMatMul(tfOps, x, dy, filterGradInfo(x.shape, filterShape, strides, pad)) as tf.Tensor4D);
}

// ---------------------------------------------------------------------------
// As kernels of one backend, called directly (a kernel must not create engine tensors).

/** Intermediates made while computing one kernel, freed together at the end. */
export class Scratch implements GradOps<Info> {
  private owned: Info[] = [];
  constructor(readonly backendName: string, readonly backend: tf.KernelBackend) {}

  run(name: string, inputs: Record<string, Info> | Info[], attrs: Record<string, unknown>): Info {
    const kernel = tf.getKernel(name, this.backendName);
    if (!kernel) throw new Error(`conv_grads: kernel '${name}' is not registered for backend '${this.backendName}'`);
    const out = kernel.kernelFunc({ inputs: inputs as tf.NamedTensorInfoMap, backend: this.backend, attrs: attrs as tf.NamedAttrMap }) as Info;
    this.owned.push(out);
    return out;
  }

  /** Takes ownership of a tensor made outside `run`. */
  adopt(t: Info): void {
    this.owned.push(t);
  }

  shape(t: Info): number[] { return t.shape; }
  reshape(x: Info, shape: number[]): Info { return { dataId: x.dataId, shape, dtype: x.dtype }; }
  transpose(x: Info, perm: number[]): Info { return this.run('Transpose', { x }, { perm }); }
  slice(x: Info, begin: number[], size: number[]): Info { return this.run('Slice', { x }, { begin, size }); }
  stridedSlice(x: Info, begin: number[], end: number[], strides: number[]): Info {
    return this.run('StridedSlice', { x }, { begin, end, strides, beginMask: 0, endMask: 0, ellipsisMask: 0, newAxisMask: 0, shrinkAxisMask: 0 });
  }
  pad(x: Info, paddings: Array<[number, number]>): Info { return this.run('PadV2', { x }, { paddings, constantValue: 0 }); }
  concat(ts: Info[], axis: number): Info { return this.run('Concat', ts, { axis }); }
  matMul(a: Info, b: Info, transposeA: boolean, transposeB: boolean): Info {
    return this.run('BatchMatMul', { a, b }, { transposeA, transposeB });
  }
  conv(x: Info, filter: Info, dilations: [number, number], pads: Pads4): Info {
    return this.run('Conv2D', { x, filter }, { strides: [1, 1], pad: pads, dataFormat: 'NHWC', dilations, dimRoundingMode: undefined });
  }
  im2col(x: Info, info: tf.backend_util.Conv2DInfo): Info | null {
    if (!tf.getKernel(IM2COL_KERNEL, this.backendName)) return null;
    const { filterHeight, filterWidth, strideHeight, strideWidth, outHeight, outWidth, padInfo } = info;
    return this.run(IM2COL_KERNEL, { x }, { filterHeight, filterWidth, strideHeight, strideWidth, outHeight, outWidth, padTop: padInfo.top, padLeft: padInfo.left });
  }

  /** Frees every intermediate except the one backing `result`, which is returned. */
  finish(result: Info): Info {
    for (const t of this.owned) if (t.dataId !== result.dataId) this.backend.disposeData(t.dataId);
    this.owned = [];
    return result;
  }

  /** Frees everything (error path). */
  abort(): void {
    for (const t of this.owned) this.backend.disposeData(t.dataId);
    this.owned = [];
  }
}

export function withScratch(backendName: string, backend: tf.KernelBackend, body: (s: Scratch) => Info): Info {
  const s = new Scratch(backendName, backend);
  try {
    return s.finish(body(s));
  } catch (err) {
    s.abort();
    throw err;
  }
}

type KernelArgs = { inputs: tf.NamedTensorInfoMap; backend: {}; attrs?: tf.NamedAttrMap };

/** A Conv2DBackpropFilter kernel function for `backendName` computing `formulation`. */
export function makeFilterGradKernel(backendName: string, formulation: FilterGradFormulation): (args: KernelArgs) => Info {
  const body = FORMULATIONS[formulation];
  return function conv2DBackpropFilter(args: KernelArgs): Info {
    const { x, dy } = args.inputs;
    if (!x || !dy) throw new Error('Conv2DBackpropFilter: missing input x or dy');
    const a = args.attrs ?? {};
    const info = filterGradInfo(x.shape, a.filterShape as number[], a.strides, a.pad, a.dataFormat, a.dimRoundingMode);
    const run = () => withScratch(backendName, args.backend as tf.KernelBackend, (s) => body(s, x, dy, info));
    // On webgpu with the tiled matmul shader: tfjs's split-K one adds in no fixed order (see withTiledMatMul).
    return backendName === 'webgpu' ? withTiledMatMul(run) : run();
  };
}

const ours = new Map<tf.KernelFunc, string>();

/** Installs our Conv2DBackpropFilter for `backendName` (idempotent per formulation). */
export function registerFilterGradKernel(backendName: string, formulation: FilterGradFormulation): void {
  const old = tf.getKernel('Conv2DBackpropFilter', backendName);
  if (old && ours.get(old.kernelFunc) === formulation) return;
  if (old) tf.unregisterKernel('Conv2DBackpropFilter', backendName);
  const kernelFunc = makeFilterGradKernel(backendName, formulation) as unknown as tf.KernelFunc;
  ours.set(kernelFunc, formulation);
  tf.registerKernel({ kernelName: 'Conv2DBackpropFilter', backendName, kernelFunc });
}

/** Which of our formulations backs `backendName`'s Conv2DBackpropFilter, if any. */
export function registeredFormulation(backendName: string): FilterGradFormulation | undefined {
  const k = tf.getKernel('Conv2DBackpropFilter', backendName);
  return k ? (ours.get(k.kernelFunc) as FilterGradFormulation | undefined) : undefined;
}

// ---------------------------------------------------------------------------
// Shared by the self-test and test/conv_grads.test.ts.

export interface FilterCase { n: number; h: number; w: number; cin: number; cout: number; k: number; stride: number; pad: 'same' | 'valid' }

/** Reference dW (tf.grad of tf.conv2d) and ours, both on the current backend, from the same seeded x and dy. */
export function filterGradPair(c: FilterCase, how: 'forward' | 'matmul' | 'kernel-forward' | 'kernel-matmul', seed = 1): { ref: Float32Array; got: Float32Array } {
  return tf.tidy(() => {
    const x = tf.tensor4d(seededValues(c.n * c.h * c.w * c.cin, seed), [c.n, c.h, c.w, c.cin]);
    const fShape: FilterShape = [c.k, c.k, c.cin, c.cout];
    const f = tf.tensor4d(seededValues(c.k * c.k * c.cin * c.cout, seed + 1), fShape);
    const yShape = tf.conv2d(x, f, c.stride, c.pad).shape;
    const dy = tf.tensor4d(seededValues(yShape.reduce((p, q) => p * q, 1), seed + 2), yShape);
    const ref = tf.grad((w: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(x, w as tf.Tensor4D, c.stride, c.pad), dy)))(f);
    let got: tf.Tensor;
    if (how === 'forward') got = conv2dFilterGradViaForward(x, dy, fShape, c.stride, c.pad);
    else if (how === 'matmul') got = conv2dFilterGradViaMatMul(x, dy, fShape, c.stride, c.pad);
    else {
      // The kernel path: our kernel function on the current backend's own kernels.
      const be = tf.getBackend();
      const kernel = makeFilterGradKernel(be, how === 'kernel-forward' ? 'forward' : 'matmul');
      const backend = tf.backend();
      const ids = backend.numDataIds();
      const out = kernel({ inputs: { x, dy }, backend, attrs: { filterShape: fShape, strides: c.stride, pad: c.pad } as unknown as tf.NamedAttrMap });
      assert.equal(backend.numDataIds(), ids + 1, `kernel-level intermediates leaked on ${be}`);
      got = tf.engine().makeTensorFromTensorInfo(out);
    }
    return { ref: ref.dataSync() as Float32Array, got: got.dataSync() as Float32Array };
  });
}

/** max|a-b| / max(1, max|b|). */
export function relError(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length, 'length mismatch');
  let diff = 0;
  let scale = 1;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / scale;
}

export const selfTest: SelfTest = {
  async 'both formulations match tf.grad on cpu, as ops and as kernels'() {
    await tf.setBackend('cpu');
    const cases: FilterCase[] = [
      { n: 2, h: 7, w: 9, cin: 3, cout: 4, k: 3, stride: 1, pad: 'same' },
      { n: 1, h: 7, w: 9, cin: 2, cout: 5, k: 3, stride: 2, pad: 'same' },
      { n: 3, h: 13, w: 11, cin: 4, cout: 3, k: 5, stride: 2, pad: 'valid' },
      { n: 2, h: 6, w: 6, cin: 3, cout: 2, k: 1, stride: 1, pad: 'same' },
      { n: 3, h: 5, w: 7, cin: 2, cout: 3, k: 2, stride: 1, pad: 'same' },
      { n: 1, h: 8, w: 9, cin: 2, cout: 2, k: 2, stride: 2, pad: 'valid' },
    ];
    for (const c of cases) {
      for (const how of ['forward', 'matmul', 'kernel-forward', 'kernel-matmul'] as const) {
        const { ref, got } = filterGradPair(c, how);
        const e = relError(got, ref);
        assert.ok(e <= 1e-4, `${how} ${JSON.stringify(c)}: rel err ${e}`);
      }
    }
  },
  'registering twice keeps one kernel per formulation'() {
    registerFilterGradKernel('cpu-selftest', 'matmul');
    const k = tf.getKernel('Conv2DBackpropFilter', 'cpu-selftest')?.kernelFunc;
    registerFilterGradKernel('cpu-selftest', 'matmul');
    assert.equal(tf.getKernel('Conv2DBackpropFilter', 'cpu-selftest')?.kernelFunc, k);
    assert.equal(registeredFormulation('cpu-selftest'), 'matmul');
    registerFilterGradKernel('cpu-selftest', 'forward');
    assert.equal(registeredFormulation('cpu-selftest'), 'forward');
    tf.unregisterKernel('Conv2DBackpropFilter', 'cpu-selftest');
  },
};

runIfMain(module, selfTest);
