// The flat-buffer optimizer (training/optimizers.ts) against the per-variable
// reference update, and its per-variable state, on cpu and wasm.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../backends/tf';
import '@tensorflow/tfjs-backend-wasm';
import { createOptimizer } from '../training/optimizers';
import { parseConfig } from '../config/resolve';
import { seededValues } from '../utils/rng';
import { PerTensorReference } from './helpers/per_tensor_optimizer';

let uid = 0;
/** Shapes like a small U-Net's: conv kernels, biases, BN gamma/beta, a 2-D kernel. */
function makeVars(): Record<string, tf.Variable> {
  const id = uid++;
  const shapes: Record<string, number[]> = {
    'c1/kernel': [3, 3, 2, 4], 'c1/bias': [4], 'bn/gamma': [4], 'bn/beta': [4], 'dense/kernel': [5, 3], 'c2/kernel': [1, 1, 4, 1],
  };
  const out: Record<string, tf.Variable> = {};
  Object.entries(shapes).forEach(([n, s], i) => {
    const size = s.reduce((a, b) => a * b, 1);
    out[n] = tf.variable(tf.tensor(seededValues(size, 40 + i), s), true, `flat${id}/${n}`);
  });
  return out;
}

/** Gradients of a fixed non-quadratic loss, different each step. */
function gradsFor(vars: Record<string, tf.Variable>, step: number): Record<string, tf.Tensor> {
  const out: Record<string, tf.Tensor> = {};
  Object.entries(vars).forEach(([n, v], i) => {
    out[n] = tf.tidy(() => tf.add(tf.mul(tf.sin(v), 3), tf.tensor(seededValues(v.size, 100 * step + i), v.shape)));
  });
  return out;
}

const CASES: Array<[string, Record<string, unknown>, Record<string, unknown>]> = [
  ['sgd', { name: 'sgd', lr: 0.1, momentum: 0 }, {}],
  ['momentum', { name: 'sgd', lr: 0.1, momentum: 0.9 }, {}],
  ['nesterov + weight decay', { name: 'sgd', lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 0.01 }, {}],
  ['adam', { name: 'adam', lr: 0.01 }, {}],
  ['adam + L2', { name: 'adam', lr: 0.01, weight_decay: 0.05 }, {}],
  ['adamw', { name: 'adamw', lr: 0.01, weight_decay: 0.1 }, {}],
  ['rmsprop', { name: 'rmsprop', lr: 0.01, momentum: 0 }, {}],
  ['rmsprop + momentum', { name: 'rmsprop', lr: 0.01, momentum: 0.5 }, {}],
  ['adamw + grad_clip', { name: 'adamw', lr: 0.01, weight_decay: 0.1 }, { grad_clip: 0.5 }],
  ['momentum + grad_clip', { name: 'sgd', lr: 0.1, momentum: 0.9 }, { grad_clip: 1 }],
];

for (const backend of ['cpu', 'wasm']) {
  for (const [label, optimizer, extra] of CASES) {
    test(`${backend}: ${label}: flat update matches the per-variable reference within 1e-6 over 6 steps`, async () => {
      assert.ok(await tf.setBackend(backend), `backend ${backend} did not start`);
      const cfg = parseConfig({ training: { optimizer, ...extra } });
      const a = makeVars();
      const b = makeVars();
      const flat = createOptimizer(cfg);
      const ref = new PerTensorReference(cfg.training.optimizer, cfg.training.grad_clip);
      for (let s = 0; s < 6; s++) {
        const ga = gradsFor(a, s);
        const gb = gradsFor(b, s);
        flat.applyGradients(ga, a);
        ref.applyGradients(gb, b);
        tf.dispose([...Object.values(ga), ...Object.values(gb)]);
      }
      let moved = 0;
      for (const n of Object.keys(a)) {
        const x = a[n].dataSync();
        const y = b[n].dataSync();
        const init = seededValues(x.length, 40 + Object.keys(a).indexOf(n));
        for (let i = 0; i < x.length; i++) {
          assert.ok(Math.abs(x[i] - y[i]) <= 1e-6, `${n}[${i}]: ${x[i]} vs ${y[i]}`);
          moved = Math.max(moved, Math.abs(x[i] - init[i]));
        }
      }
      assert.ok(moved > 1e-3, 'weights did not move');
      flat.dispose();
      ref.dispose();
      tf.dispose([...Object.values(a), ...Object.values(b)]);
    });
  }
}

test('adamw with a custom decay filter decays only what the filter names', async () => {
  await tf.setBackend('cpu');
  const cfg = parseConfig({ training: { optimizer: { name: 'adamw', lr: 0.01, weight_decay: 0.2 } } });
  const filter = (n: string) => n.startsWith('bn/');
  const a = makeVars();
  const b = makeVars();
  const flat = createOptimizer(cfg, { decayFilter: filter });
  const ref = new PerTensorReference(cfg.training.optimizer, undefined, filter);
  for (let s = 0; s < 4; s++) {
    const ga = gradsFor(a, s);
    const gb = gradsFor(b, s);
    flat.applyGradients(ga, a);
    ref.applyGradients(gb, b);
    tf.dispose([...Object.values(ga), ...Object.values(gb)]);
  }
  for (const n of Object.keys(a)) {
    const x = a[n].dataSync();
    const y = b[n].dataSync();
    for (let i = 0; i < x.length; i++) assert.ok(Math.abs(x[i] - y[i]) <= 1e-6, `${n}[${i}]: ${x[i]} vs ${y[i]}`);
  }
  flat.dispose();
  ref.dispose();
});

test('state is per variable (`<var>/<slot>`, variable shapes, first-update order) and round-trips exactly', async () => {
  await tf.setBackend('cpu');
  const cfg = parseConfig({ training: { optimizer: { name: 'adamw', lr: 0.01, weight_decay: 0.1 } } });
  const a = makeVars();
  const opt = createOptimizer(cfg);
  for (let s = 0; s < 3; s++) {
    const g = gradsFor(a, s);
    opt.applyGradients(g, a);
    tf.dispose(Object.values(g));
  }
  const st = await opt.getState();
  assert.deepEqual(st.tensors.map((t) => t.name), Object.keys(a).flatMap((n) => [`${n}/m`, `${n}/v`]));
  for (const t of st.tensors) assert.deepEqual(t.shape, a[t.name.slice(0, t.name.lastIndexOf('/'))].shape);
  const again = createOptimizer(cfg);
  await again.setState(st);
  const st2 = await again.getState();
  assert.deepEqual(st2, st);
  // After a step on the restored state, both optimizers agree bit for bit.
  const b = makeVars();
  Object.keys(b).forEach((n) => b[n].assign(a[n]));
  const ga = gradsFor(a, 9);
  const gb = gradsFor(b, 9);
  opt.applyGradients(ga, a);
  again.applyGradients(gb, b);
  for (const n of Object.keys(a)) assert.deepEqual(Array.from(b[n].dataSync()), Array.from(a[n].dataSync()), n);
  tf.dispose([...Object.values(ga), ...Object.values(gb)]);
  opt.dispose();
  again.dispose();
});
