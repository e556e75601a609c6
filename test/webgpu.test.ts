// The webgpu backend end to end: one training step's gradients against cpu. CI has
// no adapter Dawn accepts (Debian 12's lavapipe is refused), so this skips visibly,
// naming what is missing; the kernel logic is tested on cpu/wasm in backends/conv_grads.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { probeAdapter } from '../backends/webgpu';
import { initBackend } from '../backends';
import { FilterCase, relError } from '../backends/conv_grads';

test('webgpu: our Conv2DBackpropFilter matches tf.grad reference', async (t) => {
  const probe = await probeAdapter();
  if (!probe.ok) return t.skip(`no webgpu adapter: ${probe.reason}`);
  const info = await initBackend('webgpu');
  assert.equal(info.name, 'webgpu');
  const c: FilterCase = { n: 2, h: 9, w: 7, cin: 3, cout: 4, k: 3, stride: 2, pad: 'same' };
  // tf.grad of a conv on webgpu runs our registered kernel; reads there are async.
  const dW = (be: string) => tf.tidy(() => {
    const x = tf.tensor4d(Array.from({ length: c.n * c.h * c.w * c.cin }, (_, i) => Math.sin(i)), [c.n, c.h, c.w, c.cin]);
    return tf.grad((w: tf.Tensor) => tf.sum(tf.conv2d(x, w as tf.Tensor4D, c.stride, c.pad)))(tf.zeros([c.k, c.k, c.cin, c.cout]));
  });
  const got = (await dW('webgpu').data()) as Float32Array;
  await tf.setBackend('cpu');
  const want = (await dW('cpu').data()) as Float32Array;
  assert.ok(relError(got, want) <= 1e-4, `rel err ${relError(got, want)}`);
});
