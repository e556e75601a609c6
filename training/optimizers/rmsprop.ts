// Optimizer 'rmsprop': steps scaled by a moving average of squared gradients, optional momentum.
import * as tf from '../../backends/tf';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { registerOptimizer, withL2 } from '../optimizers';
import { runIfMain, SelfTest } from '../../utils/self_test';

// Moving-average factor for squared gradients (Keras/tfjs default).
const RHO = 0.9;

export const rmsprop = registerOptimizer({
  name: 'rmsprop',
  summary: 'RMSProp (rho 0.9) with optional momentum; weight decay as L2.',
  options: z.object({
    momentum: z.number().finite().min(0).max(1).default(0.9),
    epsilon: z.number().finite().positive().default(1e-7),
  }),
  slots: (o) => (o.momentum > 0 ? ['ms', 'mom'] : ['ms']),
  update(g, o) {
    const grad = withL2(g);
    const s = g.slots;
    const ms = tf.add(tf.mul(s.ms, RHO), tf.mul(tf.square(grad), 1 - RHO));
    s.ms.assign(ms);
    let upd = tf.div(grad, tf.add(tf.sqrt(ms), o.epsilon));
    if (o.momentum > 0) {
      upd = tf.add(tf.mul(s.mom, o.momentum), upd);
      s.mom.assign(upd);
    }
    return tf.sub(g.w, tf.mul(upd, g.lr));
  },
});

export const selfTest: SelfTest = {
  'the first step is lr * g / sqrt((1 - rho) g^2)'() {
    const next = rmsprop.update({ w: tf.tensor1d([1]), grad: tf.tensor1d([2]), slots: { ms: tf.variable(tf.zeros([1])) }, lr: 0.1, step: 1, decay: 0 }, { momentum: 0, epsilon: 1e-7 }).dataSync()[0];
    assert.ok(Math.abs(next - (1 - 0.1 * 2 / Math.sqrt(0.1 * 4))) < 1e-5, String(next));
  },
};

runIfMain(module, selfTest);
