import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BinaryImageStats, ConfusionMatrix, formatMetricsTable, perImageScores, ThresholdSweep } from '../training/metrics';
import { UserError } from '../utils/errors';

const near = (a: number, b: number, tol = 1e-12) => assert.ok(Math.abs(a - b) < tol, `${a} vs ${b}`);

/** Binary mask of `n` pixels with ones at the given indices. */
function mask(n: number, ones: number[] | [number, number]): Uint8Array {
  const m = new Uint8Array(n);
  for (const i of ones) m[i] = 1;
  return m;
}
const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);

test('tiny object, all-background prediction: 99% pixel accuracy, 0 foreground IoU', () => {
  const cm = new ConfusionMatrix(2, 255);
  cm.update(new Uint8Array(100), mask(100, [42]));
  const s = cm.summary();
  near(s.pixelAcc, 0.99);
  assert.equal(s.fgIoU, 0);
  assert.equal(s.fgDice, 0);
  near(s.iou[0], 0.99);
  near(s.mIoU, 0.495); // background 0.99 and foreground 0 both count: fg is in gt
  near(s.meanAcc, 0.5);
  const img = perImageScores(new Uint8Array(100), mask(100, [42]), 255);
  assert.deepEqual(img, { iou: 0, dice: 0 });
});

test('hand-computed 3-class case: IoU, Dice, accuracies', () => {
  const cm = new ConfusionMatrix(3, 255);
  // gt:   0 0 0 1 1 2
  // pred: 0 0 1 1 2 2
  cm.update(new Int32Array([0, 0, 1, 1, 2, 2]), new Int32Array([0, 0, 0, 1, 1, 2]));
  const s = cm.summary();
  near(s.pixelAcc, 4 / 6);
  near(s.iou[0], 2 / 3);
  near(s.iou[1], 1 / 3);
  near(s.iou[2], 1 / 2);
  near(s.dice[1], 2 / 4);
  near(s.acc[0], 2 / 3);
  near(s.mIoU, (2 / 3 + 1 / 3 + 1 / 2) / 3);
  near(s.meanAcc, (2 / 3 + 1 / 2 + 1) / 3);
  assert.equal(s.fgIoU, undefined, 'no foreground summary for multi-class');
});

test('ignore pixels are excluded whatever is predicted there', () => {
  const a = new ConfusionMatrix(2, 255);
  a.update(new Uint8Array([1, 0, 1, 1]), new Uint8Array([1, 0, 255, 255]));
  const s = a.summary();
  assert.equal(s.pixels, 2);
  assert.equal(s.pixelAcc, 1);
  assert.equal(s.fgIoU, 1);
  assert.deepEqual(perImageScores(new Uint8Array([1, 0, 1, 1]), new Uint8Array([1, 0, 255, 255]), 255), { iou: 1, dice: 1 });
  // A different ignore index is honoured too.
  const b = new ConfusionMatrix(3, 0);
  b.update(new Uint8Array([2, 1, 2]), new Uint8Array([0, 1, 2]));
  assert.equal(b.summary().pixelAcc, 1);
});

test('mIoU averages only over classes present in gt or prediction', () => {
  const cm = new ConfusionMatrix(4, 255);
  cm.update(new Uint8Array([0, 0, 2, 2]), new Uint8Array([0, 0, 0, 2]));
  const s = cm.summary();
  assert.ok(Number.isNaN(s.iou[1]) && Number.isNaN(s.iou[3]));
  near(s.iou[0], 2 / 3);
  near(s.iou[2], 1 / 2);
  near(s.mIoU, (2 / 3 + 1 / 2) / 2);
  near(s.mDice, (0.8 + 2 / 3) / 2);
  // A class only predicted (never in gt) counts, with IoU 0.
  const cm2 = new ConfusionMatrix(3, 255);
  cm2.update(new Uint8Array([0, 1]), new Uint8Array([0, 0]));
  const s2 = cm2.summary();
  near(s2.mIoU, (0.5 + 0) / 2);
  near(s2.meanAcc, 0.5, 1e-12); // mean accuracy is over gt classes only
});

test('accumulates over a split and merges', () => {
  const a = new ConfusionMatrix(2, 255);
  a.update(new Uint8Array([1, 1]), new Uint8Array([1, 0]));
  const b = new ConfusionMatrix(2, 255);
  b.update(new Uint8Array([0, 1]), new Uint8Array([0, 1]));
  a.merge(b);
  const s = a.summary();
  assert.equal(s.pixels, 4);
  near(s.fgIoU!, 2 / 3);
  a.reset();
  assert.equal(a.summary().pixels, 0);
});

test('label outside num_classes is a UserError naming data.num_classes', () => {
  const cm = new ConfusionMatrix(2, 255);
  assert.throws(() => cm.update(new Uint8Array([0]), new Uint8Array([7])), (e: Error) => e instanceof UserError && /data\.num_classes/.test(e.message));
});

test('per-image scores: both empty is 1; hand-computed overlap', () => {
  assert.deepEqual(perImageScores(new Uint8Array(9), new Uint8Array(9), 255), { iou: 1, dice: 1 });
  assert.deepEqual(perImageScores(mask(9, [0]), new Uint8Array(9), 255), { iou: 0, dice: 0 });
  const s = perImageScores(mask(9, [0, 1, 2]), mask(9, [1, 2, 3, 4]), 255);
  near(s.iou, 2 / 5);
  near(s.dice, 4 / 7);
});

test('thresholded Jaccard: 0.64 scores 0, 0.66 keeps its value', () => {
  const st = new BinaryImageStats(255);
  const gt = mask(200, range(0, 100));
  const r1 = st.update(mask(200, range(0, 64)), gt); // IoU 64/100
  const r2 = st.update(mask(200, range(0, 66)), gt); // IoU 66/100
  near(r1.iou, 0.64);
  near(r2.iou, 0.66);
  const s = st.summary();
  assert.equal(s.images, 2);
  near(s.jaccard, 0.65);
  near(s.thresholdedJaccard, 0.33);
  near(s.dice, (2 * 64) / 164 / 2 + (2 * 66) / 166 / 2);
});

test('threshold sweep: exact counts at 0.05 steps, best by Dice', () => {
  const sw = new ThresholdSweep(255);
  // fg probs 0.55, 0.65, 0.9; bg probs 0.1, 0.6; one ignored pixel with prob 0.99 (bg label would hurt).
  sw.update(new Float32Array([0.55, 0.65, 0.9, 0.1, 0.6, 0.99]), new Uint8Array([1, 1, 1, 0, 0, 255]));
  const res = sw.results();
  assert.equal(res.length, 19);
  near(res[0].threshold, 0.05);
  near(res[18].threshold, 0.95);
  const at = (t: number) => res.find((r) => Math.abs(r.threshold - t) < 1e-9)!;
  // t=0.5: TP 3, FP 1 -> Dice 6/7, IoU 3/4
  near(at(0.5).dice, 6 / 7);
  near(at(0.5).iou, 3 / 4);
  // t=0.6 (bg 0.6 counts as fg: prob >= threshold): TP 2, FP 1, FN 1
  near(at(0.6).dice, 4 / 6);
  // t=0.7: only 0.9 is above -> TP 1, FP 0, FN 2
  near(at(0.7).dice, 2 / 4);
  const best = sw.best();
  near(best.dice, 6 / 7);
  // 0.15..0.55 all give TP 3, FP 1; at 0.05 and 0.1 bg 0.1 also counts (prob >= threshold).
  assert.equal(best.threshold, 0.15, 'ties go to the lowest threshold');
  near(best.iou, best.dice / (2 - best.dice));
});

test('threshold sweep on an empty split scores 1 everywhere', () => {
  const sw = new ThresholdSweep();
  assert.ok(sw.results().every((r) => r.dice === 1 && r.iou === 1));
});

test('formatMetricsTable: per-class rows, summary and per-image lines', () => {
  const cm = new ConfusionMatrix(2, 255);
  cm.update(new Uint8Array(100), mask(100, [42]));
  const st = new BinaryImageStats(255);
  st.update(new Uint8Array(100), mask(100, [42]));
  const t = formatMetricsTable(cm.summary(), ['background', 'lesion'], st.summary());
  const lines = t.split('\n');
  assert.match(lines[0], /class\s+IoU\s+Dice\s+Acc/);
  assert.match(lines[1], /^background\s+99\.00\s+99\.50\s+100\.00$/);
  assert.match(lines[2], /^lesion\s+0\.00\s+0\.00\s+0\.00$/);
  assert.match(t, /mIoU\s+49\.50/);
  assert.match(t, /pixel acc\s+99\.00/);
  assert.match(t, /foreground IoU\s+0\.00/);
  assert.match(t, /thresholded Jaccard\s+0\.00/);
  // Absent classes show '-', missing names fall back to 'class i'.
  const c3 = new ConfusionMatrix(3, 255);
  c3.update(new Uint8Array([0]), new Uint8Array([0]));
  assert.match(formatMetricsTable(c3.summary(), ['bg']), /^class 2\s+-\s+-\s+-$/m);
});
