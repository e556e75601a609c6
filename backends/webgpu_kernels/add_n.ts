// AddN (webgpu) within the device's storage-buffer limit: the stock kernel binds
// every input at once, so over ~7 inputs its pipeline fails validation (WebGPU's
// default is 8 storage buffers per shader stage) and the result is garbage. Here
// the inputs are summed in chunks, each chunk adding the previous partial sum.
import * as tf from '@tensorflow/tfjs';
import { dispatchingKernel, program } from './program';

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
