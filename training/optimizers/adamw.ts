// Optimizer 'adamw' (Loshchilov & Hutter 2019): Adam with decoupled weight decay.
import * as tf from '../../backends/tf';
import assert from 'node:assert/strict';
import { registerOptimizer } from '../optimizers';
import { adamOptions, adamUpdate } from './adam';
import { runIfMain, SelfTest } from '../../utils/self_test';

export const adamw = registerOptimizer({
  name: 'adamw',
  summary: 'Adam with decoupled weight decay (the weight shrinks by lr * weight_decay apart from the Adam step).',
  options: adamOptions,
  slots: () => ['m', 'v'],
  update: (g, o) => adamUpdate(g, o, true),
});

export const selfTest: SelfTest = {
  'a zero gradient still shrinks a decayed weight by lr * weight_decay'() {
    const slots = { m: tf.variable(tf.zeros([1])), v: tf.variable(tf.zeros([1])) };
    const next = adamw.update({ w: tf.tensor1d([2]), grad: tf.tensor1d([0]), slots, lr: 0.1, step: 1, decay: 0.5 }, adamOptions.parse({})).dataSync()[0];
    assert.ok(Math.abs(next - 2 * (1 - 0.05)) < 1e-6, String(next));
  },
};

runIfMain(module, selfTest);
