// Segmentation losses by name, combined as weighted sums (`bce+dice`).
// Logits are raw network outputs [N,H,W,C]; C = 1 means one sigmoid output
// (labels 0/1), C > 1 means softmax over C classes. Pixels whose label is the
// ignore index contribute nothing to any loss (value or gradient).
import * as tf from '@tensorflow/tfjs';
import assert from 'node:assert/strict';
import { Config, parseConfig } from '../utils/config';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';

export type LossFn = (logits: tf.Tensor4D, labels: tf.Tensor3D) => tf.Scalar;

// Keeps a fully ignored batch or an empty class from dividing by zero.
const EPS = 1e-7;

interface LossOptions {
  ignoreIndex: number;
  classWeights?: number[];
  smooth: number;
  gamma: number;
  perImage: boolean;
  ohem?: { thresh: number; min_kept: number };
  boundary?: { weight: number; width: number };
}

/**
 * Tensors shared by the parts of one loss call, built on first use so that
 * e.g. `ce+dice` computes the softmax once.
 */
class Ctx {
  private cache = new Map<string, tf.Tensor>();
  readonly c: number;

  constructor(readonly logits: tf.Tensor4D, readonly labels: tf.Tensor3D, readonly o: LossOptions) {
    this.c = logits.shape[3];
  }

  private memo<T extends tf.Tensor>(key: string, make: () => T): T {
    let t = this.cache.get(key);
    if (!t) this.cache.set(key, (t = make()));
    return t as T;
  }

  /** 1 for pixels that count, 0 for ignored ones; [N,H,W]. */
  valid(): tf.Tensor3D {
    return this.memo('valid', () => tf.notEqual(this.labels, this.o.ignoreIndex).cast('float32') as tf.Tensor3D);
  }

  /** Binary target: 1 for foreground, 0 for background and ignored; [N,H,W]. */
  y(): tf.Tensor3D {
    return this.memo('y', () => tf.mul(tf.equal(this.labels, 1).cast('float32'), this.valid()) as tf.Tensor3D);
  }

  /** Single-channel logits as [N,H,W]. */
  x(): tf.Tensor3D {
    return this.memo('x', () => tf.squeeze(this.logits, [3]) as tf.Tensor3D);
  }

  /** One-hot target with all-zero rows at ignored pixels; [N,H,W,C]. */
  oneHot(): tf.Tensor4D {
    return this.memo('oneHot', () => {
      // -1 is outside [0, C), so oneHot leaves those rows empty. int32 then cast:
      // the wasm OneHot kernel ignores a float32 dtype argument and returns int bits.
      const safe = tf.where(tf.notEqual(this.labels, this.o.ignoreIndex), this.labels, tf.fill(this.labels.shape, -1, 'int32'));
      return tf.oneHot(safe as tf.Tensor3D, this.c).cast('float32') as tf.Tensor4D;
    });
  }

  logSoftmax(): tf.Tensor4D {
    return this.memo('logp', () => tf.logSoftmax(this.logits) as tf.Tensor4D);
  }

  /** log p[label] (C > 1); 0 at ignored pixels, whose one-hot row is empty; [N,H,W]. */
  logPt(): tf.Tensor3D {
    return this.memo('logPt', () => tf.sum(tf.mul(this.logSoftmax(), this.oneHot()), -1) as tf.Tensor3D);
  }

  /** Foreground probability [N,H,W] (C = 1) or class probabilities [N,H,W,C]. */
  probs(): tf.Tensor {
    return this.memo('probs', () => (this.c === 1 ? tf.sigmoid(this.x()) : tf.exp(this.logSoftmax())));
  }

  /**
   * Per-pixel weight of the per-pixel losses: class weight of the pixel's label, times
   * 1 + boundary.weight near another class, 0 at ignored pixels and, with OHEM, at the
   * easy pixels left out; [N,H,W].
   */
  pixelWeight(): tf.Tensor3D {
    return this.memo('w', () => {
      let w = this.classPixelWeight();
      const b = this.o.boundary;
      if (b) w = tf.mul(w, tf.add(1, tf.mul(this.nearBoundary(b.width), b.weight))) as tf.Tensor3D;
      const o = this.o.ohem;
      return o ? (tf.mul(w, ohemMask(this.trueClassProb(), o.thresh, o.min_kept)) as tf.Tensor3D) : w;
    });
  }

  /**
   * 1 where a pixel of another labelled class lies within `width` pixels (a square window),
   * else 0; [N,H,W]. The max over the window of each class's one-hot channel says which
   * classes are there; two or more is a boundary. Ignored pixels are no class.
   */
  private nearBoundary(width: number): tf.Tensor3D {
    const oh = this.c === 1 ? (tf.stack([tf.sub(this.valid(), this.y()), this.y()], -1) as tf.Tensor4D) : this.oneHot();
    const present = tf.maxPool(oh, 2 * width + 1, 1, 'same');
    return tf.greater(tf.sum(present, -1), 1).cast('float32') as tf.Tensor3D;
  }

  private classPixelWeight(): tf.Tensor3D {
    const cw = this.o.classWeights;
    if (!cw) return this.valid();
    if (this.c === 1) {
      // bg weight where y = 0, fg weight where y = 1, both masked by valid.
      return tf.add(tf.mul(this.valid(), cw[0]), tf.mul(this.y(), cw[1] - cw[0])) as tf.Tensor3D;
    }
    return tf.sum(tf.mul(this.oneHot(), tf.tensor1d(cw)), -1) as tf.Tensor3D;
  }

  /** Probability of each pixel's own class; 2 at ignored pixels, so that they sort last; [N,H,W]. */
  private trueClassProb(): tf.Tensor3D {
    const pt =
      this.c === 1
        ? tf.where(tf.equal(this.y(), 1), this.probs(), tf.sub(1, this.probs()))
        : tf.exp(this.logPt());
    return tf.where(tf.equal(this.valid(), 1), pt, tf.fill(pt.shape, 2)) as tf.Tensor3D;
  }
}

/**
 * 1 for the pixels OHEM keeps, 0 for the others: those whose true-class probability is
 * below max(thresh, the (min_kept+1)-th smallest), so at least min_kept of them, as
 * MMSegmentation's OHEMPixelSampler. Ignored pixels (2) are never below the cut (at most 2).
 * The selection is a constant for the gradient (a customGrad with zero gradient): tfjs has
 * no gradient for TopK or the comparisons.
 */
const ohemMask = (pt: tf.Tensor3D, thresh: number, minKept: number): tf.Tensor3D =>
  tf.customGrad((ptIn) => {
    const p = ptIn as tf.Tensor3D;
    const flat = tf.reshape(p, [-1]);
    const k = Math.min(minKept + 1, flat.size);
    // The k smallest are the k largest of -p; an ignored pixel there (2) keeps every valid one.
    const kth = tf.neg(tf.min(tf.topk(tf.neg(flat), k).values));
    const keep = tf.less(p, tf.maximum(kth, thresh)).cast('float32') as tf.Tensor3D;
    return { value: keep, gradFunc: (dy) => tf.zerosLike(dy) };
  })(pt) as tf.Tensor3D;

/** sum(perPixel * w) / sum(w); 0 when every pixel is ignored. */
function weightedMean(perPixel: tf.Tensor, w: tf.Tensor): tf.Scalar {
  // max, not a test for 0: with OHEM, w depends on the logits, and tfjs has no gradient for
  // comparisons. The sum is 0 or at least a class weight; 1e-12 squared is still a float32.
  return tf.div(tf.sum(tf.mul(perPixel, w)), tf.maximum(tf.sum(w), 1e-12)) as tf.Scalar;
}

function bce(ctx: Ctx): tf.Scalar {
  if (ctx.c !== 1) return ce(ctx);
  // -[y log σ(x) + (1-y) log(1-σ(x))] = softplus(x) - x*y, stable for large |x|.
  const perPixel = tf.sub(tf.softplus(ctx.x()), tf.mul(ctx.x(), ctx.y()));
  return weightedMean(perPixel, ctx.pixelWeight());
}

function ce(ctx: Ctx): tf.Scalar {
  if (ctx.c === 1) return bce(ctx);
  return weightedMean(tf.neg(ctx.logPt()), ctx.pixelWeight());
}

/** base^gamma without pow's gradient trouble at base 0. */
function powGamma(base: tf.Tensor, gamma: number): tf.Tensor {
  if (gamma === 0) return tf.onesLike(base);
  if (Number.isInteger(gamma) && gamma <= 4) {
    let r = base;
    for (let i = 1; i < gamma; i++) r = tf.mul(r, base);
    return r;
  }
  return tf.exp(tf.mul(tf.log(tf.maximum(base, 1e-12)), gamma));
}

function focal(ctx: Ctx): tf.Scalar {
  const g = ctx.o.gamma;
  let perPixel: tf.Tensor;
  if (ctx.c === 1) {
    // z = x for fg, -x for bg: p_t = σ(z), -log p_t = softplus(-z), (1-p_t)^γ = exp(-γ softplus(z)).
    const z = tf.mul(ctx.x(), tf.sub(tf.mul(ctx.y(), 2), 1));
    const nll = tf.softplus(tf.neg(z));
    perPixel = g === 0 ? nll : tf.mul(tf.exp(tf.mul(tf.softplus(z), -g)), nll);
  } else {
    const logPt = ctx.logPt();
    perPixel = tf.neg(tf.mul(powGamma(tf.sub(1, tf.exp(logPt)), g), logPt));
  }
  return weightedMean(perPixel, ctx.pixelWeight());
}

/**
 * Soft intersection and sums per class, ignored pixels excluded: [C'] summed over the
 * batch, or [N, C'] per image (`per_image`); C' = 1 for a single sigmoid output.
 */
function softOverlap(ctx: Ctx): { inter: tf.Tensor; sums: tf.Tensor } {
  const perImage = ctx.o.perImage;
  const axes = perImage ? [1, 2] : [0, 1, 2];
  if (ctx.c === 1) {
    const p = tf.mul(ctx.probs(), ctx.valid());
    const shape = perImage ? [-1, 1] : [1];
    const inter = tf.reshape(tf.sum(tf.mul(p, ctx.y()), axes), shape);
    const sums = tf.reshape(tf.add(tf.sum(p, axes), tf.sum(ctx.y(), axes)), shape);
    return { inter, sums };
  }
  const p = tf.mul(ctx.probs(), tf.expandDims(ctx.valid(), -1));
  const oh = ctx.oneHot();
  return { inter: tf.sum(tf.mul(p, oh), axes), sums: tf.add(tf.sum(p, axes), tf.sum(oh, axes)) };
}

/** 1 - mean of `score` over classes (class-weighted if given), then over images if per image. */
function oneMinusMean(ctx: Ctx, score: tf.Tensor): tf.Scalar {
  const cw = ctx.o.classWeights;
  if (!cw || ctx.c === 1) return tf.sub(1, tf.mean(score)) as tf.Scalar;
  const w = tf.tensor1d(cw);
  const perRow = tf.div(tf.sum(tf.mul(score, w), -1), Math.max(EPS, cw.reduce((a, b) => a + b, 0)));
  return tf.sub(1, tf.mean(perRow)) as tf.Scalar;
}

function dice(ctx: Ctx): tf.Scalar {
  const { inter, sums } = softOverlap(ctx);
  const s = ctx.o.smooth + EPS; // EPS: a class empty in both scores 1, not 0/0
  return oneMinusMean(ctx, tf.div(tf.add(tf.mul(inter, 2), s), tf.add(sums, s)));
}

function jaccard(ctx: Ctx): tf.Scalar {
  const { inter, sums } = softOverlap(ctx);
  const s = ctx.o.smooth + EPS;
  return oneMinusMean(ctx, tf.div(tf.add(inter, s), tf.add(tf.sub(sums, inter), s)));
}

/**
 * Lovász-softmax (Berman 2018): the convex surrogate of each class's Jaccard loss, averaged
 * over the classes present in the batch (class-weighted if given). Pixels are pooled over
 * the batch. A single sigmoid output is scored as two classes, background and foreground.
 */
function lovasz(ctx: Ctx): tf.Scalar {
  let probs: tf.Tensor, oh: tf.Tensor;
  if (ctx.c === 1) {
    const p = ctx.probs();
    probs = tf.stack([tf.sub(1, p), p], -1);
    oh = tf.stack([tf.sub(ctx.valid(), ctx.y()), ctx.y()], -1);
  } else {
    probs = ctx.probs();
    oh = ctx.oneHot();
  }
  const c = probs.shape[3]!;
  const fg = tf.transpose(tf.reshape(oh, [-1, c])) as tf.Tensor2D; // [C, P]
  const valid = tf.reshape(ctx.valid(), [1, -1]);
  // |fg - p| is 0 at ignored pixels: they sort last and add nothing, as if left out.
  const err = tf.mul(tf.abs(tf.sub(fg, tf.transpose(tf.reshape(probs, [-1, c])))), valid) as tf.Tensor2D;
  const cw = ctx.o.classWeights; // [bg, fg] for a sigmoid output, as the two classes here
  return lovaszOfErrors(err, fg, cw ? tf.tensor1d(cw) : tf.ones([c]));
}

/**
 * sum over present classes of w_c * <sorted errors, Lovász gradient of the sorted labels>,
 * divided by the summed weights. The sort is not differentiable, and tfjs has no gradient
 * for TopK (nor, on wasm, for gather), so the value is built in a customGrad whose
 * gradient is the per-pixel Lovász weight, scattered back to pixel order.
 */
const lovaszOfErrors = (err: tf.Tensor2D, fg: tf.Tensor2D, w: tf.Tensor1D): tf.Scalar =>
  tf.customGrad((eIn, saveIn) => {
    const [e, save] = [eIn as tf.Tensor2D, saveIn as tf.GradSaveFunc];
    const [c, n] = e.shape as [number, number];
    const { indices } = tf.topk(e, n); // descending per class
    const flat = tf.reshape(tf.add(indices, tf.mul(tf.range(0, c, 1, 'int32').reshape([c, 1]), tf.scalar(n, 'int32'))), [-1, 1]);
    const fgSorted = tf.reshape(tf.gatherND(tf.reshape(fg, [-1]), flat), [c, n]); // gatherND: 10x gather's speed on wasm
    const gts = tf.sum(fg, 1, true);
    const inter = tf.sub(gts, tf.cumsum(fgSorted, 1));
    const union = tf.add(gts, tf.cumsum(tf.sub(1, fgSorted), 1));
    const jac = tf.sub(1, tf.div(inter, union));
    const grad = tf.concat([tf.slice(jac, [0, 0], [c, 1]), tf.sub(tf.slice(jac, [0, 1], [c, n - 1]), tf.slice(jac, [0, 0], [c, n - 1]))], 1);
    const present = tf.mul(tf.greater(tf.reshape(gts, [c]), 0).cast('float32'), w);
    const scale = tf.div(present, tf.maximum(tf.sum(present), EPS)).reshape([c, 1]);
    const perPixel = tf.mul(tf.reshape(tf.scatterND(flat, tf.reshape(grad, [-1]), [c * n]), [c, n]), scale);
    save([perPixel]);
    return {
      value: tf.sum(tf.mul(e, perPixel)) as tf.Scalar,
      gradFunc: (dy, saved) => tf.mul(dy, saved[0]),
    };
  })(err) as tf.Scalar;

const REGISTRY: Record<string, (ctx: Ctx) => tf.Scalar> = { bce, ce, dice, jaccard, focal, lovasz };

export function registeredLosses(): string[] {
  return Object.keys(REGISTRY);
}

/** Builds the training loss from training.loss (names joined by '+', optional weights). */
export function buildLoss(cfg: Config): LossFn {
  const lc = cfg.training.loss;
  const names = lc.name.split('+').map((s) => s.trim().toLowerCase());
  for (const n of names) {
    if (!REGISTRY[n]) throw new UserError(`training.loss.name: unknown loss '${n}'; expected one of ${registeredLosses().join(', ')} (join with '+')`);
  }
  const weights = lc.weights ?? names.map(() => 1);
  if (weights.length !== names.length) {
    throw new UserError(`training.loss.weights: expected ${names.length} numbers (one per loss in '${lc.name}'), got ${weights.length}`);
  }
  if (lc.class_weights && lc.class_weights.length !== cfg.data.num_classes) {
    throw new UserError(`training.loss.class_weights: expected ${cfg.data.num_classes} numbers (data.num_classes), got ${lc.class_weights.length}`);
  }
  const opts: LossOptions = {
    ignoreIndex: cfg.data.ignore_index,
    classWeights: lc.class_weights,
    smooth: lc.smooth,
    gamma: lc.focal_gamma,
    perImage: lc.per_image,
    ohem: lc.ohem,
    boundary: lc.boundary,
  };
  const parts = names.map((n, i) => ({ fn: REGISTRY[n], w: weights[i] })).filter((p) => p.w !== 0);
  return (logits, labels) =>
    tf.tidy(() => {
      if (logits.rank !== 4 || labels.rank !== 3) throw new Error(`loss: expected logits [N,H,W,C] and labels [N,H,W], got ${logits.shape} and ${labels.shape}`);
      const lab = labels.dtype === 'int32' ? labels : (labels.cast('int32') as tf.Tensor3D);
      const ctx = new Ctx(logits, lab, opts);
      let total: tf.Scalar = tf.scalar(0);
      for (const p of parts) {
        const v = p.fn(ctx);
        total = tf.add(total, p.w === 1 ? v : tf.mul(v, p.w));
      }
      return total;
    });
}

// ---------------------------------------------------------------------------
const cfgWith = (loss: Record<string, unknown>, numClasses = 2) =>
  parseConfig({ data: { num_classes: numClasses }, training: { loss } });

export const selfTest: SelfTest = {
  'ce equals -log softmax at the label, ignoring ignore_index'() {
    const f = buildLoss(cfgWith({ name: 'ce' }, 3));
    const logits = tf.tensor4d([1, 2, 3, 0, 0, 0, 5, 5, 5], [1, 1, 3, 3]);
    const labels = tf.tensor3d([2, 0, 255], [1, 1, 3], 'int32');
    const v = f(logits, labels).dataSync()[0];
    const l0 = -(3 - Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3)));
    const expect = (l0 + Math.log(3)) / 2;
    assert.ok(Math.abs(v - expect) < 1e-5, `${v} vs ${expect}`);
  },
  'per-image dice is the mean of the images\' dice; batch dice pools the pixels'() {
    // Image 0: a large mask predicted well; image 1: a one-pixel mask missed.
    const logits = tf.tensor4d([9, 9, 9, -9, -9, -9, -9, -9], [2, 2, 2, 1]);
    const labels = tf.tensor3d([1, 1, 1, 0, 0, 0, 0, 1], [2, 2, 2], 'int32');
    const p = logits.sigmoid().dataSync();
    const y = labels.dataSync();
    const diceOf = (lo: number, hi: number) => {
      let inter = 0, sums = 0;
      for (let i = lo; i < hi; i++) { inter += p[i] * y[i]; sums += p[i] + y[i]; }
      return { inter, sums, d: (2 * inter + 1) / (sums + 1) };
    };
    const a = diceOf(0, 4), b = diceOf(4, 8);
    const perImage = buildLoss(cfgWith({ name: 'dice', per_image: true }))(logits, labels).dataSync()[0];
    const pooled = buildLoss(cfgWith({ name: 'dice' }))(logits, labels).dataSync()[0];
    assert.ok(Math.abs(perImage - (1 - (a.d + b.d) / 2)) < 1e-5, `${perImage}`);
    assert.ok(Math.abs(pooled - (1 - (2 * (a.inter + b.inter) + 1) / (a.sums + b.sums + 1))) < 1e-5, `${pooled}`);
    assert.ok(perImage > pooled + 0.1, `the missed small mask weighs more per image: ${perImage} vs ${pooled}`);
  },
  'per-image multi-class dice with class weights ignores ignored pixels'() {
    const logits = tf.randomNormal([2, 3, 3, 3], 0, 2, 'float32', 7) as tf.Tensor4D;
    const lab = [0, 1, 2, 255, 1, 1, 0, 2, 2, 2, 2, 2, 1, 0, 255, 255, 1, 0];
    const labels = tf.tensor3d(lab, [2, 3, 3], 'int32');
    const cw = [1, 2, 0.5];
    const v = buildLoss(cfgWith({ name: 'dice', per_image: true, class_weights: cw }, 3))(logits, labels).dataSync()[0];
    const pr = tf.softmax(logits).dataSync();
    let total = 0;
    for (let n = 0; n < 2; n++) {
      let row = 0;
      for (let c = 0; c < 3; c++) {
        let inter = 0, sums = 0;
        for (let i = 0; i < 9; i++) {
          const l = lab[n * 9 + i];
          if (l === 255) continue;
          const pc = pr[(n * 9 + i) * 3 + c];
          inter += pc * (l === c ? 1 : 0);
          sums += pc + (l === c ? 1 : 0);
        }
        row += cw[c] * (2 * inter + 1) / (sums + 1);
      }
      total += row / 3.5;
    }
    assert.ok(Math.abs(v - (1 - total / 2)) < 1e-5, `${v} vs ${1 - total / 2}`);
  },
  'ohem averages ce over the hard pixels only, at least min_kept of them'() {
    // True-class probabilities: 0.96, 0.33, 0.11, 0.96 (pixel 4 ignored).
    const logits = tf.tensor4d([4, 0, 0, 0, 0, 0, 0, 2, 0], [1, 1, 3, 3]).concat(tf.tensor4d([0, 0, 4, 9, 9, 9], [1, 1, 2, 3]), 2);
    const labels = tf.tensor3d([0, 1, 0, 2, 255], [1, 1, 5], 'int32');
    const nll = tf.neg(tf.sum(tf.mul(tf.logSoftmax(logits), tf.oneHot(tf.tensor3d([0, 1, 0, 2, 0], [1, 1, 5], 'int32'), 3)), -1)).dataSync();
    const ohem = (thresh: number, min_kept: number) => buildLoss(cfgWith({ name: 'ce', ohem: { thresh, min_kept } }, 3))(logits, labels).dataSync()[0];
    const near = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-5, `${a} vs ${b}`);
    near(ohem(0.7, 1), (nll[1] + nll[2]) / 2); // below 0.7: pixels 1 and 2
    near(ohem(0.3, 1), nll[2]); // only pixel 2 is below 0.3
    near(ohem(0.3, 2), (nll[1] + nll[2]) / 2); // the two hardest, though pixel 1 is above 0.3
    near(ohem(0.3, 99), buildLoss(cfgWith({ name: 'ce' }, 3))(logits, labels).dataSync()[0]); // fewer valid pixels than min_kept: all
  },
  'boundary weighs the pixels next to another class 1 + weight times'() {
    // Labels 0 0 1 255 255 in a row, width 1: pixels 1 and 2 touch another class; pixel 0
    // does not, and the ignored pixels are no class.
    const logits = tf.tensor4d([1, 0, 2, 0, 0, 1, 3, 0, 0, 0], [1, 1, 5, 2]);
    const labels = tf.tensor3d([0, 0, 1, 255, 255], [1, 1, 5], 'int32');
    const nll = tf.neg(tf.sum(tf.mul(tf.logSoftmax(logits), tf.oneHot(tf.tensor3d([0, 0, 1, 0, 0], [1, 1, 5], 'int32'), 2)), -1)).dataSync();
    const v = buildLoss(cfgWith({ name: 'ce', boundary: { weight: 2, width: 1 } }))(logits, labels).dataSync()[0];
    const expect = (nll[0] + 3 * nll[1] + 3 * nll[2]) / 7;
    assert.ok(Math.abs(v - expect) < 1e-5, `${v} vs ${expect}`);
  },
};

runIfMain(module, selfTest);
