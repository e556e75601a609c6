// Turning network outputs into class maps, shared by evaluate, validation and predict.
import { checkDevice } from '../backends/webgpu_errors';
import * as tf from '@tensorflow/tfjs';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../utils/self_test';

export type Flip = 'hflip' | 'vflip' | 'hvflip';
const FLIP_AXES: Record<Flip, number[]> = { hflip: [2], vflip: [1], hvflip: [1, 2] };

/** Sigmoid for one output channel (foreground probability), softmax otherwise. */
export function toProbs(logits: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => (logits.shape[3] === 1 ? tf.sigmoid(logits) : tf.softmax(logits)) as tf.Tensor4D);
}

/**
 * Class probabilities [N,H,W,C] of a batch, averaged over the plain input and each
 * flipped copy in `tta` (each flipped back first), at each input scale in `scales`
 * (resized back to the input's size): test-time augmentation.
 */
export function predictProbs(model: tf.LayersModel, x: tf.Tensor4D, tta: readonly Flip[] = [], scales: readonly number[] = [1]): tf.Tensor4D {
  return tf.tidy(() => {
    const [, h, w] = x.shape;
    let sum: tf.Tensor4D | null = null;
    for (const s of scales) {
      const xs = s === 1 ? x : tf.image.resizeBilinear(x, [Math.max(1, Math.round(h * s)), Math.max(1, Math.round(w * s))], false, true);
      for (const f of [null, ...tta]) {
        const axes = f ? FLIP_AXES[f] : null;
        let p = toProbs(model.predict(axes ? tf.reverse(xs, axes) : xs) as tf.Tensor4D);
        if (axes) p = tf.reverse(p, axes);
        if (s !== 1) p = tf.image.resizeBilinear(p, [h, w], false, true);
        sum = sum ? (sum.add(p) as tf.Tensor4D) : p;
      }
    }
    const n = scales.length * (tta.length + 1);
    return n === 1 ? sum! : sum!.div(n);
  });
}

/** Foreground probability [N,H,W] for binary outputs (1 sigmoid or 2 softmax channels); null for multi-class. */
export function foregroundProb(probs: tf.Tensor4D): tf.Tensor3D | null {
  const c = probs.shape[3];
  if (c > 2) return null;
  return tf.tidy(() => probs.slice([0, 0, 0, c - 1], [-1, -1, -1, 1]).squeeze([3]) as tf.Tensor3D);
}

/**
 * Class ids from probabilities [N,H,W,C]: threshold on the foreground probability for
 * binary outputs, argmax otherwise. Reads asynchronously (GPU backends cannot read synchronously).
 */
export async function classMap(probs: tf.Tensor4D, threshold: number): Promise<{ classes: Uint8Array; prob: Float32Array | null }> {
  const prob = foregroundProb(probs);
  if (prob) {
    const p = (await prob.data()) as Float32Array;
    prob.dispose();
    checkDevice('inference');
    const classes = new Uint8Array(p.length);
    for (let i = 0; i < p.length; i++) classes[i] = p[i] > threshold ? 1 : 0;
    return { classes, prob: p };
  }
  const arg = tf.tidy(() => tf.argMax(probs, 3));
  const classes = Uint8Array.from(await arg.data());
  arg.dispose();
  checkDevice('inference');
  return { classes, prob: null };
}

export interface MaskOptions {
  threshold: number;
  /** The dataset's post-processing, applied when given. */
  postprocess?: (mask: Uint8Array, w: number, h: number) => Uint8Array;
}

/**
 * One image's mask at width x height: probabilities [1,h,w,C] resized bilinearly to that
 * size (interpolated scores give smoother boundaries than resized labels), turned into
 * class ids, then post-processed. `prob` is the foreground probability before cleaning.
 * Disposes nothing it was given.
 */
export async function probsToMask(probs: tf.Tensor4D, width: number, height: number, opts: MaskOptions): Promise<{ classes: Uint8Array; prob: Float32Array | null }> {
  const [, h, w] = probs.shape;
  const sized = h === height && w === width ? probs : tf.tidy(() => tf.image.resizeBilinear(probs, [height, width], false, true));
  try {
    const out = await classMap(sized, opts.threshold);
    if (opts.postprocess) out.classes = opts.postprocess(out.classes, width, height);
    return out;
  } finally {
    if (sized !== probs) sized.dispose();
  }
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

const maxDiff = (a: tf.Tensor, b: tf.Tensor): number => tf.tidy(() => tf.max(tf.abs(a.sub(b))).dataSync()[0]);

export const selfTest: SelfTest = {
  async 'binary threshold on one sigmoid output'() {
    const logits = toProbs(tf.tensor4d([-2, 0.1, 3, -0.1], [1, 2, 2, 1]));
    assert.deepEqual([...(await classMap(logits, 0.5)).classes], [0, 1, 1, 0]);
    assert.deepEqual([...(await classMap(logits, 0.9)).classes], [0, 0, 1, 0]);
    logits.dispose();
  },
  async 'two softmax outputs use the class-1 probability'() {
    const logits = toProbs(tf.tensor4d([0, 1, 1, 0], [1, 1, 2, 2]));
    const r = await classMap(logits, 0.5);
    assert.deepEqual([...r.classes], [1, 0]);
    assert.ok(r.prob && Math.abs(r.prob[0] - 0.7311) < 1e-3);
    logits.dispose();
  },
  async 'multi-class argmax'() {
    const logits = tf.tensor4d([0, 5, 1, 9, 0, 0], [1, 1, 2, 3]);
    const r = await classMap(logits, 0.5);
    assert.deepEqual([...r.classes], [1, 0]);
    assert.equal(r.prob, null);
    logits.dispose();
  },
  'flip TTA averages the flipped-back predictions of the flipped inputs'() {
    const x = tf.randomNormal([2, 5, 6, 3], 0, 1, 'float32', 3) as tf.Tensor4D;
    const model = tf.sequential({ layers: [tf.layers.conv2d({ inputShape: [null, null, 3], filters: 3, kernelSize: 3, padding: 'same', kernelInitializer: tf.initializers.randomNormal({ seed: 7 }) })] });
    const p = (t: tf.Tensor4D) => toProbs(model.predict(t) as tf.Tensor4D);
    const want = tf.tidy(() => p(x).add(tf.reverse(p(tf.reverse(x, 2)), 2)).div(2));
    const got = predictProbs(model, x, ['hflip']);
    assert.ok(maxDiff(got, want) < 1e-6);
    // A 3x3 kernel is not flip-symmetric, so TTA really changes the output.
    assert.ok(tf.tidy(() => maxDiff(got, p(x))) > 1e-3);
    assert.ok(Math.abs(tf.tidy(() => tf.sum(got).dataSync()[0]) - 2 * 5 * 6) < 1e-3, 'still a distribution per pixel');
    tf.dispose([x, want, got]);
    model.dispose();
  },
  'multi-scale TTA averages in the prediction of a resized input, brought back to size'() {
    const x = tf.randomNormal([1, 8, 12, 3], 0, 1, 'float32', 9) as tf.Tensor4D;
    const model = tf.sequential({ layers: [tf.layers.conv2d({ inputShape: [null, null, 3], filters: 2, kernelSize: 3, padding: 'same', kernelInitializer: tf.initializers.randomNormal({ seed: 2 }) })] });
    const half = tf.tidy(() => tf.image.resizeBilinear(toProbs(model.predict(tf.image.resizeBilinear(x, [4, 6], false, true)) as tf.Tensor4D), [8, 12], false, true));
    const want = tf.tidy(() => toProbs(model.predict(x) as tf.Tensor4D).add(half).div(2));
    const got = predictProbs(model, x, [], [1, 0.5]);
    assert.deepEqual(got.shape, [1, 8, 12, 2]);
    assert.ok(maxDiff(got, want) < 1e-6);
    tf.dispose([x, half, want, got]);
    model.dispose();
  },
  'a per-pixel model is unchanged by flip TTA'() {
    const x = tf.randomNormal([1, 4, 7, 3], 0, 1, 'float32', 5) as tf.Tensor4D;
    const model = tf.sequential({ layers: [tf.layers.conv2d({ inputShape: [null, null, 3], filters: 1, kernelSize: 1, kernelInitializer: tf.initializers.randomNormal({ seed: 1 }) })] });
    const plain = predictProbs(model, x);
    const tta = predictProbs(model, x, ['hflip', 'vflip', 'hvflip']);
    assert.ok(maxDiff(plain, tta) < 1e-6);
    tf.dispose([x, plain, tta]);
    model.dispose();
  },
  async 'a mask is resized as probabilities, then post-processed'() {
    // 1x2 probabilities 0.2 | 0.9 resized to 1x4: bilinear gives 0.2, 0.375, 0.725, 0.9.
    const p = tf.tensor4d([0.2, 0.9], [1, 1, 2, 1]);
    assert.deepEqual([...(await probsToMask(p, 4, 1, { threshold: 0.5 })).classes], [0, 0, 1, 1]);
    const invert = (m: Uint8Array) => m.map((v) => 1 - v);
    assert.deepEqual([...(await probsToMask(p, 4, 1, { threshold: 0.5, postprocess: invert })).classes], [1, 1, 0, 0]);
    assert.ok(!p.isDisposed);
    p.dispose();
  },
  'denormalize inverts normalisation'() {
    const mean = [0.5, 0.5, 0.5];
    const std = [0.25, 0.25, 0.25];
    const img = new Float32Array([(10 / 255 - 0.5) / 0.25, 0, (250 / 255 - 0.5) / 0.25]);
    assert.deepEqual([...denormalize(img, 0, 1, 1, mean, std)], [10, 128, 250]);
  },
};

runIfMain(module, selfTest);
