// Turning network outputs into class maps, shared by evaluate, validation and predict.
import * as tf from '@tensorflow/tfjs';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from './self_test';

/**
 * Foreground probability for binary problems: sigmoid of the single output, or the
 * softmax probability of class 1 for two outputs. null for multi-class outputs.
 */
export function foregroundProb(logits: tf.Tensor4D): tf.Tensor3D | null {
  const c = logits.shape[3];
  if (c > 2) return null;
  return tf.tidy(() => {
    if (c === 1) return tf.sigmoid(logits).squeeze([3]) as tf.Tensor3D;
    return tf.softmax(logits).slice([0, 0, 0, 1], [-1, -1, -1, 1]).squeeze([3]) as tf.Tensor3D;
  });
}

/** Class ids [N,H,W]: threshold on the foreground probability for binary, argmax otherwise. */
export function classMap(logits: tf.Tensor4D, threshold: number): { classes: Uint8Array; prob: Float32Array | null } {
  const prob = foregroundProb(logits);
  if (prob) {
    const p = prob.dataSync() as Float32Array;
    prob.dispose();
    const classes = new Uint8Array(p.length);
    for (let i = 0; i < p.length; i++) classes[i] = p[i] > threshold ? 1 : 0;
    return { classes, prob: p };
  }
  const arg = tf.tidy(() => tf.argMax(logits, 3));
  const classes = Uint8Array.from(arg.dataSync());
  arg.dispose();
  return { classes, prob: null };
}

/** Undoes the input normalisation of one image of a batch, back to RGB uint8 (HWC). */
export function denormalize(images: Float32Array, index: number, h: number, w: number, mean: number[], std: number[]): Uint8Array {
  const n = h * w * 3;
  const out = new Uint8Array(n);
  const off = index * n;
  for (let i = 0; i < n; i++) {
    const c = i % 3;
    out[i] = Math.max(0, Math.min(255, Math.round((images[off + i] * std[c] + mean[c]) * 255)));
  }
  return out;
}

export const selfTest: SelfTest = {
  'binary threshold on one sigmoid output'() {
    const logits = tf.tensor4d([-2, 0.1, 3, -0.1], [1, 2, 2, 1]);
    assert.deepEqual([...classMap(logits, 0.5).classes], [0, 1, 1, 0]);
    assert.deepEqual([...classMap(logits, 0.9).classes], [0, 0, 1, 0]);
    logits.dispose();
  },
  'two softmax outputs use the class-1 probability'() {
    const logits = tf.tensor4d([0, 1, 1, 0], [1, 1, 2, 2]);
    const r = classMap(logits, 0.5);
    assert.deepEqual([...r.classes], [1, 0]);
    assert.ok(r.prob && Math.abs(r.prob[0] - 0.7311) < 1e-3);
    logits.dispose();
  },
  'multi-class argmax'() {
    const logits = tf.tensor4d([0, 5, 1, 9, 0, 0], [1, 1, 2, 3]);
    const r = classMap(logits, 0.5);
    assert.deepEqual([...r.classes], [1, 0]);
    assert.equal(r.prob, null);
    logits.dispose();
  },
  'denormalize inverts normalisation'() {
    const mean = [0.5, 0.5, 0.5];
    const std = [0.25, 0.25, 0.25];
    const img = new Float32Array([(10 / 255 - 0.5) / 0.25, 0, (250 / 255 - 0.5) / 0.25]);
    assert.deepEqual([...denormalize(img, 0, 1, 1, mean, std)], [10, 128, 250]);
  },
};

runIfMain(module, selfTest);
