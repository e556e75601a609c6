// Optimizer 'adam' (Kingma & Ba 2015), weight decay as L2 in the gradient; adamw.ts is the
// same update with decoupled decay. The step's arithmetic is backends/ops.ts adamStep (on
// webgpu one fused kernel).
import * as tf from '../../backends/tf';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { adamStep } from '../../backends/ops';
import { GroupStep, registerOptimizer } from '../optimizers';
import { runIfMain, SelfTest } from '../../utils/self_test';

export const adamOptions = z.object({
  beta1: z.number().finite().min(0).max(1).default(0.9),
  beta2: z.number().finite().min(0).max(1).default(0.999),
  epsilon: z.number().finite().positive().default(1e-7),
});
type AdamOptions = z.infer<typeof adamOptions>;

/** The Adam update; `decoupled`: AdamW's decay (shrink the weight, apart from the Adam step). */
export function adamUpdate(g: GroupStep, o: AdamOptions, decoupled: boolean): tf.Tensor {
  const { w, slots: s, lr, decay } = g;
  const bc1 = 1 - Math.pow(o.beta1, g.step);
  const bc2 = 1 - Math.pow(o.beta2, g.step);
  // One kernel on webgpu (backends/ops.ts picks it); the L2 term is added there.
  const [nw, nm, nv] = adamStep(w, g.grad, s.m, s.v, { lr, beta1: o.beta1, beta2: o.beta2, epsilon: o.epsilon, bc1, bc2, l2: decoupled ? 0 : decay, shrink: decoupled ? 1 - lr * decay : 1 });
  s.m.assign(nm);
  s.v.assign(nv);
  return nw;
}

export const adam = registerOptimizer({
  name: 'adam',
  summary: 'Adam; weight decay as L2 in the gradient.',
  options: adamOptions,
  slots: () => ['m', 'v'],
  update: (g, o) => adamUpdate(g, o, false),
});

export const selfTest: SelfTest = {
  'the first step moves each weight by lr against its gradient sign'() {
    const slots = { m: tf.variable(tf.zeros([2])), v: tf.variable(tf.zeros([2])) };
    const next = adam.update({ w: tf.tensor1d([1, 1]), grad: tf.tensor1d([3, -0.5]), slots, lr: 0.01, step: 1, decay: 0 }, adamOptions.parse({})).dataSync();
    assert.ok(Math.abs(next[0] - 0.99) < 1e-5 && Math.abs(next[1] - 1.01) < 1e-5, String(next));
  },
};

runIfMain(module, selfTest);
