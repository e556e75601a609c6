// The ops whose fastest form differs by backend, chosen here so that callers (models/layers/
// batch_norm.ts, training/optimizers/adam.ts) never ask which backend runs. On webgpu they
// are this project's fused kernels (webgpu_kernels/); elsewhere stock ops, arranged for the
// backend (wasm: per-channel scaling as a 1x1 depthwise convolution, channel sums through
// average pooling). Registering these as kernels for cpu and wasm too would run ops inside
// a kernel function; the op forms below are exactly what those backends ran before.
import * as tf from './tf';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../utils/self_test';
import { seededValues } from '../utils/rng';
import { adamUpdateOp, batchNormGradOp, batchNormTrainOp, movingAverageOp } from './webgpu_kernels';
import type { AdamStep } from './webgpu_kernels/adam_update';

export type { AdamStep };

const onWasm = () => tf.getBackend() === 'wasm';
const onWebgpu = () => tf.getBackend() === 'webgpu';

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
  if (!onWasm()) {
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
function batchNormTrainOps(x: tf.Tensor, gamma: tf.Tensor1D, beta: tf.Tensor1D, eps: number): { y: tf.Tensor; mean: tf.Tensor1D; variance: tf.Tensor1D } {
  const c = x.shape[x.rank - 1];
  const m = x.size / c;
  let mean!: tf.Tensor1D;
  let variance!: tf.Tensor1D;
  const f = tf.customGrad((xIn, g, b, save) => {
    const xs = xIn as tf.Tensor;
    // One all-ones operand for the four channel sums, except on wasm (see channelSums).
    const ones = onWasm() ? null : tf.ones([m, 1]) as tf.Tensor2D;
    const mu = tf.div(channelSums(tf.reshape(xs, [m, c]), ones), m) as tf.Tensor1D;
    const xc = onWasm() ? affine(xs, null, tf.neg(mu) as tf.Tensor1D) : tf.sub(xs, mu);
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

/**
 * One training-mode batch norm over all axes but the last (channels last): y, and the
 * moving statistics after this batch, v - (v - batch) * (1 - momentum) as tfjs updates them.
 */
export function batchNormTrainStep(
  x: tf.Tensor, gamma: tf.Tensor1D, beta: tf.Tensor1D, eps: number,
  movingMean: tf.Tensor1D, movingVariance: tf.Tensor1D, momentum: number,
): { y: tf.Tensor; movingMean: tf.Tensor1D; movingVariance: tf.Tensor1D } {
  if (onWebgpu()) {
    const { y, stats } = batchNormTrainWebgpu(x, gamma, beta, eps);
    const [m, v] = movingAverageOp(movingMean, movingVariance, stats, momentum);
    stats.dispose();
    return { y, movingMean: m, movingVariance: v };
  }
  const { y, mean, variance } = batchNormTrainOps(x, gamma, beta, eps);
  const update = (old: tf.Tensor1D, batch: tf.Tensor1D) => tf.sub(old, tf.mul(tf.sub(old, batch), 1 - momentum)) as tf.Tensor1D;
  const out = { y, movingMean: update(movingMean, mean), movingVariance: update(movingVariance, variance) };
  tf.dispose([mean, variance]);
  return out;
}

/**
 * Inference-mode batch norm with the moving statistics. On wasm one affine map: its
 * FusedBatchNorm kernel took 6.9 ms on [4,128,128,16], the depthwise affine 0.5 ms;
 * elsewhere `stock` (the tfjs layer's own call).
 */
export function batchNormInference(
  x: tf.Tensor, gamma: tf.Tensor1D, beta: tf.Tensor1D, movingMean: tf.Tensor1D, movingVariance: tf.Tensor1D, eps: number,
  stock: () => tf.Tensor | tf.Tensor[],
): tf.Tensor | tf.Tensor[] {
  if (!onWasm()) return stock();
  return tf.tidy(() => {
    const scale = tf.mul(gamma, tf.rsqrt(tf.add(movingVariance, eps))) as tf.Tensor1D;
    const shift = tf.sub(beta, tf.mul(movingMean, scale)) as tf.Tensor1D;
    return affine(x, scale, shift);
  });
}

/**
 * One Adam/AdamW step (see webgpu_kernels/adam_update.ts for the arithmetic): [new weights,
 * m, v]. On webgpu one kernel instead of ~13.
 */
export function adamStep(w: tf.Tensor, g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, a: AdamStep): [tf.Tensor, tf.Tensor, tf.Tensor] {
  if (onWebgpu()) return adamUpdateOp(w, g, m, v, a);
  const grad = a.l2 > 0 ? tf.add(g, tf.mul(w, a.l2)) : g; // L2 in the gradient (Adam)
  const m2 = tf.add(tf.mul(m, a.beta1), tf.mul(grad, 1 - a.beta1));
  const v2 = tf.add(tf.mul(v, a.beta2), tf.mul(tf.square(grad), 1 - a.beta2));
  const denom = tf.add(tf.div(tf.sqrt(v2), Math.sqrt(a.bc2)), a.epsilon);
  const base = a.shrink !== 1 ? tf.mul(w, a.shrink) : w; // AdamW's decoupled decay
  return [tf.sub(base, tf.mul(tf.div(m2, denom), a.lr / a.bc1)), m2, v2];
}

export const selfTest: SelfTest = {
  'the op form of the Adam step is the textbook update'() {
    const w = tf.tensor1d([1, -2]);
    const g = tf.tensor1d([3, -0.5]);
    const z = tf.zeros([2]);
    const a = { lr: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-7, bc1: 0.1, bc2: 0.001, l2: 0, shrink: 1 };
    const [nw, m, v] = adamStep(w, g, z, z, a).map((t) => Array.from(t.dataSync()));
    assert.ok(Math.abs(nw[0] - 0.99) < 1e-5 && Math.abs(nw[1] + 1.99) < 1e-5, String(nw));
    assert.ok(Math.abs(m[0] - 0.3) < 1e-6 && Math.abs(v[1] - 0.00025) < 1e-9, `${m} ${v}`);
  },
  'the train step\'s moving statistics follow tfjs\'s update; inference without a fast form is the stock call'() {
    const x = tf.tensor4d(seededValues(2 * 3 * 3 * 2, 5), [2, 3, 3, 2]);
    const one = tf.ones([2]) as tf.Tensor1D;
    const zero = tf.zeros([2]) as tf.Tensor1D;
    const r = batchNormTrainStep(x, one, zero, 1e-5, zero, one, 0.9);
    const mean = tf.mean(x, [0, 1, 2]);
    const want = tf.mul(mean, 0.1);
    assert.ok(Math.abs(r.movingMean.dataSync()[0] - want.dataSync()[0]) < 1e-6);
    if (!onWasm()) assert.equal(batchNormInference(x, one, zero, zero, one, 1e-5, () => x), x);
    tf.dispose([x, one, zero, r.y, r.movingMean, r.movingVariance, mean, want]);
  },
};

runIfMain(module, selfTest);
