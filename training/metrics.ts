// Evaluation metrics on plain typed arrays (no tf): a confusion matrix summed
// over a whole split, per-image foreground scores for binary tasks (ISIC
// style), and a threshold sweep from probability histograms.
import assert from 'node:assert/strict';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';

type Labels = Uint8Array | Int32Array;

export interface MetricsSummary {
  numClasses: number;
  /** Pixels counted (ignored ones excluded). */
  pixels: number;
  pixelAcc: number;
  /** Mean recall over classes present in ground truth. */
  meanAcc: number;
  /** Mean over classes that occur in ground truth or prediction. */
  mIoU: number;
  mDice: number;
  /** Per class; NaN where the class occurs in neither gt nor prediction (acc: not in gt). */
  iou: number[];
  dice: number[];
  acc: number[];
  /** Binary only (numClasses 2): scores of class 1; 1 when foreground is absent from both. */
  fgIoU?: number;
  fgDice?: number;
}

const div = (a: number, b: number) => (b > 0 ? a / b : NaN);
const meanDefined = (xs: number[]) => {
  const d = xs.filter((x) => !Number.isNaN(x));
  return d.length ? d.reduce((a, b) => a + b, 0) / d.length : NaN;
};

export class ConfusionMatrix {
  /** Row = ground truth, column = prediction. Float64 so big splits cannot overflow. */
  readonly counts: Float64Array;

  constructor(readonly numClasses: number, readonly ignoreIndex: number) {
    this.counts = new Float64Array(numClasses * numClasses);
  }

  update(pred: Labels, gt: Labels): void {
    if (pred.length !== gt.length) throw new Error(`ConfusionMatrix.update: pred has ${pred.length} pixels, gt ${gt.length}`);
    const n = this.numClasses;
    const ign = this.ignoreIndex;
    const m = this.counts;
    for (let i = 0; i < gt.length; i++) {
      const g = gt[i];
      if (g === ign) continue;
      const p = pred[i];
      if (g >= n || g < 0) throw new UserError(`data.num_classes: mask value ${g} is outside 0..${n - 1} and is not data.ignore_index (${ign})`);
      if (p >= n || p < 0) throw new Error(`ConfusionMatrix.update: predicted class ${p} outside 0..${n - 1}`);
      m[g * n + p] += 1;
    }
  }

  /** Adds another matrix (e.g. from another worker). */
  merge(other: ConfusionMatrix): void {
    for (let i = 0; i < this.counts.length; i++) this.counts[i] += other.counts[i];
  }

  reset(): void {
    this.counts.fill(0);
  }

  /** The counts as rows (ground truth) of columns (prediction), for metrics.json. */
  rows(): number[][] {
    const n = this.numClasses;
    return Array.from({ length: n }, (_, g) => Array.from(this.counts.subarray(g * n, (g + 1) * n)));
  }

  summary(): MetricsSummary {
    const n = this.numClasses;
    const m = this.counts;
    let total = 0;
    let correct = 0;
    const iou: number[] = [];
    const dice: number[] = [];
    const acc: number[] = [];
    for (let c = 0; c < n; c++) {
      let gtC = 0;
      let predC = 0;
      for (let k = 0; k < n; k++) {
        gtC += m[c * n + k];
        predC += m[k * n + c];
      }
      const tp = m[c * n + c];
      total += gtC;
      correct += tp;
      iou.push(div(tp, gtC + predC - tp));
      dice.push(div(2 * tp, gtC + predC));
      acc.push(div(tp, gtC));
    }
    const s: MetricsSummary = {
      numClasses: n,
      pixels: total,
      pixelAcc: div(correct, total),
      meanAcc: meanDefined(acc),
      mIoU: meanDefined(iou),
      mDice: meanDefined(dice),
      iou,
      dice,
      acc,
    };
    if (n === 2) {
      s.fgIoU = Number.isNaN(iou[1]) ? 1 : iou[1];
      s.fgDice = Number.isNaN(dice[1]) ? 1 : dice[1];
    }
    return s;
  }
}

/** Foreground (class 1) IoU and Dice of one image; both empty counts as a perfect 1. */
export function perImageScores(pred: Labels, gt: Labels, ignoreIndex: number): { iou: number; dice: number } {
  let tp = 0;
  let fp = 0;
  let fn = 0;
  for (let i = 0; i < gt.length; i++) {
    const g = gt[i];
    if (g === ignoreIndex) continue;
    const pf = pred[i] === 1;
    const gf = g === 1;
    if (pf && gf) tp++;
    else if (pf) fp++;
    else if (gf) fn++;
  }
  const union = tp + fp + fn;
  if (union === 0) return { iou: 1, dice: 1 };
  return { iou: tp / union, dice: (2 * tp) / (2 * tp + fp + fn) };
}

export interface BinaryImageSummary {
  images: number;
  /** Mean per-image foreground Jaccard. */
  jaccard: number;
  dice: number;
  /** ISIC 2018: per-image Jaccard, scored 0 below the threshold (0.65), averaged. */
  thresholdedJaccard: number;
}

/** Accumulates per-image foreground scores over a split. */
export class BinaryImageStats {
  readonly ious: number[] = [];
  readonly dices: number[] = [];

  constructor(readonly ignoreIndex: number, readonly jaccardThreshold = 0.65) {}

  update(pred: Labels, gt: Labels): { iou: number; dice: number } {
    const s = perImageScores(pred, gt, this.ignoreIndex);
    this.ious.push(s.iou);
    this.dices.push(s.dice);
    return s;
  }

  summary(): BinaryImageSummary {
    const n = this.ious.length;
    const mean = (xs: number[]) => (n ? xs.reduce((a, b) => a + b, 0) / n : NaN);
    return {
      images: n,
      jaccard: mean(this.ious),
      dice: mean(this.dices),
      thresholdedJaccard: mean(this.ious.map((j) => (j < this.jaccardThreshold ? 0 : j))),
    };
  }
}

export interface ThresholdScore {
  threshold: number;
  dice: number;
  iou: number;
}

/**
 * Foreground Dice/IoU over a split at thresholds 0.05..0.95 from histograms of
 * the foreground probability of fg and bg pixels, so nothing per pixel is kept.
 * 1000 bins put every 0.05 step exactly on a bin edge; a pixel counts as
 * foreground when prob >= threshold.
 */
export class ThresholdSweep {
  private readonly fg: Float64Array;
  private readonly bg: Float64Array;

  constructor(readonly ignoreIndex = 255, readonly bins = 1000) {
    this.fg = new Float64Array(bins);
    this.bg = new Float64Array(bins);
  }

  update(probs: Float32Array, gt: Labels): void {
    if (probs.length !== gt.length) throw new Error(`ThresholdSweep.update: ${probs.length} probabilities, ${gt.length} labels`);
    const b = this.bins;
    for (let i = 0; i < gt.length; i++) {
      const g = gt[i];
      if (g === this.ignoreIndex) continue;
      let k = Math.floor(probs[i] * b);
      k = k < 0 ? 0 : k >= b ? b - 1 : k;
      if (g === 1) this.fg[k]++;
      else this.bg[k]++;
    }
  }

  results(): ThresholdScore[] {
    const b = this.bins;
    // Suffix sums: counts with prob >= k/bins.
    const fgAbove = new Float64Array(b + 1);
    const bgAbove = new Float64Array(b + 1);
    for (let k = b - 1; k >= 0; k--) {
      fgAbove[k] = fgAbove[k + 1] + this.fg[k];
      bgAbove[k] = bgAbove[k + 1] + this.bg[k];
    }
    const totalFg = fgAbove[0];
    const out: ThresholdScore[] = [];
    for (let s = 1; s <= 19; s++) {
      const t = s / 20;
      const k = Math.round(t * b);
      const tp = fgAbove[k];
      const fp = bgAbove[k];
      const fn = totalFg - tp;
      const union = tp + fp + fn;
      out.push({ threshold: t, dice: union ? (2 * tp) / (2 * tp + fp + fn) : 1, iou: union ? tp / union : 1 });
    }
    return out;
  }

  /** Threshold with the highest Dice (IoU = D/(2-D) peaks at the same place); ties go to the lower one. */
  best(): ThresholdScore {
    return this.results().reduce((a, r) => (r.dice > a.dice ? r : a));
  }
}

const pct = (x: number | undefined) => (x === undefined || Number.isNaN(x) ? '    -' : (100 * x).toFixed(2).padStart(6));

/** Compact terminal table: one row per class, then summary lines. */
export function formatMetricsTable(s: MetricsSummary, classNames: string[], images?: BinaryImageSummary): string {
  const names = Array.from({ length: s.numClasses }, (_, c) => classNames[c] ?? `class ${c}`);
  const w = Math.max(5, ...names.map((n) => n.length));
  const lines = [`${'class'.padEnd(w)}     IoU    Dice     Acc`];
  for (let c = 0; c < s.numClasses; c++) lines.push(`${names[c].padEnd(w)}  ${pct(s.iou[c])}  ${pct(s.dice[c])}  ${pct(s.acc[c])}`);
  lines.push('-'.repeat(w + 26));
  lines.push(`mIoU ${pct(s.mIoU)}  mDice ${pct(s.mDice)}  pixel acc ${pct(s.pixelAcc)}  mean acc ${pct(s.meanAcc)}`);
  if (s.fgIoU !== undefined) lines.push(`foreground IoU ${pct(s.fgIoU)}  Dice ${pct(s.fgDice)}`);
  if (images) {
    lines.push(`per image (${images.images}): Jaccard ${pct(images.jaccard)}  Dice ${pct(images.dice)}  thresholded Jaccard ${pct(images.thresholdedJaccard)}`);
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------
export const selfTest: SelfTest = {
  'hand-computed 2-class confusion'() {
    const cm = new ConfusionMatrix(2, 255);
    cm.update(new Uint8Array([0, 0, 1, 1, 1]), new Uint8Array([0, 1, 1, 1, 255]));
    const s = cm.summary();
    assert.equal(s.pixels, 4);
    assert.equal(s.pixelAcc, 0.75);
    assert.equal(s.iou[0], 0.5);
    assert.equal(s.iou[1], 2 / 3);
    assert.equal(s.fgDice, 0.8);
  },
};

runIfMain(module, selfTest);
