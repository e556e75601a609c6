// SemsegBatchNormTrain (webgpu): training-mode batch norm over all axes but the
// last, as three shaders in one kernel: the batch statistics in two stages (mean
// and centred sum of squares per segment of rows, then merged per channel), then
// the normalisation.
// tf ops take ~20 kernels per layer for the same (issue 18).
import * as tf from '../tf';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../utils/self_test';
import { seededValues } from '../../utils/rng';
import { dispatchingKernel, program, REDUCE_THREADS, SEGMENT_ROWS, segmentCount, segmentOfWorkgroup, UniformValue, webgpuVsCpu, workgroupSum } from './program';

export const BATCH_NORM_TRAIN = 'SemsegBatchNormTrain';

/**
 * Stage 1: per (segment, channel) of x viewed as [M, C], the segment's mean and its
 * sum of squared deviations M2 (two passes over the segment, which the cache holds):
 * partials [S, 2, C].
 */
function segmentStatsProgram(c: number, segments: number) {
  return program({
    key: 'semseg_bn_stats_segments', inputs: ['x'], outputShape: [segments, 2, c], uniforms: 'rows : i32, channels : i32, segmentRows : i32,',
    perWorkgroup: REDUCE_THREADS, groups: segments * c,
    body: `${workgroupSum}
      fn main(index : i32) {
        ${segmentOfWorkgroup}
        var s = 0.0;
        for (var r = r0 + i32(localId.x); r < r1; r = r + ${REDUCE_THREADS}) { s = s + x[r * C + c]; }
        let mean = reduceSum(s) / f32(r1 - r0);
        var q = 0.0;
        for (var r = r0 + i32(localId.x); r < r1; r = r + ${REDUCE_THREADS}) { let d = x[r * C + c] - mean; q = q + d * d; }
        let m2 = reduceSum(q);
        if (localId.x == 0u && r0 < uniforms.rows) { result[seg * 2 * C + c] = mean; result[seg * 2 * C + C + c] = m2; }
      }`,
  });
}

/**
 * Stage 2: per channel, the segments merged exactly (Chan et al.): mean = sum(n_s mean_s)/M,
 * M2 = sum(M2_s) + sum(n_s (mean_s - mean)^2). stats [2, C] = (mean, M2 / M).
 */
function mergeStatsProgram(c: number) {
  return program({
    key: 'semseg_bn_stats_merge', inputs: ['parts'], outputShape: [2, c], uniforms: 'rows : i32, channels : i32, segmentRows : i32, segments : i32,',
    perWorkgroup: REDUCE_THREADS, groups: c,
    body: `${workgroupSum}
      fn rowsOf(seg : i32) -> f32 { return f32(min(uniforms.segmentRows, uniforms.rows - seg * uniforms.segmentRows)); }
      fn main(index : i32) {
        let C = uniforms.channels;
        let c = i32(workgroupId.x);
        var s = 0.0;
        for (var k = i32(localId.x); k < uniforms.segments; k = k + ${REDUCE_THREADS}) { s = s + rowsOf(k) * parts[k * 2 * C + c]; }
        let mean = reduceSum(s) / f32(uniforms.rows);
        var q = 0.0;
        for (var k = i32(localId.x); k < uniforms.segments; k = k + ${REDUCE_THREADS}) {
          let d = parts[k * 2 * C + c] - mean;
          q = q + parts[k * 2 * C + C + c] + rowsOf(k) * d * d;
        }
        let m2 = reduceSum(q);
        if (localId.x == 0u) { result[c] = mean; result[C + c] = m2 / f32(uniforms.rows); }
      }`,
  });
}

/** y = (x - mean) * rsqrt(var + eps) * gamma + beta, per channel (last axis). */
function normaliseProgram(shape: number[]) {
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
    const segments = segmentCount(m);
    const sizes: UniformValue[] = [{ type: 'int32', data: [m] }, { type: 'int32', data: [c] }, { type: 'int32', data: [SEGMENT_ROWS] }];
    const parts = d.run(segmentStatsProgram(c, segments), [x], sizes);
    const stats = d.run(mergeStatsProgram(c), [parts], [...sizes, { type: 'int32', data: [segments] }]);
    const y = d.run(normaliseProgram(x.shape), [x, stats, gamma, beta], [{ type: 'float32', data: [attrs!.epsilon as number] }, { type: 'int32', data: [c] }]);
    return [y, stats];
  }),
};

export const selfTest: SelfTest = {
  async 'output and batch statistics equal the tf-ops formulation on cpu, in one segment of rows and several'() {
    for (const shape of [[3, 5, 7, 6], [2, 50, 45, 3]]) {
      const size = shape.reduce((a, b) => a * b, 1);
      const c = shape[3];
      const err = await webgpuVsCpu(() => {
        const x = tf.tensor(seededValues(size, 1).map((v) => 3 * v + 1), shape);
        const g = tf.tensor1d(seededValues(c, 2));
        const b = tf.tensor1d(seededValues(c, 3));
        if (tf.getBackend() === 'webgpu') return tf.engine().runKernel(BATCH_NORM_TRAIN, { x, gamma: g, beta: b }, { epsilon: 1e-5 }) as tf.Tensor[];
        const { mean, variance } = tf.moments(x, [0, 1, 2]);
        const y = tf.add(tf.mul(tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, 1e-5))), g), b);
        return [y, tf.stack([mean, variance])];
      });
      assert.ok(err <= 1e-5, `${shape}: rel err ${err}`);
    }
  },
};

runIfMain(module, selfTest);
