import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../backends/tf';
import { clipByGlobalNorm, createOptimizer, globalNorm, TrainOptimizer } from '../training/optimizers';
import { parseConfig } from '../config/resolve';
import { UserError } from '../utils/errors';

before(async () => {
  await tf.setBackend('cpu');
});

const NAMES = ['sgd', 'adam', 'adamw', 'rmsprop'] as const;
let uid = 0;
const cfgWith = (optimizer: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
  parseConfig({ training: { optimizer, ...extra } });

/** A kernel and a bias, as a model would name them. */
function makeVars(init = [0.5, -1, 2, 0.25]) {
  const id = uid++;
  return {
    [`t${id}/conv/kernel`]: tf.variable(tf.tensor1d(init), true, `t${id}/conv/kernel`),
    [`t${id}/conv/bias`]: tf.variable(tf.tensor1d([1]), true, `t${id}/conv/bias`),
  };
}

function quadStep(opt: TrainOptimizer, vars: Record<string, tf.Variable>): void {
  const list = Object.values(vars);
  const { grads } = tf.variableGrads(
    () => tf.addN(list.map((v) => tf.sum(tf.square(tf.sub(v, 3))))) as tf.Scalar,
    list,
  );
  opt.applyGradients(grads, vars);
  tf.dispose(grads);
}

const quadLoss = (vars: Record<string, tf.Variable>) =>
  tf.tidy(() => tf.addN(Object.values(vars).map((v) => tf.sum(tf.square(tf.sub(v, 3))))).dataSync()[0]);
const values = (vars: Record<string, tf.Variable>) => Object.values(vars).map((v) => Array.from(v.dataSync()));

for (const name of NAMES) {
  for (const extra of [{}, { momentum: 0 }, { nesterov: true }, { weight_decay: 1e-3 }]) {
    test(`${name} ${JSON.stringify(extra)} lowers a quadratic`, () => {
      const vars = makeVars();
      const opt = createOptimizer(cfgWith({ name, lr: 0.05, ...extra }));
      const start = quadLoss(vars);
      for (let i = 0; i < 30; i++) quadStep(opt, vars);
      assert.ok(quadLoss(vars) < start * 0.3, `${quadLoss(vars)} vs ${start}`);
      opt.dispose();
    });
  }

  test(`${name}: learning rate set each step takes effect`, () => {
    const vars = makeVars();
    const opt = createOptimizer(cfgWith({ name, lr: 0.1 }));
    opt.setLearningRate(0);
    const before = values(vars);
    quadStep(opt, vars);
    assert.deepEqual(values(vars), before, 'lr 0 leaves weights unchanged');
    // Two fresh optimizers, lr 0.01 vs 0.02: the first step doubles (all four are linear in lr on step 1).
    const delta = (lr: number) => {
      const v = makeVars();
      const o = createOptimizer(cfgWith({ name, lr: 1 }));
      o.setLearningRate(lr);
      assert.equal(o.getLearningRate(), lr);
      quadStep(o, v);
      o.dispose();
      return Object.values(v)[0].dataSync()[0] - 0.5;
    };
    const d1 = delta(0.01);
    assert.ok(Math.abs(delta(0.02) - 2 * d1) < 1e-6 && d1 > 0, `${d1}`);
    opt.dispose();
  });

  test(`${name}: getState -> new optimizer -> setState resumes exactly`, async () => {
    const cfg = cfgWith({ name, lr: 0.05, weight_decay: 0.01 }, { grad_clip: 2 });
    const a = makeVars();
    const optA = createOptimizer(cfg);
    for (let i = 0; i < 3; i++) quadStep(optA, a);
    const state = await optA.getState();
    assert.equal(state.name, name);
    assert.equal(state.step, 3);
    // Round-trip through JSON-like plain data, as a checkpoint would.
    const copy = { ...state, tensors: state.tensors.map((t) => ({ ...t, values: new Float32Array(Array.from(t.values)) })) };
    const b = makeVars();
    Object.keys(b).forEach((k, i) => b[k].assign(Object.values(a)[i]));
    // State is keyed by variable name, so use the same names: rename a's slots to b's.
    const rename = Object.fromEntries(Object.keys(a).map((k, i) => [k, Object.keys(b)[i]]));
    copy.tensors = copy.tensors.map((t) => {
      const cut = t.name.lastIndexOf('/');
      return { ...t, name: `${rename[t.name.slice(0, cut)]}${t.name.slice(cut)}` };
    });
    const optB = createOptimizer(cfg);
    await optB.setState(copy);
    optA.setLearningRate(0.03);
    optB.setLearningRate(0.03);
    quadStep(optA, a);
    quadStep(optB, b);
    assert.deepEqual(values(b), values(a));
    optA.dispose();
    optB.dispose();
  });
}

test('adamw decays kernels (decoupled), not biases; adam with wd adds L2 to gradients', () => {
  const vars = makeVars([2, 2, 2, 2]);
  const opt = createOptimizer(cfgWith({ name: 'adamw', lr: 0.1, weight_decay: 0.5 }));
  const [k, b] = Object.keys(vars);
  // Zero gradients: Adam's step is 0, only the decay acts: w *= 1 - lr*wd.
  opt.applyGradients({ [k]: tf.zeros([4]), [b]: tf.zeros([1]) }, vars);
  for (const x of vars[k].dataSync()) assert.ok(Math.abs(x - 2 * 0.95) < 1e-6, String(x));
  assert.equal(vars[b].dataSync()[0], 1);
  opt.dispose();

  // SGD + weight_decay: the update is lr * (g + wd*w) for kernels, lr * g for biases.
  const v2 = makeVars([2, 2, 2, 2]);
  const [k2, b2] = Object.keys(v2);
  const sgd = createOptimizer(cfgWith({ name: 'sgd', lr: 0.1, momentum: 0, weight_decay: 0.5 }));
  sgd.applyGradients({ [k2]: tf.zeros([4]), [b2]: tf.zeros([1]) }, v2);
  assert.ok(Math.abs(v2[k2].dataSync()[0] - (2 - 0.1 * 0.5 * 2)) < 1e-6);
  assert.equal(v2[b2].dataSync()[0], 1);
  sgd.dispose();
});

test('a custom decayFilter chooses which variables decay', () => {
  const vars = makeVars([2, 2, 2, 2]);
  const [k, b] = Object.keys(vars);
  const opt = createOptimizer(cfgWith({ name: 'adamw', lr: 0.1, weight_decay: 0.5 }), { decayFilter: (n) => n.endsWith('bias') });
  opt.applyGradients({ [k]: tf.zeros([4]), [b]: tf.zeros([1]) }, vars);
  assert.equal(vars[k].dataSync()[0], 2);
  assert.ok(Math.abs(vars[b].dataSync()[0] - 0.95) < 1e-6);
  opt.dispose();
});

test('global-norm clipping bounds the update and reports the raw norm', async () => {
  const g = { a: tf.tensor1d([3, 0]), b: tf.tensor1d([0, 4]) };
  assert.ok(Math.abs(globalNorm(Object.values(g)).dataSync()[0] - 5) < 1e-6);
  const { grads, norm } = clipByGlobalNorm(Object.values(g), 1);
  assert.ok(Math.abs(norm.dataSync()[0] - 5) < 1e-6);
  assert.ok(Math.abs(globalNorm(grads).dataSync()[0] - 1) < 1e-6);
  const small = clipByGlobalNorm(Object.values(g), 10).grads;
  assert.deepEqual(Array.from(small[0].dataSync()), [3, 0], 'below the limit nothing changes');

  // Through the optimizer: plain SGD with lr 1 moves weights by exactly the clipped gradient.
  const vars = makeVars([0, 0, 0, 0]);
  const [k, b] = Object.keys(vars);
  const opt = createOptimizer(cfgWith({ name: 'sgd', lr: 1, momentum: 0 }, { grad_clip: 1 }));
  opt.applyGradients({ [k]: tf.tensor1d([30, 0, 0, 0]), [b]: tf.tensor1d([40]) }, vars);
  const moved = Math.hypot(...vars[k].dataSync(), vars[b].dataSync()[0] - 1);
  assert.ok(Math.abs(moved - 1) < 1e-5, String(moved));
  assert.ok(Math.abs((await opt.lastGradNorm())! - 50) < 1e-4);
  opt.dispose();
});

test('applyGradients keeps no stray tensors and does not dispose the caller’s gradients', () => {
  const vars = makeVars();
  const opt = createOptimizer(cfgWith({ name: 'adamw', weight_decay: 0.1 }, { grad_clip: 1 }));
  quadStep(opt, vars); // creates slots
  const before = tf.memory().numTensors;
  const grads = { [Object.keys(vars)[0]]: tf.ones([4]) };
  for (let i = 0; i < 5; i++) opt.applyGradients(grads, vars);
  assert.equal(tf.memory().numTensors, before + 1);
  assert.equal(grads[Object.keys(vars)[0]].isDisposed, false);
  opt.dispose();
});

test('setState from another optimizer type is a UserError naming the key', async () => {
  const sgd = createOptimizer(cfgWith({ name: 'sgd' }));
  const adam = createOptimizer(cfgWith({ name: 'adam' }));
  await assert.rejects(adam.setState(await sgd.getState()), (e: Error) => e instanceof UserError && /training\.optimizer\.name/.test(e.message));
});

test('state saved under other variable names: matched by order if shapes agree, else refused', async () => {
  const cfg = cfgWith({ name: 'adam' });
  const a = makeVars();
  const optA = createOptimizer(cfg);
  quadStep(optA, a);
  const state = await optA.getState();
  // Same shapes, new names (as when tfjs suffixes a rebuilt model's weights): resumes exactly.
  const b = makeVars();
  Object.keys(b).forEach((k, i) => b[k].assign(Object.values(a)[i]));
  const optB = createOptimizer(cfg);
  await optB.setState(state);
  quadStep(optA, a);
  quadStep(optB, b);
  assert.deepEqual(values(b), values(a));
  // Different shapes: a UserError, not a silent fresh start.
  const optC = createOptimizer(cfg);
  await optC.setState(state);
  assert.throws(() => quadStep(optC, makeVars([1, 2])), (e: Error) => e instanceof UserError && /no entry for variable/.test(e.message));
});

for (const name of NAMES) {
  test(`${name}: lr_mult moves the matching weights as the optimizer at that multiple of the rate would`, () => {
    // Weights named as a model's: an encoder kernel, an encoder bias kept by a longer key, a decoder kernel.
    const init = { 'enc_a/kernel': [0.5, -1, 2], 'enc_a_bn/bias': [1, 2], 'dec/kernel': [0.25, 3.5] };
    const run = (optimizer: Record<string, unknown>) => {
      // Unique names (tfjs variables share one namespace) that still contain the keys.
      const id = uid++;
      const vars = Object.fromEntries(Object.entries(init).map(([n, v]) => [`r${id}/${n}`, tf.variable(tf.tensor1d(v), true, `r${id}/${n}`)]));
      const opt = createOptimizer(cfgWith({ name, weight_decay: 0.01, ...optimizer }));
      for (let i = 0; i < 3; i++) quadStep(opt, vars);
      opt.dispose();
      return Object.fromEntries(Object.entries(vars).map(([n, v]) => [n.slice(n.indexOf('/') + 1), Array.from(v.dataSync())]));
    };
    const mixed = run({ lr: 0.1, lr_mult: { enc_: 0.1, enc_a_bn: 0.5 } });
    const at = (lr: number) => run({ lr });
    const slow = at(0.01);
    const half = at(0.05);
    const full = at(0.1);
    const close = (a: number[], b: number[], what: string) => a.forEach((x, i) => assert.ok(Math.abs(x - b[i]) < 1e-6, `${what}: ${a} vs ${b}`));
    close(mixed['enc_a/kernel'], slow['enc_a/kernel'], 'enc_ at 0.1x');
    close(mixed['enc_a_bn/bias'], half['enc_a_bn/bias'], 'the longer key enc_a_bn wins');
    close(mixed['dec/kernel'], full['dec/kernel'], 'unmatched at 1x');
    assert.notDeepEqual(slow['enc_a/kernel'], full['enc_a/kernel'], 'the rates differ enough to tell apart');
  });
}

test('lr_mult 0 leaves the weights where they are; state round-trips per weight', async () => {
  const vars = makeVars();
  const [k, b] = Object.keys(vars);
  const opt = createOptimizer(cfgWith({ name: 'adam', lr: 0.1, lr_mult: { [b]: 0 } }));
  const before = values(vars);
  quadStep(opt, vars);
  const after = values(vars);
  assert.deepEqual(after[1], before[1], 'the bias did not move');
  assert.notDeepEqual(after[0], before[0], 'the kernel did');
  const st = await opt.getState();
  assert.deepEqual(st.tensors.map((t) => t.name).sort(), [`${b}/m`, `${b}/v`, `${k}/m`, `${k}/v`].sort());
  opt.dispose();
});

test('an lr_mult key in no weight name is one error naming it', () => {
  const vars = makeVars();
  const opt = createOptimizer(cfgWith({ name: 'adam', lr_mult: { encoder: 0.1 } }));
  assert.throws(() => quadStep(opt, vars), (e: Error) => e instanceof UserError && /^training\.optimizer\.lr_mult: 'encoder' is in no trainable weight's name \(they read like 't\d+\/conv\/kernel'\)$/.test(e.message));
  opt.dispose();
});
