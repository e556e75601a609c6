// The JavaScript heap kernels for wasm (backends/wasm_copies.ts, wasm_pool_grads.ts)
// against the cpu backend and against first principles, over shapes the U-Net
// does not use (odd sizes, overlapping windows, padding, non-integer resizes).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../backends/tf';
import { initBackend } from '../backends';
import { onBackend } from '../backends/wasm_kernels';
import { mergeAxes, registerWasmCopies } from '../backends/wasm_copies';
import { PoolCase, ResizeCase, maxDiff, maxPoolGradOf, registerPoolGrads, resizeGradOf, resizeGradReference } from '../backends/wasm_pool_grads';

test('wasm start-up installs the heap kernels', async () => {
  await initBackend('wasm');
  const stock = new Set(['MaxPoolGrad', 'ResizeNearestNeighborGrad', 'Slice', 'SplitV'].map((k) => tf.getKernel(k, 'wasm')?.kernelFunc));
  registerPoolGrads();
  registerWasmCopies();
  // Registering again is a no-op: the kernels are already ours.
  for (const k of ['MaxPoolGrad', 'ResizeNearestNeighborGrad', 'Slice', 'SplitV']) assert.ok(stock.has(tf.getKernel(k, 'wasm')?.kernelFunc), k);
});

test('MaxPoolGrad on wasm equals cpu: windows 1-3, strides 1-3, same/valid, odd sizes, ties', async () => {
  await initBackend('wasm');
  const cases: PoolCase[] = [];
  let i = 0;
  for (const pool of [1, 2, 3]) {
    for (const stride of [1, 2, 3]) {
      for (const pad of ['same', 'valid'] as const) {
        i++;
        cases.push({ shape: [1 + (i % 3), 4 + (i % 5), 3 + ((i * 7) % 6), 1 + (i % 4)], pool, stride, pad, ties: i % 2 === 0 });
      }
    }
  }
  for (const c of cases) {
    const ref = await onBackend('cpu', () => maxPoolGradOf(c, i));
    const got = await onBackend('wasm', () => maxPoolGradOf(c, i));
    // Overlapping windows add in another order than cpu's, hence a tolerance; a
    // gradient sent to the wrong pixel (a tie) differs by a whole dy value.
    const d = maxDiff(got, ref);
    assert.ok(d <= 1e-5, `${JSON.stringify(c)}: differs from cpu by ${d}`);
  }
});

test('ResizeNearestNeighborGrad on wasm and cpu is the adjoint of the resize (x2, x3, shrinking, non-integer, corners, half pixels)', async () => {
  await initBackend('wasm');
  const cases: ResizeCase[] = [
    { shape: [3, 4, 5, 2], size: [8, 10] },
    { shape: [2, 3, 3, 3], size: [9, 6] },
    { shape: [2, 5, 7, 2], size: [7, 9] },
    { shape: [2, 8, 6, 1], size: [3, 4] },
    { shape: [2, 5, 7, 2], size: [7, 9], alignCorners: true },
    { shape: [2, 5, 7, 2], size: [7, 9], halfPixelCenters: true },
    { shape: [1, 4, 4, 3], size: [8, 8], halfPixelCenters: true },
  ];
  for (const c of cases) {
    const ref = resizeGradReference(c);
    for (const be of ['wasm', 'cpu']) {
      const d = maxDiff(await onBackend(be, () => resizeGradOf(c)), ref);
      assert.ok(d <= 1e-5, `${be} ${JSON.stringify(c)}: differs from the adjoint by ${d}`);
    }
  }
});

test('mergeAxes folds whole axes into the one before', () => {
  assert.deepEqual(mergeAxes([4, 8, 8, 48], [0, 0, 0, 16], [4, 8, 8, 32]), { shape: [256, 48], begin: [0, 16], size: [256, 32] });
  assert.deepEqual(mergeAxes([4, 8, 8, 3], [1, 0, 0, 0], [2, 8, 8, 3]), { shape: [768], begin: [192], size: [384] });
  assert.deepEqual(mergeAxes([4, 8, 8, 3], [0, 2, 0, 0], [4, 3, 8, 3]), { shape: [4, 192], begin: [0, 48], size: [4, 72] });
  assert.deepEqual(mergeAxes([4, 8, 8, 3], [0, 2, 1, 0], [4, 3, 5, 3]), { shape: [4, 8, 24], begin: [0, 2, 3], size: [4, 3, 15] });
});

test('Slice on wasm equals cpu for seeded random slices of ranks 1-5, float32 and int32', async () => {
  await initBackend('wasm');
  let s = 12345;
  const rand = (n: number) => { s = (s * 1103515245 + 12345) % 2 ** 31; return s % n; };
  for (let t = 0; t < 60; t++) {
    const rank = 1 + (t % 5);
    const shape = Array.from({ length: rank }, () => 1 + rand(rank > 3 ? 5 : 9));
    const begin = shape.map((d) => rand(d));
    const size = shape.map((d, i) => 1 + rand(d - begin[i]));
    const dtype = t % 2 ? 'int32' : 'float32';
    const make = () => tf.range(0, shape.reduce((a, b) => a * b, 1), 1, dtype).reshape(shape);
    const ref = await onBackend('cpu', () => tf.tidy(() => Array.from(tf.slice(make(), begin, size).dataSync())));
    const got = await onBackend('wasm', () => tf.tidy(() => Array.from(tf.slice(make(), begin, size).dataSync())));
    assert.deepEqual(got, ref, `${dtype} ${JSON.stringify({ shape, begin, size })}`);
  }
});
