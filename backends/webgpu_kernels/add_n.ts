// AddN (webgpu) within the device's storage-buffer limit: the stock kernel binds
// every input at once, so over ~7 inputs its pipeline fails validation (WebGPU's
// default is 8 storage buffers per shader stage) and the result is garbage. Here
// the inputs are summed in chunks, each chunk adding the previous partial sum.
import * as tf from '../tf';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../utils/self_test';
import { seededValues } from '../../utils/rng';
import { dispatchingKernel, program, webgpuVsCpu } from './program';

function addProgram(shape: number[], n: number) {
  const names = Array.from({ length: n }, (_, i) => `x${i}`);
  return program({
    key: `semseg_add_n_${n}`, inputs: names, outputShape: shape,
    body: `
      fn main(index : i32) {
        if (index < uniforms.size) { result[index] = ${names.map((v) => `${v}[index]`).join(' + ')}; }
      }`,
  });
}

export const addNConfig: tf.KernelConfig = {
  kernelName: 'AddN',
  backendName: 'webgpu',
  kernelFunc: dispatchingKernel((d, { inputs }) => {
    const xs = Object.values(inputs) as tf.TensorInfo[];
    if (xs.some((t) => t.dtype !== 'float32')) throw new Error('AddN (webgpu): only float32 inputs are supported');
    const perCall = d.maxBuffers - 1;
    let acc = d.run(addProgram(xs[0].shape, Math.min(perCall, xs.length)), xs.slice(0, perCall));
    for (let i = perCall; i < xs.length; i += perCall - 1) {
      const chunk = [acc, ...xs.slice(i, i + perCall - 1)];
      acc = d.run(addProgram(xs[0].shape, chunk.length), chunk);
    }
    return acc;
  }),
};

export const selfTest: SelfTest = {
  async 'sums more inputs than the device binds at once, as cpu does'() {
    for (const n of [3, 8, 20]) {
      const err = await webgpuVsCpu(() => [tf.addN(Array.from({ length: n }, (_, i) => tf.tensor(seededValues(33, i), [3, 11])))]);
      assert.ok(err <= 1e-6, `AddN of ${n}: rel err ${err}`);
    }
  },
};

runIfMain(module, selfTest);
