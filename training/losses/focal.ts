// Loss 'focal' (Lin et al. 2017): cross-entropy scaled by (1 - p_t)^gamma, so that the
// pixels already classified well weigh less.
import * as tf from '../../backends/tf';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { LossContext, pixelOptions, weightedMean } from '../loss_context';
import { registerLoss } from '../losses';
import { runIfMain, SelfTest } from '../../utils/self_test';

/** base^gamma without pow's gradient trouble at base 0. */
function powGamma(base: tf.Tensor, gamma: number): tf.Tensor {
  if (gamma === 0) return tf.onesLike(base);
  if (Number.isInteger(gamma) && gamma <= 4) {
    let r = base;
    for (let i = 1; i < gamma; i++) r = tf.mul(r, base);
    return r;
  }
  return tf.exp(tf.mul(tf.log(tf.maximum(base, 1e-12)), gamma));
}

export const focal = registerLoss({
  name: 'focal',
  summary: 'Focal loss: cross-entropy down-weighting the well-classified pixels by (1 - p)^focal_gamma.',
  options: z.object({ focal_gamma: z.number().finite().min(0).default(2), ...pixelOptions }),
  compute(ctx, o) {
    const g = o.focal_gamma;
    let perPixel: tf.Tensor;
    if (ctx.c === 1) {
      // z = x for fg, -x for bg: p_t = σ(z), -log p_t = softplus(-z), (1-p_t)^γ = exp(-γ softplus(z)).
      const z = tf.mul(ctx.x(), tf.sub(tf.mul(ctx.y(), 2), 1));
      const nll = tf.softplus(tf.neg(z));
      perPixel = g === 0 ? nll : tf.mul(tf.exp(tf.mul(tf.softplus(z), -g)), nll);
    } else {
      const logPt = ctx.logPt();
      perPixel = tf.neg(tf.mul(powGamma(tf.sub(1, tf.exp(logPt)), g), logPt));
    }
    return weightedMean(perPixel, ctx.pixelWeight(o));
  },
});

export const selfTest: SelfTest = {
  'gamma 0 is cross-entropy; a larger gamma weighs a well-classified pixel less'() {
    const ctx = () => new LossContext(tf.tensor4d([2, 0], [1, 1, 1, 2]), tf.tensor3d([0], [1, 1, 1], 'int32'), { ignoreIndex: 255 });
    const at = (focal_gamma: number) => focal.compute(ctx(), focal.options.parse({ focal_gamma })).dataSync()[0];
    assert.ok(Math.abs(at(0) - Math.log(1 + Math.exp(-2))) < 1e-6);
    assert.ok(at(2) < at(1) && at(1) < at(0));
  },
};

runIfMain(module, selfTest);
