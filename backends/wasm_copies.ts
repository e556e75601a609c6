// Slice, SplitV and Concat for the wasm backend as copies of runs on the heap.
// The stock Slice first copies the whole input out of the heap (readSync) and then
// gathers in JavaScript, so its cost grows with the input, not the slice:
//   - splitting the optimizer's flat 1.2M-value buffer into ~56 weights took ~250 ms;
//   - the gradient of the U-Net's first decoder concat ([4,128,128,48] split into
//     16 + 32 channels) took ~40 ms. Copying the runs heap to heap takes ~10 ms.
// The stock Concat calls subarray().set() per run: 26 ms for that decoder concat,
// whose runs are 16 and 32 values long; a plain loop copies them in ~10 ms.
import * as tf from './tf';
import '@tensorflow/tfjs-backend-wasm';
import assert from 'node:assert/strict';
import { SelfTest, runIfMain } from '../utils/self_test';
import { KernelArgs, WasmBackendLike, isOurKernel, kernelInput, replaceKernel, stockKernel } from './wasm_heap';

type Info = tf.TensorInfo;
type Heap = Float32Array | Int32Array | Uint8Array;

/** Runs shorter than this are copied element by element; a subarray().set call costs more. */
const SHORT_RUN = 64;

/**
 * The same slice over fewer axes: an axis taken whole merges into the axis before
 * it, so a channel slice of [N,H,W,C] becomes rows of a [N*H*W, C] matrix.
 */
export function mergeAxes(shape: number[], begin: number[], size: number[]): { shape: number[]; begin: number[]; size: number[] } {
  const out = { shape: [shape[0]], begin: [begin[0]], size: [size[0]] };
  for (let d = 1; d < shape.length; d++) {
    const last = out.shape.length - 1;
    if (begin[d] === 0 && size[d] === shape[d]) {
      out.shape[last] *= shape[d];
      out.begin[last] *= shape[d];
      out.size[last] *= shape[d];
    } else {
      out.shape.push(shape[d]);
      out.begin.push(begin[d]);
      out.size.push(size[d]);
    }
  }
  return out;
}

/**
 * Copies x[begin : begin + size] into dst: after merging axes, each index of the
 * leading axes starts one contiguous run along the last one.
 */
export function copySlice(src: Heap, dst: Heap, shape: number[], begin: number[], size: number[]): void {
  const m = mergeAxes(shape, begin, size);
  const rank = m.shape.length;
  const run = m.size[rank - 1];
  if (rank === 1) {
    dst.set(src.subarray(m.begin[0], m.begin[0] + run));
    return;
  }
  const strides = tf.util.computeStrides(m.shape);
  const rowStride = strides[rank - 2];
  const rows = m.size[rank - 2];
  const idx = new Array(rank - 2).fill(0); // odometer over the axes before the rows
  let o = 0;
  for (;;) {
    let from = m.begin[rank - 1] + m.begin[rank - 2] * rowStride;
    for (let d = 0; d < rank - 2; d++) from += (m.begin[d] + idx[d]) * strides[d];
    if (run < SHORT_RUN) {
      for (let r = 0; r < rows; r++, from += rowStride) {
        for (let i = 0; i < run; i++) dst[o++] = src[from + i];
      }
    } else {
      for (let r = 0; r < rows; r++, from += rowStride, o += run) dst.set(src.subarray(from, from + run), o);
    }
    let d = rank - 3;
    while (d >= 0 && ++idx[d] === m.size[d]) idx[d--] = 0;
    if (d < 0) return;
  }
}

export function makeSlice(fallback: tf.KernelFunc) {
  return function slice(args: KernelArgs): Info {
    const x = kernelInput(args, 'x', 'Slice');
    const a = args.attrs ?? {};
    if (x.dtype === 'string' || x.dtype === 'complex64' || x.shape.length === 0) return fallback(args as Parameters<tf.KernelFunc>[0]) as Info;
    const [begin, size] = tf.slice_util.parseSliceParams(x as unknown as tf.Tensor, a.begin as number[], a.size as number[]);
    const backend = args.backend as WasmBackendLike;
    const out = backend.makeOutput(size, x.dtype as 'float32');
    if (tf.util.sizeFromShape(size) === 0) return out;
    // Views taken after makeOutput: an allocation can grow (and move) the heap.
    copySlice(backend.typedArrayFromHeap(x), backend.typedArrayFromHeap(out), x.shape, begin, size);
    return out;
  };
}

/** SplitV as the stock kernel does it, but through our Slice (the stock one calls its own slice directly). */
function makeSplitV(slice: ReturnType<typeof makeSlice>) {
  return function splitV(args: KernelArgs): Info[] {
    const x = kernelInput(args, 'x', 'SplitV');
    const a = args.attrs ?? {};
    const axis = tf.util.parseAxisParam(a.axis as number, x.shape)[0];
    const sizes = tf.backend_util.prepareSplitSize(x as unknown as tf.Tensor, a.numOrSizeSplits as number[] | number, axis);
    const begin = new Array(x.shape.length).fill(0);
    return sizes.map((n) => {
      const size = [...x.shape];
      size[axis] = n;
      const out = slice({ inputs: { x }, backend: args.backend, attrs: { begin: [...begin], size } });
      begin[axis] += n;
      return out;
    });
  };
}

/**
 * Concat of float32/int32 tensors: each of the `outer` rows of the output is the
 * inputs' rows one after the other. Other dtypes go to the stock kernel.
 */
export function makeConcat(fallback: tf.KernelFunc) {
  return function concat(args: KernelArgs): Info {
    const inputs = Object.values(args.inputs) as Info[];
    const dtype = inputs[0]?.dtype;
    if (dtype !== 'float32' && dtype !== 'int32') return fallback(args as Parameters<tf.KernelFunc>[0]) as Info;
    const axis = tf.util.parseAxisParam(args.attrs?.axis as number, inputs[0].shape)[0];
    tf.backend_util.assertParamsConsistent(inputs.map((t) => t.shape), axis);
    const outShape = tf.backend_util.computeOutShape(inputs.map((t) => t.shape), axis);
    const backend = args.backend as WasmBackendLike;
    const out = backend.makeOutput(outShape, dtype);
    const outer = tf.util.sizeFromShape(outShape.slice(0, axis));
    const runs = inputs.map((t) => tf.util.sizeFromShape(t.shape.slice(axis)));
    const row = runs.reduce((a, b) => a + b, 0);
    if (outer * row === 0) return out;
    // Views taken after makeOutput: an allocation can grow (and move) the heap.
    const dst = backend.typedArrayFromHeap(out);
    inputs.forEach((t, k) => {
      const src = backend.typedArrayFromHeap(t);
      const run = runs[k];
      const at = runs.slice(0, k).reduce((a, b) => a + b, 0);
      if (run >= SHORT_RUN || outer === 1) {
        for (let r = 0; r < outer; r++) dst.set(src.subarray(r * run, (r + 1) * run), r * row + at);
      } else {
        for (let r = 0, s = 0; r < outer; r++) {
          const o = r * row + at;
          for (let i = 0; i < run; i++) dst[o + i] = src[s++];
        }
      }
    });
    return out;
  };
}

/** Replaces the stock wasm Slice, SplitV and Concat (idempotent). */
export function registerWasmCopies(): void {
  const slice = replaceKernel('Slice', 'wasm', (stock) => makeSlice(stockKernel(stock, 'Slice'))) as unknown as ReturnType<typeof makeSlice>;
  replaceKernel('SplitV', 'wasm', () => makeSplitV(slice));
  replaceKernel('Concat', 'wasm', (stock) => makeConcat(stockKernel(stock, 'Concat')));
}

export const selfTest: SelfTest = {
  'Slice and SplitV give the same values as plain indexing, contiguous or not, float, int and bool': async () => {
    const { initBackend } = await import('./index');
    await initBackend('wasm');
    registerWasmCopies();
    assert.ok(isOurKernel('Slice', 'wasm'));
    assert.ok(isOurKernel('SplitV', 'wasm'));
    const dims = [4, 5, 6];
    const vals = Array.from({ length: 4 * 5 * 6 }, (_, i) => i * 3 - 7);
    for (const dtype of ['float32', 'int32', 'bool'] as const) {
      const v = dtype === 'bool' ? vals.map((x) => (x % 7 === 0 ? 1 : 0)) : vals;
      const x = tf.tensor(v, dims, dtype);
      const want = (b: number[], sz: number[]) => {
        const out: number[] = [];
        for (let i = b[0]; i < b[0] + sz[0]; i++) for (let j = b[1]; j < b[1] + sz[1]; j++) for (let k = b[2]; k < b[2] + sz[2]; k++) out.push(v[(i * 5 + j) * 6 + k]);
        return out;
      };
      // Contiguous, row ranges, a strided block (short runs), one element, empty.
      for (const [b, sz] of [[[1, 0, 0], [2, 5, 6]], [[2, 3, 0], [1, 2, 6]], [[0, 1, 2], [4, 3, 3]], [[3, 4, 5], [1, 1, 1]], [[1, 1, 1], [2, 0, 3]]]) {
        const y = tf.slice(x, b, sz);
        assert.deepEqual(y.shape, sz);
        assert.equal(y.dtype, dtype);
        assert.deepEqual(Array.from(await y.data()), want(b, sz), `${dtype} slice at ${b} of ${sz}`);
        y.dispose();
      }
      const flat = x.reshape([-1]);
      const parts = tf.split(flat, [7, 100, 13]);
      assert.deepEqual(parts.map((p) => p.size), [7, 100, 13]);
      assert.deepEqual(Array.from(await parts[1].data()), v.slice(7, 107));
      const cols = tf.split(x, [2, 4], 2);
      assert.deepEqual(Array.from(await cols[1].data()), want([0, 0, 2], [4, 5, 4]));
      tf.dispose([x, flat, ...parts, ...cols]);
    }
  },
  'Concat along each axis, short and long runs, float and int, agrees with the cpu backend': async () => {
    const { onBackend } = await import('./wasm_kernels');
    registerWasmCopies();
    assert.ok(isOurKernel('Concat', 'wasm'));
    for (const dtype of ['float32', 'int32'] as const) {
      for (let axis = 0; axis < 4; axis++) {
        const shapes = [[2, 3, 4, 5], [2, 3, 4, 5], [2, 3, 4, 5]].map((sh, k) => sh.map((d, i) => (i === axis ? d + 7 * k : d)));
        const make = () => shapes.map((sh, k) => tf.range(1000 * k, 1000 * k + sh.reduce((a, b) => a * b, 1), 1, dtype).reshape(sh));
        const ref = await onBackend('cpu', () => tf.tidy(() => Array.from(tf.concat(make(), axis).dataSync())));
        const got = await onBackend('wasm', () => tf.tidy(() => Array.from(tf.concat(make(), axis).dataSync())));
        assert.deepEqual(got, ref, `${dtype} axis ${axis}`);
      }
    }
  },
  'long runs (copied with set) and short ones agree with the cpu backend': async () => {
    const { onBackend } = await import('./wasm_kernels');
    registerWasmCopies();
    const x = () => tf.range(0, 2 * 3 * 40 * 70).reshape([2, 3, 40, 70]);
    const cases: Array<[number[], number[]]> = [[[0, 1, 0, 0], [2, 2, 40, 70]], [[1, 0, 3, 5], [1, 3, 30, 65]], [[0, 0, 0, 60], [2, 3, 40, 10]]];
    for (const [b, sz] of cases) {
      const ref = await onBackend('cpu', () => tf.tidy(() => Array.from(tf.slice(x(), b, sz).dataSync())));
      const got = await onBackend('wasm', () => tf.tidy(() => Array.from(tf.slice(x(), b, sz).dataSync())));
      assert.deepEqual(got, ref, `slice at ${b} of ${sz}`);
    }
  },
};

runIfMain(module, selfTest);
