// Dilated ("atrous") convolution that tfjs can differentiate: tf.conv2d with
// dilations > 1 has no gradient in tfjs 4.22, so the convolution runs as TensorFlow
// lowers it: spaceToBatchND by the rate, a plain 'valid' convolution, batchToSpaceND.
// All three have gradients on every backend this project trains on. 'same' padding,
// stride 1 (as DeepLab's ASPP uses it).
import * as tf from '@tensorflow/tfjs';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../utils/self_test';
import { seededValues } from '../../utils/rng';

/**
 * Paddings and crops for spaceToBatchND/batchToSpaceND by `rate` on `size` with the
 * 'same' padding of a kernel of `k` taps: the pad, plus what makes the padded size a
 * multiple of the rate (cropped again after).
 */
export function atrousPadding(size: number, k: number, rate: number): { pad: [number, number]; crop: [number, number] } {
  const total = (k - 1) * rate; // the dilated kernel's extent minus one
  const start = Math.floor(total / 2);
  const end = total - start;
  const extra = (rate - ((size + total) % rate)) % rate;
  return { pad: [start, end + extra], crop: [0, extra] };
}

/** conv2d(x, filter, 1, 'same', 'NHWC', [rate, rate]), differentiable. */
export function atrousConv2d(x: tf.Tensor4D, filter: tf.Tensor4D, rate: number): tf.Tensor4D {
  if (rate === 1) return tf.conv2d(x, filter, 1, 'same');
  return tf.tidy(() => {
    const [, h, w] = x.shape;
    const [kh, kw] = filter.shape;
    const ph = atrousPadding(h, kh, rate);
    const pw = atrousPadding(w, kw, rate);
    const s2b = tf.spaceToBatchND(x, [rate, rate], [ph.pad, pw.pad]);
    const y = tf.conv2d(s2b as tf.Tensor4D, filter, 1, 'valid');
    return tf.batchToSpaceND(y, [rate, rate], [ph.crop, pw.crop]) as tf.Tensor4D;
  });
}

/** For tests: x, filter and an output gradient dy of seeded values. */
export function atrousCase(n: number, h: number, w: number, cin: number, cout: number, k: number): { x: tf.Tensor4D; filter: tf.Tensor4D; dy: tf.Tensor4D } {
  return {
    x: tf.tensor4d(seededValues(n * h * w * cin, 1), [n, h, w, cin]),
    filter: tf.tensor4d(seededValues(k * k * cin * cout, 2), [k, k, cin, cout]),
    dy: tf.tensor4d(seededValues(n * h * w * cout, 3), [n, h, w, cout]),
  };
}

/** y, dx and dFilter of atrousConv2d for loss = sum(y * dy). */
export function atrousWithGrads(x: tf.Tensor4D, filter: tf.Tensor4D, dy: tf.Tensor4D, rate: number): tf.Tensor[] {
  const loss = (a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(atrousConv2d(a as tf.Tensor4D, b as tf.Tensor4D, rate), dy));
  const [dx, df] = tf.grads(loss)([x, filter]);
  return [atrousConv2d(x, filter, rate), dx, df];
}

const CASES: Array<[number, number, number, number, number, number, number]> = [
  // n, h, w, cin, cout, k, rate: odd sizes, sizes not divisible by the rate, batch 1-3
  [1, 9, 7, 3, 4, 3, 2], [2, 13, 11, 2, 3, 3, 3], [3, 8, 8, 4, 2, 3, 6], [2, 10, 9, 3, 2, 1, 2], [1, 6, 5, 2, 2, 3, 1],
];

export const selfTest: SelfTest = {
  async 'equals the dilated tf.conv2d; its gradients are the exact adjoints, on cpu and wasm'() {
    const { initBackend } = await import('../../backends');
    for (const backend of ['cpu', 'wasm'] as const) {
      await initBackend(backend);
      for (const [n, h, w, cin, cout, k, rate] of CASES) {
        const what = `${backend} ${[n, h, w, cin, cout, k, rate]}`;
        tf.tidy(() => {
          const { x, filter, dy } = atrousCase(n, h, w, cin, cout, k);
          const [y, dx, df] = atrousWithGrads(x, filter, dy, rate);
          const ref = tf.conv2d(x, filter, 1, 'same', 'NHWC', [rate, rate]);
          assert.ok(tf.max(tf.abs(tf.sub(y, ref))).dataSync()[0] <= 1e-4, `${what}: forward`);
          // Linear in x and in the filter: <conv(x), dy> = <x, dx> = <filter, dFilter>.
          const inner = tf.sum(tf.mul(y, dy)).dataSync()[0];
          for (const [a, b, name] of [[x, dx, 'dx'], [filter, df, 'dFilter']] as const) {
            const other = tf.sum(tf.mul(a, b)).dataSync()[0];
            assert.ok(Math.abs(inner - other) <= 1e-3 * Math.max(1, Math.abs(inner)), `${what}: ${name} ${other} vs ${inner}`);
          }
          assert.deepEqual(dx.shape, x.shape);
          assert.deepEqual(df.shape, filter.shape);
        });
      }
    }
  },
  'paddings make the padded size a multiple of the rate'() {
    assert.deepEqual(atrousPadding(9, 3, 2), { pad: [2, 3], crop: [0, 1] });
    assert.deepEqual(atrousPadding(8, 3, 2), { pad: [2, 2], crop: [0, 0] });
    for (const [size, k, rate] of [[13, 3, 3], [7, 5, 4], [10, 1, 6]]) {
      const { pad } = atrousPadding(size, k, rate);
      assert.equal((size + pad[0] + pad[1]) % rate, 0);
    }
  },
};

runIfMain(module, selfTest);
