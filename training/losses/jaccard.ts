// Loss 'jaccard': Soft Jaccard (IoU) loss: 1 - mean over classes of (|P∩Y| + smooth) / (|P∪Y| + smooth).
import * as tf from '../../backends/tf';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { EPS, LossContext, oneMinusMean, overlapOptions, softOverlap } from '../loss_context';
import { registerLoss } from '../losses';
import { runIfMain, SelfTest } from '../../utils/self_test';

export const jaccard = registerLoss({
  name: 'jaccard',
  summary: 'Soft Jaccard (IoU) loss: 1 - mean over classes of (|P∩Y| + smooth) / (|P∪Y| + smooth).',
  options: z.object({ ...overlapOptions }),
  compute(ctx, o) {
    const { inter, sums } = softOverlap(ctx, o.per_image);
    const s = o.smooth + EPS; // EPS: a class empty in both scores 1, not 0/0
    return oneMinusMean(ctx, tf.div(tf.add(inter, s), tf.add(tf.sub(sums, inter), s)));
  },
});

export const selfTest: SelfTest = {
  'one sigmoid output: from the soft overlap with smooth'() {
    // p = 0.5 at the one foreground pixel: intersection 0.5, sums 1.5.
    const ctx = new LossContext(tf.zeros([1, 1, 1, 1]) as tf.Tensor4D, tf.tensor3d([1], [1, 1, 1], 'int32'), { ignoreIndex: 255 });
    const v = jaccard.compute(ctx, jaccard.options.parse({})).dataSync()[0];
    assert.ok(Math.abs(v - (1 - (0.5 + 1) / (1.5 - 0.5 + 1))) < 1e-5, String(v));
  },
};

runIfMain(module, selfTest);
