// SemsegMovingAverage (webgpu): batch norm's moving mean and variance updated from
// the batch statistics in one kernel, as tfjs does it: v <- v - (v - batch) * (1 - momentum).
// As tf ops these were six taped kernels per layer, each cloning its inputs.
import * as tf from '../tf';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../utils/self_test';
import { seededValues } from '../../utils/rng';
import { dispatchingKernel, program, webgpuVsCpu } from './program';

export const MOVING_AVERAGE = 'SemsegMovingAverage';

/** row 0 of stats updates the mean, row 1 the variance. */
function updateProgram(c: number) {
  return program({
    key: 'semseg_bn_moving', inputs: ['old', 'stats'], outputShape: [c], uniforms: 'decay : f32, row : i32,',
    body: `
      fn main(index : i32) {
        if (index < uniforms.size) {
          let v = old[index];
          result[index] = v - (v - stats[uniforms.row * uniforms.size + index]) * uniforms.decay;
        }
      }`,
  });
}

export const movingAverageConfig: tf.KernelConfig = {
  kernelName: MOVING_AVERAGE,
  backendName: 'webgpu',
  kernelFunc: dispatchingKernel((d, { inputs, attrs }) => {
    const { mean, variance, stats } = inputs as Record<string, tf.TensorInfo>;
    const c = mean.shape[0];
    const decay = 1 - (attrs!.momentum as number);
    const m = d.run(updateProgram(c), [mean, stats], [{ type: 'float32', data: [decay] }, { type: 'int32', data: [0] }]);
    const v = d.run(updateProgram(c), [variance, stats], [{ type: 'float32', data: [decay] }, { type: 'int32', data: [1] }]);
    return [m, v];
  }),
};

export const selfTest: SelfTest = {
  async 'moves the mean and variance towards the batch as tfjs does'() {
    const err = await webgpuVsCpu(() => {
      const [mean, variance] = [tf.tensor1d(seededValues(5, 1)), tf.tensor1d(seededValues(5, 2).map((v) => v + 2))];
      const stats = tf.tensor2d(seededValues(10, 3), [2, 5]);
      if (tf.getBackend() === 'webgpu') return tf.engine().runKernel(MOVING_AVERAGE, { mean, variance, stats }, { momentum: 0.9 }) as tf.Tensor[];
      const [bm, bv] = tf.unstack(stats);
      return [tf.sub(mean, tf.mul(tf.sub(mean, bm), 0.1)), tf.sub(variance, tf.mul(tf.sub(variance, bv), 0.1))];
    });
    assert.ok(err <= 1e-6, `rel err ${err}`);
  },
};

runIfMain(module, selfTest);
