// SemsegBatchNormTrain (webgpu): training-mode batch norm over all axes but the
// last, as two shaders in one kernel: the batch statistics (mean, biased variance,
// centred in a second pass as the tf-ops path does), then the normalisation.
// tf ops take ~20 kernels per layer for the same (issue 18).
import * as tf from '@tensorflow/tfjs';
import { dispatchingKernel, program } from './program';
import { REDUCE_THREADS, workgroupSum } from './channel_reduce';

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
