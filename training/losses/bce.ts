// Loss 'bce': Binary cross-entropy on the sigmoid output (softmax cross-entropy when there are more outputs).
import * as tf from '../../backends/tf';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { crossEntropy, LossContext, pixelOptions } from '../loss_context';
import { registerLoss } from '../losses';
import { runIfMain, SelfTest } from '../../utils/self_test';

export const bce = registerLoss({
  name: 'bce',
  summary: 'Binary cross-entropy on the sigmoid output (softmax cross-entropy when there are more outputs).',
  options: z.object({ ...pixelOptions }),
  compute: (ctx, o) => crossEntropy(ctx, o),
});

export const selfTest: SelfTest = {
  'equals -log p of the label, ignored pixels left out'() {
    const ctx = new LossContext(tf.tensor4d([2, 0, 0, 0], [1, 1, 2, 2]), tf.tensor3d([0, 255], [1, 1, 2], 'int32'), { ignoreIndex: 255 });
    const v = bce.compute(ctx, bce.options.parse({})).dataSync()[0];
    assert.ok(Math.abs(v - Math.log(1 + Math.exp(-2))) < 1e-6, String(v));
  },
};

runIfMain(module, selfTest);
