// Loss 'lovasz' (Berman 2018): the convex surrogate of each class's Jaccard loss, averaged
// over the classes present in the batch (class-weighted if given). Pixels are pooled over
// the batch. A single sigmoid output is scored as two classes, background and foreground.
import * as tf from '../../backends/tf';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { EPS, LossContext } from '../loss_context';
import { registerLoss } from '../losses';
import { runIfMain, SelfTest } from '../../utils/self_test';

/**
 * sum over present classes of w_c * <sorted errors, Lovász gradient of the sorted labels>,
 * divided by the summed weights. The sort is not differentiable, and tfjs has no gradient
 * for TopK (nor, on wasm, for gather), so the value is built in a customGrad whose
 * gradient is the per-pixel Lovász weight, scattered back to pixel order.
 */
const lovaszOfErrors = (err: tf.Tensor2D, fg: tf.Tensor2D, w: tf.Tensor1D): tf.Scalar =>
  tf.customGrad((eIn, saveIn) => {
    const [e, save] = [eIn as tf.Tensor2D, saveIn as tf.GradSaveFunc];
    const [c, n] = e.shape as [number, number];
    const { indices } = tf.topk(e, n); // descending per class
    const flat = tf.reshape(tf.add(indices, tf.mul(tf.range(0, c, 1, 'int32').reshape([c, 1]), tf.scalar(n, 'int32'))), [-1, 1]);
    const fgSorted = tf.reshape(tf.gatherND(tf.reshape(fg, [-1]), flat), [c, n]); // gatherND: 10x gather's speed on wasm
    const gts = tf.sum(fg, 1, true);
    const inter = tf.sub(gts, tf.cumsum(fgSorted, 1));
    const union = tf.add(gts, tf.cumsum(tf.sub(1, fgSorted), 1));
    const jac = tf.sub(1, tf.div(inter, union));
    const grad = tf.concat([tf.slice(jac, [0, 0], [c, 1]), tf.sub(tf.slice(jac, [0, 1], [c, n - 1]), tf.slice(jac, [0, 0], [c, n - 1]))], 1);
    const present = tf.mul(tf.greater(tf.reshape(gts, [c]), 0).cast('float32'), w);
    const scale = tf.div(present, tf.maximum(tf.sum(present), EPS)).reshape([c, 1]);
    const perPixel = tf.mul(tf.reshape(tf.scatterND(flat, tf.reshape(grad, [-1]), [c * n]), [c, n]), scale);
    save([perPixel]);
    return {
      value: tf.sum(tf.mul(e, perPixel)) as tf.Scalar,
      gradFunc: (dy, saved) => tf.mul(dy, saved[0]),
    };
  })(err) as tf.Scalar;

export const lovasz = registerLoss({
  name: 'lovasz',
  summary: 'Lovász-softmax: a convex surrogate of each class\'s Jaccard loss (Berman 2018).',
  options: z.object({}),
  compute(ctx) {
    let probs: tf.Tensor, oh: tf.Tensor;
    if (ctx.c === 1) {
      const p = ctx.probs();
      probs = tf.stack([tf.sub(1, p), p], -1);
      oh = tf.stack([tf.sub(ctx.valid(), ctx.y()), ctx.y()], -1);
    } else {
      probs = ctx.probs();
      oh = ctx.oneHot();
    }
    const c = probs.shape[3]!;
    const fg = tf.transpose(tf.reshape(oh, [-1, c])) as tf.Tensor2D; // [C, P]
    const valid = tf.reshape(ctx.valid(), [1, -1]);
    // |fg - p| is 0 at ignored pixels: they sort last and add nothing, as if left out.
    const err = tf.mul(tf.abs(tf.sub(fg, tf.transpose(tf.reshape(probs, [-1, c])))), valid) as tf.Tensor2D;
    const cw = ctx.o.classWeights; // [bg, fg] for a sigmoid output, as the two classes here
    return lovaszOfErrors(err, fg, cw ? tf.tensor1d(cw) : tf.ones([c]));
  },
});

export const selfTest: SelfTest = {
  'a perfect prediction scores 0, a wrong one more'() {
    const labels = tf.tensor3d([0, 1, 2], [1, 1, 3], 'int32');
    const at = (logits: number[]) => lovasz.compute(new LossContext(tf.tensor4d(logits, [1, 1, 3, 3]), labels, { ignoreIndex: 255 }), {}).dataSync()[0];
    const right = at([20, 0, 0, 0, 20, 0, 0, 0, 20]);
    assert.ok(right < 1e-6, String(right));
    assert.ok(at([0, 20, 0, 0, 0, 20, 20, 0, 0]) > 0.9);
  },
};

runIfMain(module, selfTest);
