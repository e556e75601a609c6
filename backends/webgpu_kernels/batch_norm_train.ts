// SemsegBatchNormTrain (webgpu): training-mode batch norm over all axes but the
// last, as two shaders in one kernel: the batch statistics (mean, biased variance,
// centred in a second pass as the tf-ops path does), then the normalisation.
// tf ops take ~20 kernels per layer for the same (issue 18).
import * as tf from '@tensorflow/tfjs';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../utils/self_test';
import { seededValues } from '../../utils/rng';
import { dispatchingKernel, program, REDUCE_THREADS, webgpuVsCpu, workgroupSum } from './program';

export const BATCH_NORM_TRAIN = 'SemsegBatchNormTrain';

/** stats [2, C] = (mean, biased variance) of x viewed as [M, C]. */
export function statsProgram(m: number, c: number) {
  return program({
    key: 'semseg_bn_stats', inputs: ['x'], outputShape: [2, c], uniforms: 'rows : i32, channels : i32,',
    perWorkgroup: REDUCE_THREADS, groups: c,
    body: `${workgroupSum}
      fn main(index : i32) {
        let C = uniforms.channels;
        let M = uniforms.rows;
        let c = i32(workgroupId.x);
        var s = 0.0;
        for (var r = i32(localId.x); r < M; r = r + ${REDUCE_THREADS}) { s = s + x[r * C + c]; }
        let mean = reduceSum(s) / f32(M);
        var q = 0.0;
        for (var r = i32(localId.x); r < M; r = r + ${REDUCE_THREADS}) { let d = x[r * C + c] - mean; q = q + d * d; }
        let variance = reduceSum(q) / f32(M);
        if (localId.x == 0u) { result[c] = mean; result[C + c] = variance; }
      }`,
  });
}

/** y = (x - mean) * rsqrt(var + eps) * gamma + beta, per channel (last axis). */
export function normaliseProgram(shape: number[]) {
  return program({
    key: 'semseg_bn_normalise', inputs: ['x', 'stats', 'gamma', 'beta'], outputShape: shape, uniforms: 'eps : f32, channels : i32,',
    body: `
      fn main(index : i32) {
        if (index < uniforms.size) {
          let c = index % uniforms.channels;
          let inv = inverseSqrt(stats[uniforms.channels + c] + uniforms.eps);
          result[index] = (x[index] - stats[c]) * (inv * gamma[c]) + beta[c];
        }
      }`,
  });
}

export const batchNormTrainConfig: tf.KernelConfig = {
  kernelName: BATCH_NORM_TRAIN,
  backendName: 'webgpu',
  kernelFunc: dispatchingKernel((d, { inputs, attrs }) => {
    const { x, gamma, beta } = inputs as Record<string, tf.TensorInfo>;
    const c = x.shape[x.shape.length - 1];
    const m = x.shape.reduce((a, b) => a * b, 1) / c;
    const stats = d.run(statsProgram(m, c), [x], [{ type: 'int32', data: [m] }, { type: 'int32', data: [c] }]);
    const y = d.run(normaliseProgram(x.shape), [x, stats, gamma, beta], [{ type: 'float32', data: [attrs!.epsilon as number] }, { type: 'int32', data: [c] }]);
    return [y, stats];
  }),
};

export const selfTest: SelfTest = {
  async 'output and batch statistics equal the tf-ops formulation on cpu'() {
    const shape = [3, 5, 7, 6];
    const size = shape.reduce((a, b) => a * b, 1);
    const err = await webgpuVsCpu(() => {
      const x = tf.tensor(seededValues(size, 1).map((v) => 3 * v + 1), shape);
      const g = tf.tensor1d(seededValues(6, 2));
      const b = tf.tensor1d(seededValues(6, 3));
      if (tf.getBackend() === 'webgpu') {
        const [y, stats] = tf.engine().runKernel(BATCH_NORM_TRAIN, { x, gamma: g, beta: b }, { epsilon: 1e-5 }) as tf.Tensor[];
        return [y, stats];
      }
      const { mean, variance } = tf.moments(x, [0, 1, 2]);
      const y = tf.add(tf.mul(tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, 1e-5))), g), b);
      return [y, tf.stack([mean, variance])];
    });
    assert.ok(err <= 1e-5, `rel err ${err}`);
  },
};

runIfMain(module, selfTest);
