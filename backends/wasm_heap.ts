// Direct access to tfjs-backend-wasm's heap, for kernels written in JavaScript.
// Used where the stock wasm kernel is a generic C loop that costs far more than a
// plain pass over the data (measured in each kernel's comment).
import * as tf from '@tensorflow/tfjs';
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
};

runIfMain(module, selfTest);
