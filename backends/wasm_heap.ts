// Direct access to tfjs-backend-wasm's heap, for kernels written in JavaScript.
// Used where the stock wasm kernel is a generic C loop that costs far more than a
// plain pass over the data (measured in each kernel's comment); and the one way
// this project puts its kernels in place of tfjs's (replaceKernel).
import * as tf from './tf';
import assert from 'node:assert/strict';
import { SelfTest, runIfMain } from '../utils/self_test';

/** The parts of tfjs-backend-wasm's BackendWasm used here (not exported as a type). */
export interface WasmBackendLike extends tf.KernelBackend {
  makeOutput(shape: number[], dtype: 'float32' | 'int32' | 'bool', memoryOffset?: number, values?: Float32Array): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
}

/**
 * A new float32 output plus views of it and of `inputs`. The views are taken
 * after the allocation, because an allocation can grow (and move) the heap.
 */
export function outputWithViews(backend: WasmBackendLike, shape: number[], inputs: tf.TensorInfo[]): { out: tf.TensorInfo; dst: Float32Array; srcs: Float32Array[] } {
  const out = backend.makeOutput(shape, 'float32');
  return {
    out,
    dst: backend.typedArrayFromHeap(out) as Float32Array,
    srcs: inputs.map((t) => backend.typedArrayFromHeap(t) as Float32Array),
  };
}

/** The kernel arguments tfjs passes to a kernel function. */
export interface KernelArgs { inputs: tf.NamedTensorInfoMap; backend: {}; attrs?: tf.NamedAttrMap }

/** Input `name` of a kernel call, or an error naming the kernel. */
export function kernelInput(args: KernelArgs, name: string, kernel: string): tf.TensorInfo {
  const t = args.inputs[name];
  if (!t) throw new Error(`${kernel}: missing input '${name}'`);
  return t;
}

const ours = new Set<tf.KernelFunc>();

/**
 * Registers make(stock kernel) as `name` on `backendName` in its place, once: a
 * second call finds ours and changes nothing. The stock setupFunc is kept, because
 * the backend runs it at start-up and it binds the C function a fallback calls.
 * Returns the kernel function now registered.
 */
export function replaceKernel(name: string, backendName: string, make: (stock: tf.KernelFunc | undefined) => unknown): tf.KernelFunc {
  const old = tf.getKernel(name, backendName);
  if (old && ours.has(old.kernelFunc)) return old.kernelFunc;
  if (old) tf.unregisterKernel(name, backendName);
  const kernelFunc = make(old?.kernelFunc) as tf.KernelFunc;
  ours.add(kernelFunc);
  tf.registerKernel({ kernelName: name, backendName, kernelFunc, setupFunc: old?.setupFunc });
  return kernelFunc;
}

/** Whether `name` on `backendName` is one of ours (put there by replaceKernel). */
export function isOurKernel(name: string, backendName: string): boolean {
  const k = tf.getKernel(name, backendName);
  return Boolean(k && ours.has(k.kernelFunc));
}

/** The stock kernel a replacement falls back to, which must exist. */
export function stockKernel(stock: tf.KernelFunc | undefined, name: string): tf.KernelFunc {
  if (!stock) throw new Error(`the stock wasm ${name} kernel is missing`);
  return stock;
}

export const selfTest: SelfTest = {
  'views see the inputs and write the new output; a missing input names the kernel': async () => {
    const { initBackend } = await import('./index');
    await initBackend('wasm');
    const backend = tf.backend() as WasmBackendLike;
    const x = tf.tensor1d([1, 2, 3]);
    const { out, dst, srcs: [src] } = outputWithViews(backend, [3], [x]);
    dst.set(src.map((v) => v * 10));
    const y = tf.engine().makeTensorFromTensorInfo(out);
    assert.deepEqual(Array.from(await y.data()), [10, 20, 30]);
    tf.dispose([x, y]);
    assert.throws(() => kernelInput({ inputs: {}, backend }, 'dy', 'MaxPoolGrad'), /MaxPoolGrad: missing input 'dy'/);
  },
  'replaceKernel installs once and keeps the stock setupFunc'() {
    let made = 0;
    const stock = tf.getKernel('Atan2', 'wasm');
    assert.ok(stock && !isOurKernel('Atan2', 'wasm'));
    try {
      const mine = replaceKernel('Atan2', 'wasm', (s) => { made++; return s; });
      assert.equal(replaceKernel('Atan2', 'wasm', () => { made++; return null; }), mine);
      assert.equal(made, 1);
      assert.ok(isOurKernel('Atan2', 'wasm'));
      assert.equal(tf.getKernel('Atan2', 'wasm')?.setupFunc, stock.setupFunc);
    } finally {
      tf.unregisterKernel('Atan2', 'wasm');
      tf.registerKernel(stock);
    }
  },
};

runIfMain(module, selfTest);
