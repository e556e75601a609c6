// Batch normalisation whose training-mode gradient broadcasts per-channel vectors
// instead of tiling them: tfjs's BatchNorm gradient tiles full-size tensors, which
// on wasm cost more than all forward convolutions together. On wasm, per-channel
// scaling and channel sums also avoid that backend's slow broadcasting (see affine,
// channelSums), in training and inference; on webgpu, training is one kernel forward and
// one backward (backends/webgpu_kernels). Same weights (gamma, beta, moving_mean,
// moving_variance), same moving-average update and the same outputs (within float
// rounding) as tf.layers.batchNormalization, so checkpoints are unchanged.
import * as tf from '../../backends/tf';
import type { BatchNormalization } from '@tensorflow/tfjs-layers/dist/layers/normalization';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../utils/self_test';
import { registerLayerClass } from './custom_layers';
import { seededValues } from '../../utils/rng';
import { batchNormGradOp, batchNormTrainOp, movingAverageOp } from '../../backends/webgpu_kernels';

type BNArgs = NonNullable<Parameters<typeof tf.layers.batchNormalization>[0]>;
// The class itself is not exported by @tensorflow/tfjs; take it from an instance.
const BatchNormBase = Object.getPrototypeOf(tf.layers.batchNormalization({})).constructor as new (args?: BNArgs) => BatchNormalization;

/** The base class's private fields this layer reads. */
interface BNFields {
  axis: number; momentum: number; epsilon: number; center: boolean; scale: boolean;
  gamma: tf.LayerVariable | null; beta: tf.LayerVariable | null;
  movingMean: tf.LayerVariable; movingVariance: tf.LayerVariable;
}

/**
 * Per-channel sums of x viewed as [M, C], as x^T @ ones[M,1] on the GEMM (tf.sum over
 * axis 0 transposes first), with the caller's cached all-ones operand. Without one
 * (wasm), groups of k rows are first averaged by XNNPACK's average pooling and the GEMM
 * sums the M/k means: 0.6 ms on a fresh [65536,16] against 2.1 ms for the GEMM alone
 * (ones @ x, with x as the packed operand: 8 ms).
 */
function channelSums(x2: tf.Tensor2D, ones: tf.Tensor2D | null): tf.Tensor1D {
  const [m, c] = x2.shape;
  if (ones) return tf.reshape(tf.matMul(x2, ones, true, false), [c]);
  const k = [64, 32, 16, 8, 4, 2].find((r) => m % r === 0) ?? 1;
  const means = k === 1 ? x2 : tf.reshape(tf.avgPool(tf.reshape(x2, [1, m / k, k, c]) as tf.Tensor4D, [1, k], [1, k], 'valid'), [m / k, c]);
  return tf.mul(tf.reshape(tf.matMul(means, tf.ones([m / k, 1]), true, false), [c]), k);
}

/**
 * x * scale + shift per channel (last axis). On wasm this is a 1x1 depthwise
 * convolution with bias: tfjs-backend-wasm broadcasts a [C] operand on a slow
 * generic path, so mul + add took 3.0 ms on [4,128,128,16] against 0.5 ms for
 * XNNPACK's depthwise kernel. Other backends broadcast well.
 */
function affine(x: tf.Tensor, scale: tf.Tensor1D | null, shift: tf.Tensor1D | null): tf.Tensor {
  if (tf.getBackend() !== 'wasm') {
    const scaled = scale ? tf.mul(x, scale) : x;
    return shift ? tf.add(scaled, shift) : scaled;
  }
  const c = x.shape[x.rank - 1];
  const y = tf.fused.depthwiseConv2d({
    x: tf.reshape(x, [1, 1, x.size / c, c]) as tf.Tensor4D,
    filter: tf.reshape(scale ?? tf.ones([c]), [1, 1, c, 1]) as tf.Tensor4D,
    strides: 1, pad: 'valid', bias: shift ?? undefined,
  });
  return tf.reshape(y, x.shape);
}

/**
 * Training-mode batch norm over all axes but the last. Returns y and keeps
 * (tf.keep) the batch mean and biased variance for the moving averages.
 */
export function batchNormTrain(x: tf.Tensor, gamma: tf.Tensor1D, beta: tf.Tensor1D, eps: number): { y: tf.Tensor; mean: tf.Tensor1D; variance: tf.Tensor1D } {
  const c = x.shape[x.rank - 1];
  const m = x.size / c;
  let mean!: tf.Tensor1D;
  let variance!: tf.Tensor1D;
  const f = tf.customGrad((xIn, g, b, save) => {
    const xs = xIn as tf.Tensor;
    // One all-ones operand for the four channel sums, except on wasm (see channelSums).
    const ones = tf.getBackend() === 'wasm' ? null : tf.ones([m, 1]) as tf.Tensor2D;
    const mu = tf.div(channelSums(tf.reshape(xs, [m, c]), ones), m) as tf.Tensor1D;
    const xc = tf.getBackend() === 'wasm' ? affine(xs, null, tf.neg(mu) as tf.Tensor1D) : tf.sub(xs, mu);
    const v = tf.div(channelSums(tf.reshape(tf.square(xc), [m, c]), ones), m) as tf.Tensor1D;
    const inv = tf.rsqrt(tf.add(v, eps)) as tf.Tensor1D;
    const y = affine(xc, tf.mul(inv, g as tf.Tensor1D) as tf.Tensor1D, b as tf.Tensor1D);
    mean = tf.keep(mu);
    variance = tf.keep(v);
    (save as tf.GradSaveFunc)([xc, inv, g as tf.Tensor, ...(ones ? [ones] : [])]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const d = dy as tf.Tensor;
        const [xcS, invS, gS, onesS = null] = saved as [tf.Tensor, tf.Tensor1D, tf.Tensor1D, tf.Tensor2D?];
        const dBeta = channelSums(tf.reshape(d, [m, c]), onesS);
        const dyXc = channelSums(tf.reshape(tf.mul(d, xcS), [m, c]), onesS); // sum dy*(x-mean)
        const dGamma = tf.mul(dyXc, invS) as tf.Tensor1D;
        // dx = a*dy + b*xc + k, with a = gamma*inv, b = -a*inv^2*sum(dy*xc)/M, k = -a*sum(dy)/M.
        const a = tf.mul(gS, invS) as tf.Tensor1D;
        const bCoef = tf.mul(tf.mul(a, tf.square(invS)), tf.div(dyXc, -m)) as tf.Tensor1D;
        const k = tf.mul(a, tf.div(dBeta, -m)) as tf.Tensor1D;
        const dx = tf.add(affine(d, a, null), affine(xcS, bCoef, k));
        return [dx, dGamma, dBeta];
      },
    };
  });
  const y = f(x, gamma, beta) as tf.Tensor;
  return { y, mean, variance };
}

/**
 * batchNormTrain on webgpu: one kernel forward, one backward (backends/webgpu_kernels),
 * instead of ~20 and ~15 op kernels. Keeps (tf.keep) stats [2, C] = (mean, biased variance).
 */
function batchNormTrainWebgpu(x: tf.Tensor, gamma: tf.Tensor1D, beta: tf.Tensor1D, eps: number): { y: tf.Tensor; stats: tf.Tensor2D } {
  let stats!: tf.Tensor2D;
  const f = tf.customGrad((xIn, g, b, save) => {
    const r = batchNormTrainOp(xIn as tf.Tensor, g as tf.Tensor1D, b as tf.Tensor1D, eps);
    stats = tf.keep(r.stats);
    (save as tf.GradSaveFunc)([xIn as tf.Tensor, r.stats, g as tf.Tensor]);
    return {
      value: r.y,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const [xs, st, gs] = saved as [tf.Tensor, tf.Tensor2D, tf.Tensor1D];
        return batchNormGradOp(dy as tf.Tensor, xs, st, gs, eps);
      },
    };
  });
  return { y: f(x, gamma, beta) as tf.Tensor, stats };
}

/** Drop-in for tf.layers.batchNormalization (channels last) with the faster training gradient. */
export class FastBatchNorm extends BatchNormBase {
  static className = 'FastBatchNorm';

  call(inputs: tf.Tensor | tf.Tensor[], kwargs: Record<string, unknown>): tf.Tensor | tf.Tensor[] {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    const s = this as unknown as BNFields;
    const lastAxis = s.axis === -1 || s.axis === x.rank - 1;
    if (!lastAxis || !s.gamma || !s.beta) return super.call(inputs, kwargs);
    if (!kwargs.training) {
      if (tf.getBackend() !== 'wasm') return super.call(inputs, kwargs);
      // Inference with the moving statistics as one affine map: wasm's FusedBatchNorm
      // kernel took 6.9 ms on [4,128,128,16], the depthwise affine 0.5 ms.
      return tf.tidy(() => {
        const scale = tf.mul(s.gamma!.read(), tf.rsqrt(tf.add(s.movingVariance.read(), s.epsilon))) as tf.Tensor1D;
        const shift = tf.sub(s.beta!.read(), tf.mul(s.movingMean.read(), scale)) as tf.Tensor1D;
        return affine(x, scale, shift);
      });
    }
    if (tf.getBackend() === 'webgpu') {
      return tf.tidy(() => {
        const { y, stats } = batchNormTrainWebgpu(x, s.gamma!.read() as tf.Tensor1D, s.beta!.read() as tf.Tensor1D, s.epsilon);
        const [m, v] = movingAverageOp(s.movingMean.read() as tf.Tensor1D, s.movingVariance.read() as tf.Tensor1D, stats, s.momentum);
        s.movingMean.write(m);
        s.movingVariance.write(v);
        stats.dispose();
        return y;
      });
    }
    return tf.tidy(() => {
      const { y, mean, variance } = batchNormTrain(x, s.gamma!.read() as tf.Tensor1D, s.beta!.read() as tf.Tensor1D, s.epsilon);
      // Same update as tfjs: v <- v - (v - batch) * (1 - momentum).
      for (const [w, batch] of [[s.movingMean, mean], [s.movingVariance, variance]] as const) {
        const old = w.read();
        w.write(tf.sub(old, tf.mul(tf.sub(old, batch), 1 - s.momentum)));
      }
      tf.dispose([mean, variance]);
      return y;
    });
  }
}
registerLayerClass(FastBatchNorm);

/** For export: stock BatchNormalization has the same config and weights. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function portableBatchNorm(layer: any): void {
  layer.class_name = 'BatchNormalization';
}

export function fastBatchNorm(args: BNArgs): FastBatchNorm {
  return new FastBatchNorm(args);
}

// ---------------------------------------------------------------------------

/** Seeded values in [offset - scale, offset + scale). */
function seeded(count: number, seed: number, scale = 1, offset = 0): Float32Array {
  return seededValues(count, seed).map((v) => v * scale + offset);
}

function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  let m = 1e-3;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / m;
}

/**
 * Runs one training-mode forward/backward of `layer` on fixed data and returns y, the
 * gradients w.r.t. x, gamma, beta, and the updated moving statistics.
 */
export function bnTrainingRun(layer: tf.layers.Layer, shape: number[], seed = 3): Record<string, Float32Array> {
  const c = shape[shape.length - 1];
  const size = shape.reduce((p, q) => p * q, 1);
  return tf.tidy(() => {
    // A non-zero mean and a scale != 1 so centring and scaling are both exercised.
    const x = tf.tensor(seeded(size, seed, 2, 0.7), shape);
    const r = tf.tensor(seeded(size, seed + 1), shape);
    if (!layer.built) layer.apply(x); // builds weights
    const [gamma, beta] = layer.trainableWeights.map((w) => w.read() as tf.Variable);
    gamma.assign(tf.tensor1d(seeded(c, seed + 2, 0.5, 1)));
    beta.assign(tf.tensor1d(seeded(c, seed + 3, 0.5)));
    const fn = (xx: tf.Tensor) => tf.sum(tf.mul(layer.apply(xx, { training: true }) as tf.Tensor, r)) as tf.Scalar;
    const { value, grads } = tf.variableGrads(() => fn(x), [gamma, beta]);
    const dx = tf.grad(fn)(x);
    const out = layer.apply(x, { training: true }) as tf.Tensor;
    const [mm, mv] = layer.nonTrainableWeights.map((w) => w.read());
    return {
      y: out.dataSync() as Float32Array,
      loss: value.dataSync() as Float32Array,
      dx: dx.dataSync() as Float32Array,
      dGamma: grads[gamma.name].dataSync() as Float32Array,
      dBeta: grads[beta.name].dataSync() as Float32Array,
      movingMean: mm.dataSync() as Float32Array,
      movingVariance: mv.dataSync() as Float32Array,
    };
  });
}

/** Max relative difference per output between FastBatchNorm and tfjs's layer. */
export function compareWithTfjs(shape: number[], seed = 3): Record<string, number> {
  const args = { momentum: 0.9, epsilon: 1e-5 };
  const ours = fastBatchNorm(args);
  const theirs = tf.layers.batchNormalization(args);
  const a = bnTrainingRun(ours, shape, seed);
  const b = bnTrainingRun(theirs, shape, seed);
  ours.dispose();
  theirs.dispose();
  return Object.fromEntries(Object.keys(a).map((k) => [k, maxRelDiff(a[k], b[k])]));
}

export const selfTest: SelfTest = {
  'same weight names and inference output as the tfjs layer'() {
    const ours = fastBatchNorm({ name: 'blk_bn1', momentum: 0.9, epsilon: 1e-5 });
    const x = tf.tensor4d(seeded(2 * 3 * 3 * 4, 9), [2, 3, 3, 4]);
    const y = ours.apply(x) as tf.Tensor;
    assert.deepEqual(ours.weights.map((w) => w.originalName), ['blk_bn1/gamma', 'blk_bn1/beta', 'blk_bn1/moving_mean', 'blk_bn1/moving_variance']);
    const theirs = tf.layers.batchNormalization({ momentum: 0.9, epsilon: 1e-5 });
    const y2 = theirs.apply(x) as tf.Tensor;
    assert.deepEqual(Array.from(y.dataSync()), Array.from(y2.dataSync()));
    tf.dispose([x, y, y2]);
    ours.dispose();
    theirs.dispose();
  },
  'no tensors leak in training mode'() {
    const layer = fastBatchNorm({});
    bnTrainingRun(layer, [2, 3, 3, 2]);
    const before = tf.memory().numTensors;
    bnTrainingRun(layer, [2, 3, 3, 2]);
    assert.equal(tf.memory().numTensors, before);
    layer.dispose();
  },
};

runIfMain(module, selfTest);
