// SemsegBatchNormGrad (webgpu): the training-mode batch-norm gradient in one kernel:
// per-channel sums of dy and dy*(x - mean) (two stages, see program.ts), then dx,
// then dGamma and dBeta. With a = gamma*inv, inv = rsqrt(var + eps):
//   dx = a*dy - a*inv^2*sum(dy*xc)/M * xc - a*sum(dy)/M,  xc = x - mean.
import * as tf from '../tf';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../utils/self_test';
import { seededValues } from '../../utils/rng';
import { dispatchingKernel, program, REDUCE_THREADS, SEGMENT_ROWS, segmentCount, segmentOfWorkgroup, webgpuVsCpu, workgroupSum } from './program';

export const BATCH_NORM_GRAD = 'SemsegBatchNormGrad';

/** Stage 1: per (segment, channel), sum dy and sum dy*(x - mean): partials [S, 2, C]. */
function segmentSumsProgram(c: number, segments: number) {
  return program({
    key: 'semseg_bn_grad_sums_segments', inputs: ['dy', 'x', 'stats'], outputShape: [segments, 2, c], uniforms: 'rows : i32, channels : i32, segmentRows : i32,',
    perWorkgroup: REDUCE_THREADS, groups: segments * c,
    body: `${workgroupSum}
      fn main(index : i32) {
        ${segmentOfWorkgroup}
        let mean = stats[c];
        var s0 = 0.0;
        var s1 = 0.0;
        for (var r = r0 + i32(localId.x); r < r1; r = r + ${REDUCE_THREADS}) {
          let v = dy[r * C + c];
          s0 = s0 + v;
          s1 = s1 + v * (x[r * C + c] - mean);
        }
        let t0 = reduceSum(s0);
        let t1 = reduceSum(s1);
        if (localId.x == 0u && r0 < uniforms.rows) { result[seg * 2 * C + c] = t0; result[seg * 2 * C + C + c] = t1; }
      }`,
  });
}

/** Stage 2: sums [2, C] = the segments' partials added per channel. */
function mergeSumsProgram(c: number) {
  return program({
    key: 'semseg_bn_grad_sums_merge', inputs: ['parts'], outputShape: [2, c], uniforms: 'channels : i32, segments : i32,',
    perWorkgroup: REDUCE_THREADS, groups: c,
    body: `${workgroupSum}
      fn main(index : i32) {
        let C = uniforms.channels;
        let c = i32(workgroupId.x);
        var s0 = 0.0;
        var s1 = 0.0;
        for (var k = i32(localId.x); k < uniforms.segments; k = k + ${REDUCE_THREADS}) {
          s0 = s0 + parts[k * 2 * C + c];
          s1 = s1 + parts[k * 2 * C + C + c];
        }
        let t0 = reduceSum(s0);
        let t1 = reduceSum(s1);
        if (localId.x == 0u) { result[c] = t0; result[C + c] = t1; }
      }`,
  });
}

function dxProgram(shape: number[]) {
  return program({
    key: 'semseg_bn_grad_dx', inputs: ['dy', 'x', 'stats', 'gamma', 'sums'], outputShape: shape, uniforms: 'eps : f32, channels : i32, rows : f32,',
    body: `
      fn main(index : i32) {
        if (index < uniforms.size) {
          let C = uniforms.channels;
          let c = index % C;
          let inv = inverseSqrt(stats[C + c] + uniforms.eps);
          let a = gamma[c] * inv;
          let b = -a * inv * inv * sums[C + c] / uniforms.rows;
          let k = -a * sums[c] / uniforms.rows;
          result[index] = a * dy[index] + b * (x[index] - stats[c]) + k;
        }
      }`,
  });
}

/** which = 0: dGamma = sum(dy*xc) * inv; which = 1: dBeta = sum(dy). */
function paramProgram(c: number) {
  return program({
    key: 'semseg_bn_grad_params', inputs: ['sums', 'stats'], outputShape: [c], uniforms: 'eps : f32, which : i32,',
    body: `
      fn main(index : i32) {
        if (index < uniforms.size) {
          let C = uniforms.size;
          if (uniforms.which == 0) {
            result[index] = sums[C + index] * inverseSqrt(stats[C + index] + uniforms.eps);
          } else {
            result[index] = sums[index];
          }
        }
      }`,
  });
}

export const batchNormGradConfig: tf.KernelConfig = {
  kernelName: BATCH_NORM_GRAD,
  backendName: 'webgpu',
  kernelFunc: dispatchingKernel((d, { inputs, attrs }) => {
    const { dy, x, stats, gamma } = inputs as Record<string, tf.TensorInfo>;
    const eps = attrs!.epsilon as number;
    const c = x.shape[x.shape.length - 1];
    const m = x.shape.reduce((a, b) => a * b, 1) / c;
    const segments = segmentCount(m);
    const parts = d.run(segmentSumsProgram(c, segments), [dy, x, stats], [{ type: 'int32', data: [m] }, { type: 'int32', data: [c] }, { type: 'int32', data: [SEGMENT_ROWS] }]);
    const sums = d.run(mergeSumsProgram(c), [parts], [{ type: 'int32', data: [c] }, { type: 'int32', data: [segments] }]);
    const dx = d.run(dxProgram(x.shape), [dy, x, stats, gamma, sums], [{ type: 'float32', data: [eps] }, { type: 'int32', data: [c] }, { type: 'float32', data: [m] }]);
    const dGamma = d.run(paramProgram(c), [sums, stats], [{ type: 'float32', data: [eps] }, { type: 'int32', data: [0] }]);
    const dBeta = d.run(paramProgram(c), [sums, stats], [{ type: 'float32', data: [eps] }, { type: 'int32', data: [1] }]);
    return [dx, dGamma, dBeta];
  }),
};

export const selfTest: SelfTest = {
  async 'dx, dGamma and dBeta equal tf.grad of the batch-norm formula on cpu, in one segment of rows and several'() {
    for (const shape of [[2, 9, 5, 4], [2, 50, 45, 4]]) await gradCase(shape);
  },
};

async function gradCase(shape: number[]): Promise<void> {
    const size = shape.reduce((a, b) => a * b, 1);
    const eps = 1e-5;
    const err = await webgpuVsCpu(() => {
      const x = tf.tensor(seededValues(size, 1).map((v) => 2 * v + 0.5), shape);
      const dy = tf.tensor(seededValues(size, 2), shape);
      const g = tf.tensor1d(seededValues(4, 3).map((v) => 1 + v / 2));
      const { mean, variance } = tf.moments(x, [0, 1, 2]);
      if (tf.getBackend() === 'webgpu') {
        const stats = tf.stack([mean, variance]);
        return tf.engine().runKernel(BATCH_NORM_GRAD, { dy, x, stats, gamma: g }, { epsilon: eps }) as tf.Tensor[];
      }
      const f = (xx: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => {
        const m = tf.moments(xx, [0, 1, 2]);
        return tf.sum(tf.mul(tf.add(tf.mul(tf.div(tf.sub(xx, m.mean), tf.sqrt(tf.add(m.variance, eps))), gg), bb), dy));
      };
      return tf.grads(f)([x, g, tf.zeros([4])]);
    });
    assert.ok(err <= 1e-4, `${shape}: rel err ${err}`);
}

runIfMain(module, selfTest);
