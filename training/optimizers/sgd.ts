// Optimizer 'sgd': stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.
import * as tf from '../../backends/tf';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { registerOptimizer, withL2 } from '../optimizers';
import { runIfMain, SelfTest } from '../../utils/self_test';

export const sgd = registerOptimizer({
  name: 'sgd',
  summary: 'SGD with momentum (PyTorch form: buf = m*buf + g), optionally Nesterov; weight decay as L2.',
  options: z.object({
    momentum: z.number().finite().min(0).max(1).default(0.9),
    nesterov: z.boolean().default(false),
  }),
  slots: (o) => (o.momentum > 0 ? ['momentum'] : []),
  update(g, o) {
    const grad = withL2(g);
    if (o.momentum === 0) return tf.sub(g.w, tf.mul(grad, g.lr));
    const buf = tf.add(tf.mul(g.slots.momentum, o.momentum), grad);
    g.slots.momentum.assign(buf);
    const upd = o.nesterov ? tf.add(grad, tf.mul(buf, o.momentum)) : buf;
    return tf.sub(g.w, tf.mul(upd, g.lr));
  },
});

export const selfTest: SelfTest = {
  'plain steps by -lr * grad; momentum carries the last step'() {
    const w = tf.tensor1d([1, 2]);
    const step = (o: { momentum: number; nesterov: boolean }, slots: Record<string, tf.Variable>) =>
      Array.from(sgd.update({ w, grad: tf.tensor1d([1, -1]), slots, lr: 0.1, step: 1, decay: 0 }, o).dataSync());
    assert.deepEqual(step({ momentum: 0, nesterov: false }, {}).map((v) => +v.toFixed(6)), [0.9, 2.1]);
    const m = tf.variable(tf.tensor1d([1, 1]));
    assert.deepEqual(step({ momentum: 0.5, nesterov: false }, { momentum: m }).map((v) => +v.toFixed(6)), [0.85, 2.05]);
    assert.deepEqual(Array.from(m.dataSync()), [1.5, -0.5]);
  },
};

runIfMain(module, selfTest);
