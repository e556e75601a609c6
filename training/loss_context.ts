// What the losses (training/losses/<name>.ts) share: the tensors of one loss call, built
// once for every part of a sum (`ce+dice` computes the softmax once), and the options and
// computations of the per-pixel losses (OHEM, boundary weighting) and of the overlap ones
// (dice, jaccard). Logits are raw network outputs [N,H,W,C]; C = 1 means one sigmoid
// output (labels 0/1), C > 1 softmax over C classes. Pixels whose label is the ignore
// index contribute nothing (value or gradient).
import * as tf from '../backends/tf';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { unsettable } from '../utils/config';
import { runIfMain, SelfTest } from '../utils/self_test';

// Keeps a fully ignored batch or an empty class from dividing by zero.
export const EPS = 1e-7;

/** What every loss gets besides its own options (from training.loss and data:). */
export interface LossSetting {
  ignoreIndex: number;
  classWeights?: number[];
}

/** Options of the per-pixel losses (bce, ce, focal): the keys they own under training.loss. */
export const pixelOptions = {
  // Online hard example mining, as MMSegmentation's OHEMPixelSampler: only pixels whose
  // probability of their own class is below `thresh` count, and at least the `min_kept`
  // hardest of the batch (all of them when fewer).
  ohem: unsettable(
    z
      .object({
        thresh: z.number().finite().gt(0).max(1).default(0.7),
        min_kept: z.number().finite().int().min(1).default(100000),
      })
      .strict(),
  ),
  // Boundary weighting: a pixel with a pixel of another labelled class within `width`
  // pixels counts 1 + `weight` times, so that edges, and thin objects (poles, signs) that
  // are mostly edge, weigh more. Ignored pixels are no class.
  boundary: unsettable(
    z
      .object({
        weight: z.number().finite().min(0).default(1),
        width: z.number().finite().int().min(1).max(15).default(2),
      })
      .strict(),
  ),
};
export type PixelOptions = { ohem?: { thresh: number; min_kept: number }; boundary?: { weight: number; width: number } };

/** Options of the overlap losses (dice, jaccard). */
export const overlapOptions = {
  smooth: z.number().finite().min(0).default(1),
  // Per image, then averaged: each image's overlap counts alike, as in per-image metrics
  // (ISIC's thresholded Jaccard), instead of large masks dominating.
  per_image: z.boolean().default(false),
};
export type OverlapOptions = { smooth: number; per_image: boolean };

/** Tensors shared by the parts of one loss call, built on first use. */
export class LossContext {
  private cache = new Map<string, tf.Tensor>();
  readonly c: number;

  constructor(readonly logits: tf.Tensor4D, readonly labels: tf.Tensor3D, readonly o: LossSetting) {
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
  pixelWeight(p: PixelOptions): tf.Tensor3D {
    return this.memo(`w ${JSON.stringify([p.ohem, p.boundary])}`, () => {
      let w = this.classPixelWeight();
      const b = p.boundary;
      if (b) w = tf.mul(w, tf.add(1, tf.mul(this.nearBoundary(b.width), b.weight))) as tf.Tensor3D;
      const o = p.ohem;
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
export function weightedMean(perPixel: tf.Tensor, w: tf.Tensor): tf.Scalar {
  // max, not a test for 0: with OHEM, w depends on the logits, and tfjs has no gradient for
  // comparisons. The sum is 0 or at least a class weight; 1e-12 squared is still a float32.
  return tf.div(tf.sum(tf.mul(perPixel, w)), tf.maximum(tf.sum(w), 1e-12)) as tf.Scalar;
}

/** Cross-entropy: binary for a single sigmoid output, else softmax (bce and ce are both this). */
export function crossEntropy(ctx: LossContext, p: PixelOptions): tf.Scalar {
  // -[y log σ(x) + (1-y) log(1-σ(x))] = softplus(x) - x*y, stable for large |x|.
  const perPixel = ctx.c === 1 ? tf.sub(tf.softplus(ctx.x()), tf.mul(ctx.x(), ctx.y())) : tf.neg(ctx.logPt());
  return weightedMean(perPixel, ctx.pixelWeight(p));
}

/**
 * Soft intersection and sums per class, ignored pixels excluded: [C'] summed over the
 * batch, or [N, C'] per image (`per_image`); C' = 1 for a single sigmoid output.
 */
export function softOverlap(ctx: LossContext, perImage: boolean): { inter: tf.Tensor; sums: tf.Tensor } {
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
export function oneMinusMean(ctx: LossContext, score: tf.Tensor): tf.Scalar {
  const cw = ctx.o.classWeights;
  if (!cw || ctx.c === 1) return tf.sub(1, tf.mean(score)) as tf.Scalar;
  const w = tf.tensor1d(cw);
  const perRow = tf.div(tf.sum(tf.mul(score, w), -1), Math.max(EPS, cw.reduce((a, b) => a + b, 0)));
  return tf.sub(1, tf.mean(perRow)) as tf.Scalar;
}

export const selfTest: SelfTest = {
  'tensors are built once per call, ignored pixels are neither valid nor one-hot'() {
    const ctx = new LossContext(tf.zeros([1, 1, 3, 2]) as tf.Tensor4D, tf.tensor3d([0, 1, 255], [1, 1, 3], 'int32'), { ignoreIndex: 255 });
    assert.equal(ctx.oneHot(), ctx.oneHot());
    assert.deepEqual(Array.from(ctx.valid().dataSync()), [1, 1, 0]);
    assert.deepEqual(Array.from(ctx.oneHot().dataSync()), [1, 0, 0, 1, 0, 0]);
    assert.ok(Math.abs(crossEntropy(ctx, {}).dataSync()[0] - Math.log(2)) < 1e-6);
  },
};

runIfMain(module, selfTest);
