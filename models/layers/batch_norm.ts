// Batch normalisation whose training-mode gradient broadcasts per-channel vectors
// instead of tiling them: tfjs's BatchNorm gradient tiles full-size tensors, which
// on wasm cost more than all forward convolutions together. The arithmetic is in
// backends/ops.ts, which picks each backend's fastest form (wasm: per-channel scaling and
// channel sums that avoid its slow broadcasting, in training and inference; webgpu: one
// kernel forward and one backward). Same weights (gamma, beta, moving_mean,
// moving_variance), same moving-average update and the same outputs (within float
// rounding) as tf.layers.batchNormalization, so checkpoints are unchanged.
import * as tf from '../../backends/tf';
import type { BatchNormalization } from '@tensorflow/tfjs-layers/dist/layers/normalization';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../utils/self_test';
import { registerLayerClass } from './custom_layers';
import { seededValues } from '../../utils/rng';
import { batchNormInference, batchNormTrainStep } from '../../backends/ops';

type BNArgs = NonNullable<Parameters<typeof tf.layers.batchNormalization>[0]>;
// The class itself is not exported by @tensorflow/tfjs; take it from an instance.
const BatchNormBase = Object.getPrototypeOf(tf.layers.batchNormalization({})).constructor as new (args?: BNArgs) => BatchNormalization;

/** The base class's private fields this layer reads. */
interface BNFields {
  axis: number; momentum: number; epsilon: number; center: boolean; scale: boolean;
  gamma: tf.LayerVariable | null; beta: tf.LayerVariable | null;
  movingMean: tf.LayerVariable; movingVariance: tf.LayerVariable;
}

/** Drop-in for tf.layers.batchNormalization (channels last) with the faster training gradient. */
export class FastBatchNorm extends BatchNormBase {
  static className = 'FastBatchNorm';

  call(inputs: tf.Tensor | tf.Tensor[], kwargs: Record<string, unknown>): tf.Tensor | tf.Tensor[] {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    const s = this as unknown as BNFields;
    const lastAxis = s.axis === -1 || s.axis === x.rank - 1;
    if (!lastAxis || !s.gamma || !s.beta) return super.call(inputs, kwargs);
    const [gamma, beta] = [s.gamma.read() as tf.Tensor1D, s.beta.read() as tf.Tensor1D];
    const [mean, variance] = [s.movingMean.read() as tf.Tensor1D, s.movingVariance.read() as tf.Tensor1D];
    if (!kwargs.training) return batchNormInference(x, gamma, beta, mean, variance, s.epsilon, () => super.call(inputs, kwargs));
    return tf.tidy(() => {
      const r = batchNormTrainStep(x, gamma, beta, s.epsilon, mean, variance, s.momentum);
      s.movingMean.write(r.movingMean);
      s.movingVariance.write(r.movingVariance);
      return r.y;
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
