// Turning network outputs into class maps, shared by evaluate, validation and predict.
import { checkDevice } from '../backends/webgpu_errors';
import * as tf from '../backends/tf';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../utils/self_test';

export type Flip = 'hflip' | 'vflip' | 'hvflip';
const FLIP_AXES: Record<Flip, number[]> = { hflip: [2], vflip: [1], hvflip: [1, 2] };

/** Sigmoid for one output channel (foreground probability), softmax otherwise. */
export function toProbs(logits: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => (logits.shape[3] === 1 ? tf.sigmoid(logits) : tf.softmax(logits)) as tf.Tensor4D);
}

/**
 * A network behind one asynchronous call (ONNX Runtime, engine/onnx_runtime.ts): an NHWC
 * float32 batch in, logits out. Everything around it (input preparation, test-time
 * augmentation, probabilities, resizing, decisions) is the code a TF.js model goes through.
 */
export interface Runtime {
  /** For logs and reports, e.g. "ONNX Runtime 1.31.1 (CPU, 2 threads)". */
  readonly description: string;
  /** Logits [N,H',W',K] of `x` [N,H,W,C]; disposes nothing it was given. */
  logits(x: tf.Tensor4D): Promise<tf.Tensor4D>;
  dispose(): void;
}

/** What evaluate and predict run: a TF.js model or a Runtime. */
export type Network = tf.LayersModel | Runtime;
export const isRuntime = (n: Network): n is Runtime => typeof (n as Runtime).logits === 'function';

/** The input at scale `s` of its size [h, w]. */
const scaled = (x: tf.Tensor4D, s: number, h: number, w: number) => tf.image.resizeBilinear(x, [Math.max(1, Math.round(h * s)), Math.max(1, Math.round(w * s))], false, true);
/** Probabilities of a flipped and scaled input, flipped back and resized back to [h, w]. */
function restored(p: tf.Tensor4D, axes: number[] | null, s: number, h: number, w: number): tf.Tensor4D {
  if (axes) p = tf.reverse(p, axes);
  if (s !== 1) p = tf.image.resizeBilinear(p, [h, w], false, true);
  return p;
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
      const xs = s === 1 ? x : scaled(x, s, h, w);
      for (const f of [null, ...tta]) {
        const axes = f ? FLIP_AXES[f] : null;
        const p = restored(toProbs(model.predict(axes ? tf.reverse(xs, axes) : xs) as tf.Tensor4D), axes, s, h, w);
        sum = sum ? (sum.add(p) as tf.Tensor4D) : p;
      }
    }
    const n = scales.length * (tta.length + 1);
    return n === 1 ? sum! : sum!.div(n);
  });
}

/**
 * predictProbs for either kind of network: a TF.js model through predictProbs itself, a
 * Runtime through the same steps (the same scaling, flips and probabilities, in the same
 * order) around its asynchronous call. Disposes nothing it was given.
 */
export async function networkProbs(net: Network, x: tf.Tensor4D, tta: readonly Flip[] = [], scales: readonly number[] = [1]): Promise<tf.Tensor4D> {
  if (!isRuntime(net)) return predictProbs(net, x, tta, scales);
  const [, h, w] = x.shape;
  let sum: tf.Tensor4D | null = null;
  try {
    for (const s of scales) {
      const xs = s === 1 ? x : tf.tidy(() => scaled(x, s, h, w));
      try {
        for (const f of [null, ...tta]) {
          const axes = f ? FLIP_AXES[f] : null;
          const input = axes ? tf.tidy(() => tf.reverse(xs, axes)) : xs;
          let logits: tf.Tensor4D;
          try {
            logits = await net.logits(input);
          } finally {
            if (input !== xs) input.dispose();
          }
          const before = sum as tf.Tensor4D | null;
          sum = tf.tidy(() => {
            const p = restored(toProbs(logits), axes, s, h, w);
            return before === null ? p : (tf.add(before, p) as tf.Tensor4D);
          });
          logits.dispose();
          before?.dispose();
        }
      } finally {
        if (xs !== x) xs.dispose();
      }
    }
  } catch (e) {
    (sum as tf.Tensor4D | null)?.dispose();
    throw e;
  }
  const n = scales.length * (tta.length + 1);
  if (n === 1) return sum!;
  const mean = tf.tidy(() => sum!.div(n) as tf.Tensor4D);
  sum!.dispose();
  return mean;
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
 * class ids, then post-processed. `prob` is the foreground probability before cleaning
 * (unless `opts.prob` is false). The resize runs here, a row at a time on the network-size
 * probabilities, with tfjs's resizeBilinear formula (half-pixel centres): a full-size
 * C-channel tensor took tfjs-wasm 19 s at 6000x6000 and failed inside at 12000x12000.
 * Disposes nothing it was given.
 */
export async function probsToMask(probs: tf.Tensor4D, width: number, height: number, opts: MaskOptions & { prob?: boolean }): Promise<{ classes: Uint8Array; prob: Float32Array | null }> {
  const [n, h, w, c] = probs.shape;
  if (n !== 1) throw new Error(`probsToMask takes one image, got a batch of ${n}`);
  const p = (await probs.data()) as Float32Array;
  checkDevice('inference');
  const out = resizeDecide(p, h, w, c, width, height, opts.threshold, opts.prob ?? true);
  if (opts.postprocess) out.classes = opts.postprocess(out.classes, width, height);
  return out;
}

/** Source index pairs and weights of tfjs's half-pixel bilinear resize along one axis. */
function axisTable(src: number, dst: number): { lo: Int32Array; hi: Int32Array; frac: Float64Array } {
  const lo = new Int32Array(dst), hi = new Int32Array(dst), frac = new Float64Array(dst);
  const ratio = src / dst;
  for (let i = 0; i < dst; i++) {
    const f = ratio * (i + 0.5) - 0.5;
    lo[i] = Math.max(0, Math.floor(f));
    hi[i] = Math.min(src - 1, Math.ceil(f));
    frac[i] = f - lo[i];
  }
  return { lo, hi, frac };
}

/** probsToMask's resize and decision over HWC probabilities `p` (C = 1 or 2: threshold on the last; else argmax). */
export function resizeDecide(p: Float32Array, h: number, w: number, c: number, width: number, height: number, threshold: number, wantProb = true): { classes: Uint8Array; prob: Float32Array | null } {
  const rows = axisTable(h, height), cols = axisTable(w, width);
  const classes = new Uint8Array(width * height);
  const binary = c <= 2;
  const prob = binary && wantProb ? new Float32Array(width * height) : null;
  const v = new Float64Array(c);
  for (let y = 0; y < height; y++) {
    const top = rows.lo[y] * w, bot = rows.hi[y] * w, fy = rows.frac[y];
    for (let x = 0; x < width; x++) {
      const l = cols.lo[x], r = cols.hi[x], fx = cols.frac[x];
      const at = y * width + x;
      for (let k = binary ? c - 1 : 0; k < c; k++) {
        const tl = p[(top + l) * c + k], tr = p[(top + r) * c + k], bl = p[(bot + l) * c + k], br = p[(bot + r) * c + k];
        const t = tl + (tr - tl) * fx, b = bl + (br - bl) * fx;
        v[k] = Math.fround(t + (b - t) * fy); // stored as float32, as the tensor was
      }
      if (binary) {
        const f = v[c - 1];
        classes[at] = f > threshold ? 1 : 0;
        if (prob) prob[at] = f;
      } else {
        let best = 0;
        for (let k = 1; k < c; k++) if (v[k] > v[best]) best = k; // the first of equals, as tf.argMax
        classes[at] = best;
      }
    }
  }
  return { classes, prob };
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
  async 'a Runtime goes through the same steps as a TF.js model: equal probabilities, with TTA and scales, nothing leaked'() {
    const x = tf.randomNormal([2, 8, 12, 3], 0, 1, 'float32', 4) as tf.Tensor4D;
    const model = tf.sequential({ layers: [tf.layers.conv2d({ inputShape: [null, null, 3], filters: 3, kernelSize: 3, padding: 'same', kernelInitializer: tf.initializers.randomNormal({ seed: 6 }) })] });
    const runtime: Runtime = { description: 'test', logits: async (t) => model.predict(t) as tf.Tensor4D, dispose() {} };
    for (const [tta, scales] of [[[], [1]], [['hflip', 'vflip'], [1]], [['hflip'], [1, 0.5]]] as [Flip[], number[]][]) {
      const want = predictProbs(model, x, tta, scales);
      const before = tf.memory().numTensors;
      const got = await networkProbs(runtime, x, tta, scales);
      assert.equal(tf.memory().numTensors, before + 1, 'only the result is left');
      assert.equal(maxDiff(got, want), 0, `${tta} ${scales}`);
      tf.dispose([want, got]);
    }
    const failing: Runtime = { description: 'test', logits: async () => { throw new Error('boom'); }, dispose() {} };
    const before = tf.memory().numTensors;
    await assert.rejects(networkProbs(failing, x, ['hflip'], [1, 0.5]), /boom/);
    assert.equal(tf.memory().numTensors, before, 'a failed call leaks nothing');
    x.dispose();
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
  async 'the mask resize agrees with tfjs resizeBilinear and classMap, up and down'() {
    for (const [c, h, w, H, W] of [[1, 5, 7, 23, 11], [2, 6, 4, 3, 13], [4, 8, 9, 31, 17]]) {
      const probs = toProbs(tf.randomNormal([1, h, w, c], 0, 2, 'float32', c) as tf.Tensor4D);
      const big = tf.image.resizeBilinear(probs, [H, W], false, true);
      const want = await classMap(big, 0.5);
      const got = await probsToMask(probs, W, H, { threshold: 0.5 });
      assert.deepEqual([...got.classes], [...want.classes], `C=${c}`);
      if (want.prob) for (let i = 0; i < want.prob.length; i++) assert.ok(Math.abs(got.prob![i] - want.prob[i]) < 1e-6);
      tf.dispose([probs, big]);
    }
  },
  'denormalize inverts normalisation'() {
    const mean = [0.5, 0.5, 0.5];
    const std = [0.25, 0.25, 0.25];
    const img = new Float32Array([(10 / 255 - 0.5) / 0.25, 0, (250 / 255 - 0.5) / 0.25]);
    assert.deepEqual([...denormalize(img, 0, 1, 1, mean, std)], [10, 128, 250]);
  },
};

runIfMain(module, selfTest);
