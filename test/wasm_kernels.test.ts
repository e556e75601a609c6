// Conv2D gradients on the wasm backend (backends/wasm_kernels.ts) against the cpu
// backend's reference kernels, plus a tiny end-to-end training run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../backends/tf';
import '@tensorflow/tfjs-backend-wasm';
import {
  GradCase, compareWithCpu, onBackend, registerWasmGradKernels, relError, seededValues,
} from '../backends/wasm_kernels';
import { UserError } from '../utils/errors';

const TOL = 1e-4;

/** Deterministic batch/channel choices so failures reproduce. */
function grid(): GradCase[] {
  const cases: GradCase[] = [];
  const sizes: Array<[number, number]> = [[7, 9], [13, 11], [8, 6], [5, 5]];
  let i = 0;
  for (const [h, w] of sizes) {
    for (const stride of [1, 2]) {
      for (const pad of ['same', 'valid'] as const) {
        for (const k of [1, 3]) {
          i++;
          cases.push({ n: 1 + (i % 3), h, w, cin: 1 + ((i * 5) % 8), cout: 1 + ((i * 3) % 8), k, stride, pad });
        }
      }
    }
  }
  return cases;
}

test('conv2d gradients on wasm match cpu over a grid of shapes', async () => {
  for (const c of grid()) {
    const e = await compareWithCpu(c, c.h * 31 + c.k);
    assert.ok(e.dx <= TOL, `dx ${JSON.stringify(c)}: rel err ${e.dx}`);
    assert.ok(e.df <= TOL, `dW ${JSON.stringify(c)}: rel err ${e.df}`);
  }
});

test('even and larger kernels and strides (k 2, k 5, stride 3) also match', async () => {
  for (const c of [
    { n: 3, h: 4, w: 4, cin: 5, cout: 4, k: 2, stride: 1, pad: 'same' },
    { n: 2, h: 9, w: 7, cin: 3, cout: 2, k: 2, stride: 2, pad: 'valid' },
    { n: 2, h: 17, w: 10, cin: 3, cout: 2, k: 5, stride: 3, pad: 'same' },
    { n: 1, h: 17, w: 10, cin: 2, cout: 3, k: 5, stride: 3, pad: 'valid' },
    { n: 1, h: 4, w: 4, cin: 2, cout: 2, k: 3, stride: 4, pad: 'valid' },
  ] as GradCase[]) {
    const e = await compareWithCpu(c, 7);
    assert.ok(e.dx <= TOL && e.df <= TOL, `${JSON.stringify(c)}: dx ${e.dx}, dW ${e.df}`);
  }
});

/** Gradients for arbitrary conv2d args (non-square strides, numeric pads) on a backend. */
async function gradsOn(backend: string, xs: number[], fs: number[], strides: [number, number], pad: number | 'same' | 'valid') {
  registerWasmGradKernels();
  return onBackend(backend, () => tf.tidy(() => {
    const x = tf.tensor4d(seededValues(xs.reduce((a, b) => a * b), 3), xs as [number, number, number, number]);
    const f = tf.tensor4d(seededValues(fs.reduce((a, b) => a * b), 4), fs as [number, number, number, number]);
    const conv = (a: tf.Tensor, b: tf.Tensor) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, strides, pad as 'same');
    const r = tf.tensor(seededValues(conv(x, f).size, 5), conv(x, f).shape);
    const [dx, df] = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(conv(a, b), r)))([x, f]);
    return { dx: dx.dataSync() as Float32Array, df: df.dataSync() as Float32Array };
  }));
}

test('non-square strides and explicit numeric pads match cpu', async () => {
  const cases: Array<[number[], number[], [number, number], number | 'same' | 'valid']> = [
    [[2, 9, 7, 3], [3, 3, 3, 4], [1, 2], 'same'],
    [[1, 9, 7, 3], [3, 1, 3, 2], [2, 1], 'valid'],
    [[2, 9, 7, 2], [3, 3, 2, 3], [2, 2], 1],
    [[1, 8, 9, 2], [3, 3, 2, 2], [1, 1], 2],
    // Stride 2 (sub-pixel dx) copes with pads wider than the kernel...
    [[1, 6, 5, 2], [3, 3, 2, 2], [2, 2], 3],
    // ...and so does stride 1, via the same phase decomposition.
    [[1, 6, 5, 2], [3, 3, 2, 2], [1, 1], 3],
  ];
  for (const [xs, fs, strides, pad] of cases) {
    const ref = await gradsOn('cpu', xs, fs, strides, pad);
    const got = await gradsOn('wasm', xs, fs, strides, pad);
    const label = JSON.stringify({ xs, fs, strides, pad });
    assert.ok(relError(got.dx, ref.dx) <= TOL, `dx ${label}: ${relError(got.dx, ref.dx)}`);
    assert.ok(relError(got.df, ref.df) <= TOL, `dW ${label}: ${relError(got.df, ref.df)}`);
  }
});

test('NCHW: filter gradient refused with a UserError (no leak), input gradient falls back', async () => {
  registerWasmGradKernels();
  await onBackend('wasm', () => {
    const x = tf.zeros([1, 2, 5, 5]);
    const dy = tf.zeros([1, 2, 5, 5]);
    const before = tf.memory().numTensors;
    assert.throws(
      () => tf.engine().runKernel('Conv2DBackpropFilter', { x, dy },
        { strides: 1, pad: 'same', dataFormat: 'NCHW', filterShape: [3, 3, 2, 2] } as unknown as tf.NamedAttrMap),
      (err: unknown) => err instanceof UserError && /NCHW/.test((err as Error).message));
    assert.equal(tf.memory().numTensors, before);
    // Conv2DBackpropInput hands NCHW to the stock wasm kernel instead.
    const f = tf.ones([3, 3, 2, 2]);
    const dx = tf.engine().runKernel('Conv2DBackpropInput', { dy, filter: f },
      { strides: 1, pad: 'same', dataFormat: 'NCHW', inputShape: [1, 2, 5, 5] } as unknown as tf.NamedAttrMap) as tf.Tensor;
    assert.deepEqual(dx.shape, [1, 2, 5, 5]);
    tf.dispose([x, dy, f, dx]);
  });
});

/** Loss after each of `steps` SGD steps of a 2-layer conv net on `backend`; checks for leaks. */
async function trainLosses(backend: string, steps: number): Promise<number[]> {
  registerWasmGradKernels();
  return onBackend(backend, () => {
    const x = tf.tensor4d(seededValues(2 * 11 * 9 * 3, 11), [2, 11, 9, 3]);
    const target = tf.tensor4d(seededValues(2 * 6 * 5 * 2, 12), [2, 6, 5, 2]);
    const w1 = tf.variable(tf.mul(tf.tensor4d(seededValues(3 * 3 * 3 * 8, 13), [3, 3, 3, 8]), 0.3) as tf.Tensor4D);
    const w2 = tf.variable(tf.mul(tf.tensor4d(seededValues(1 * 1 * 8 * 2, 14), [1, 1, 8, 2]), 0.3) as tf.Tensor4D);
    const opt = tf.train.sgd(1);
    const lossFn = () => tf.losses.meanSquaredError(target,
      tf.conv2d(tf.relu(tf.conv2d(x, w1, 2, 'same')), w2, 1, 'valid')) as tf.Scalar;
    const losses: number[] = [];
    const count = () => [tf.memory().numTensors, tf.backend().numDataIds()];
    opt.minimize(lossFn, false, [w1, w2]); // creates the optimizer's state once
    losses.push(tf.tidy(() => lossFn().dataSync()[0]));
    const before = count();
    for (let step = 1; step < steps; step++) {
      const loss = opt.minimize(lossFn, true, [w1, w2]);
      losses.push(loss!.dataSync()[0]);
      loss!.dispose();
    }
    assert.deepEqual(count(), before, `tensors or backend buffers leaked during training on ${backend}`);
    tf.dispose([x, target, w1, w2]);
    opt.dispose();
    return losses;
  });
}

test('a tiny conv net trains on wasm like on cpu: loss decreases, no tensor leaks', async () => {
  const wasm = await trainLosses('wasm', 15);
  const cpu = await trainLosses('cpu', 15);
  assert.ok(wasm.every(Number.isFinite), `non-finite loss: ${wasm}`);
  assert.ok(wasm[wasm.length - 1] < 0.85 * wasm[0], `loss did not decrease: ${wasm[0]} -> ${wasm[wasm.length - 1]}`);
  for (let i = 0; i < wasm.length; i++) {
    assert.ok(Math.abs(wasm[i] - cpu[i]) <= 1e-4 * Math.max(1, cpu[i]), `step ${i}: wasm ${wasm[i]} vs cpu ${cpu[i]}`);
  }
});
