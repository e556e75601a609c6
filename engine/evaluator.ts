// Runs a model over a split: split-wide confusion matrix, per-image scores,
// optional threshold sweep, and (optionally) prediction and overlay PNGs.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '../backends/tf';
import { BatchLoader } from '../pipeline/batcher';
import { datasetMeta, listSplit, PairRef, ResolvedDataset } from '../loaders/registry';
import { Config, isBinary } from '../utils/config';
import { BinaryImageStats, ConfusionMatrix, ThresholdSweep, formatMetricsTable } from '../training/metrics';
import { denormalize, Flip, Network, networkProbs, probsToMask } from './inference';
import { decodeImage } from '../pipeline/decode';
import { colorizePng, overlayRgb, rgbPng } from '../report/overlay';
import { runIfMain, SelfTest } from '../utils/self_test';
import { FsContext, guardFsSync } from '../utils/errors';
import { writeFileReplacing } from '../utils/file_out';

/** How a failed write of a results folder is described: checkpoints live elsewhere and are untouched. */
export const RESULTS_FS: FsContext = { what: 'results', kept: 'the checkpoints are not affected', setting: 'results.root or --output' };

export interface ImageScore {
  id: string;
  dice: number;
  iou: number;
  /** Overlay path relative to the results folder, when written. */
  overlay?: string;
}

export interface EvalResult {
  metrics: Record<string, number>;
  perClass: { name: string; iou: number; dice: number; acc: number }[];
  /** Pixels of the split: row = ground-truth class, column = predicted class (ignored pixels left out). */
  confusion: number[][];
  perImage: ImageScore[];
  sweep?: { threshold: number; dice: number; iou: number }[];
  bestThreshold?: { threshold: number; dice: number; iou: number };
  table: string;
  images: number;
  /** Overlays (prediction and ground truth) of the first `keepOverlays` images: RGB pixels (HWC), for TensorBoard and the training page. */
  overlays?: { id: string; rgb: Uint8Array; width: number; height: number }[];
}

export interface EvalOptions {
  threshold: number;
  sweep?: boolean;
  /** Folder to write predictions/ and overlays/ into (writeResults' staging folder; its fs errors come out raw, for the caller to name). */
  outDir?: string;
  /** Apply the dataset's post-processing (ISIC: largest lesion, holes filled) before scoring. */
  postprocess?: boolean;
  /** Flipped copies whose predictions are averaged in (test-time augmentation). */
  tta?: readonly Flip[];
  /** Input scales (x data.size) whose predictions are averaged in. */
  scales?: readonly number[];
  /** Score at each mask's own size (probabilities resized bilinearly) rather than at data.size. */
  fullResolution?: boolean;
  /** Return the overlays of this many first images (TensorBoard's image summaries). */
  keepOverlays?: number;
  /** Aborted (e.g. by a signal): the evaluation stops at the next image, throwing the reason. */
  signal?: AbortSignal;
  /** The run's dataset (config/resolve.ts resolveRun); derived from cfg when absent. */
  dataset?: ResolvedDataset;
}

/** Mean IoU and Dice over the classes present in this image's ground truth or prediction. */
function imageScores(pred: Uint8Array, gt: Uint8Array, numClasses: number, ignore: number): { dice: number; iou: number } {
  const cm = new ConfusionMatrix(numClasses, ignore);
  cm.update(pred, gt);
  const s = cm.summary();
  return { dice: s.mDice, iou: s.mIoU };
}

/** Evaluation options as the config sets them (evaluation.*, training.threshold). */
export function evalOptionsFrom(cfg: Config): EvalOptions {
  const e = cfg.evaluation;
  return { threshold: cfg.training.threshold, tta: e.tta, scales: e.scales, fullResolution: e.full_resolution, postprocess: e.postprocess };
}

export async function evaluateSplit(model: Network, cfg: Config, pairs: PairRef[], opts: EvalOptions): Promise<EvalResult> {
  const { num_classes: numClasses, ignore_index: ignore } = cfg.data;
  const binary = isBinary(cfg);
  const meta = datasetMeta(cfg, opts.dataset);
  const cm = new ConfusionMatrix(numClasses, ignore);
  const imageStats = binary ? new BinaryImageStats(ignore) : null;
  const sweep = binary && opts.sweep ? new ThresholdSweep(ignore) : null;
  const perImage: ImageScore[] = [];
  const overlays: NonNullable<EvalResult['overlays']> = [];
  const loader = new BatchLoader(cfg, pairs, { train: false, fullMasks: opts.fullResolution, dataset: opts.dataset });
  if (opts.outDir) {
    const out = opts.outDir;
    ['overlays', 'predictions'].forEach((d) => fs.mkdirSync(path.join(out, d), { recursive: true }));
  }
  opts.signal?.throwIfAborted();

  let index = 0; // position in `pairs`: evaluation keeps their order
  for await (const batch of loader.batches(0)) {
    const { n, h, w } = batch;
    // The picture under an overlay: the file itself at the mask's size; undone from the batch
    // where that is exact (per-image normalisation keeps no statistics to undo).
    const displayRgb = async (at: number, i: number) => {
      if (opts.fullResolution) return (await decodeImage(pairs[at].image)).data;
      if (cfg.data.normalize === 'image') return (await decodeImage(pairs[at].image, cfg.data.size)).data;
      return denormalize(batch.images, i, h, w, cfg.data.mean, cfg.data.std);
    };
    const input = tf.tensor4d(batch.images, [n, h, w, 3]);
    const probs = await networkProbs(model, input, opts.tta, opts.scales).finally(() => input.dispose());
    for (let i = 0; i < n; i++, index++) {
      if (opts.signal?.aborted) probs.dispose();
      opts.signal?.throwIfAborted();
      const full = batch.fullMasks?.[i];
      if (opts.fullResolution && !full) throw new Error(`evaluation: no full-resolution mask for ${batch.ids[i]}`);
      const gt = full ? full.data : batch.masks.subarray(i * h * w, (i + 1) * h * w);
      const gw = full ? full.width : w;
      const gh = full ? full.height : h;
      const one = probs.slice([i, 0, 0, 0], [1, -1, -1, -1]);
      const { classes: pred, prob } = await probsToMask(one, gw, gh, { threshold: opts.threshold, postprocess: opts.postprocess ? meta.postprocess : undefined });
      one.dispose();
      if (sweep && prob) sweep.update(prob, gt); // the sweep scores raw probabilities, before any cleaning
      cm.update(pred, gt);
      const s = imageStats ? imageStats.update(pred, gt) : imageScores(pred, gt, numClasses, ignore);
      const score: ImageScore = { id: batch.ids[i], ...s };
      const keep = index < (opts.keepOverlays ?? 0);
      // One overlay (one decode of the picture) serves both the kept list and the written file.
      const overlay = keep || opts.outDir ? overlayRgb(await displayRgb(index, i), gw, gh, pred, gt, { binary, palette: meta.palette, ignoreIndex: ignore }) : null;
      if (keep) overlays.push({ id: batch.ids[i], rgb: overlay!.data, width: overlay!.width, height: overlay!.height });
      if (opts.outDir) {
        const safe = batch.ids[i].replace(/[^\w.-]+/g, '_');
        const colour = await colorizePng(pred, gw, gh, meta.palette, ignore);
        const out = opts.outDir;
        writeFileReplacing(path.join(out, 'overlays', `${safe}.png`), await rgbPng(overlay!));
        writeFileReplacing(path.join(out, 'predictions', `${safe}.png`), colour);
        score.overlay = `overlays/${safe}.png`;
      }
      perImage.push(score);
    }
    probs.dispose();
  }

  const s = cm.summary();
  const metrics: Record<string, number> = {
    mIoU: s.mIoU,
    mDice: s.mDice,
    pixel_acc: s.pixelAcc,
    mean_acc: s.meanAcc,
  };
  if (binary) {
    metrics.iou = s.fgIoU ?? s.iou[1];
    metrics.dice = s.fgDice ?? s.dice[1];
    const b = imageStats!.summary();
    metrics.image_jaccard = b.jaccard;
    metrics.image_dice = b.dice;
    metrics.thresholded_jaccard = b.thresholdedJaccard;
  }
  const perClass = meta.classes.map((name, c) => ({ name, iou: s.iou[c], dice: s.dice[c], acc: s.acc[c] }));
  const res: EvalResult = { metrics, perClass, confusion: cm.rows(), perImage, table: formatMetricsTable(s, meta.classes, imageStats?.summary()), images: perImage.length, overlays };
  if (sweep) {
    res.sweep = sweep.results();
    res.bestThreshold = sweep.best();
  }
  return res;
}

/** The metric names evaluateSplit reports (checkpoint.best_metric picks one before training). */
export function metricNames(binary: boolean): string[] {
  const all = ['mIoU', 'mDice', 'pixel_acc', 'mean_acc'];
  return binary ? [...all, 'iou', 'dice', 'image_jaccard', 'image_dice', 'thresholded_jaccard'] : all;
}

const fixtures = () => import('../loaders/fixtures');

export const selfTest: SelfTest = {
  async 'a perfect model scores 1; per-image scores, overlays and predictions are written'() {
    const { fixtureConfig, redChannelModel, tmpDir, writeIsic } = await fixtures();
    const dir = tmpDir('eval');
    await writeIsic(path.join(dir, 'isic'), 'Validation', ['ISIC_1', 'ISIC_2', 'ISIC_3'], 16, 12);
    const cfg = fixtureConfig(dir, { data: { name: 'isic', root: path.join(dir, 'isic'), size: [12, 16] } });
    const model = redChannelModel();
    const res = await evaluateSplit(model, cfg, await listSplit(cfg, 'val'), { threshold: 0.5, sweep: true, outDir: path.join(dir, 'out') });
    assert.equal(res.images, 3);
    assert.equal(res.metrics.dice, 1);
    assert.equal(res.metrics.mIoU, 1);
    assert.equal(res.metrics.thresholded_jaccard, 1);
    assert.deepEqual(Object.keys(res.metrics).sort(), metricNames(true).sort());
    assert.deepEqual(res.perImage.map((s) => s.dice), [1, 1, 1]);
    assert.ok(res.bestThreshold && res.bestThreshold.dice === 1);
    for (const s of res.perImage) assert.ok(fs.existsSync(path.join(dir, 'out', s.overlay!)));
    assert.equal(fs.readdirSync(path.join(dir, 'out', 'predictions')).length, 3);
    model.dispose();
    fs.rmSync(dir, { recursive: true });
  },
  async '--postprocess scores the cleaned mask: a stray speck is dropped'() {
    const { fixtureConfig, imageForMask, redChannelModel, tmpDir, writeRaw } = await fixtures();
    const dir = tmpDir('evalpp');
    const root = path.join(dir, 'isic');
    const w = 16, h = 12;
    const mask = new Uint8Array(w * h);
    for (let y = 2; y < 9; y++) for (let x = 2; x < 9; x++) mask[y * w + x] = 255;
    const image = imageForMask(mask);
    image[3 * (10 * w + 14)] = 220; // a bright pixel far from the lesion: a false positive
    await writeRaw(path.join(root, 'ISIC2018_Task1-2_Validation_Input', 'ISIC_1.png'), image, w, h, 3);
    await writeRaw(path.join(root, 'ISIC2018_Task1_Validation_GroundTruth', 'ISIC_1_segmentation.png'), mask, w, h, 1);
    const cfg = fixtureConfig(dir, { data: { name: 'isic', root, size: [h, w] } });
    const model = redChannelModel();
    const pairs = await listSplit(cfg, 'val');
    const raw = await evaluateSplit(model, cfg, pairs, { threshold: 0.5 });
    const clean = await evaluateSplit(model, cfg, pairs, { threshold: 0.5, postprocess: true });
    assert.ok(raw.metrics.dice < 1, `raw dice ${raw.metrics.dice}`);
    assert.equal(clean.metrics.dice, 1);
    model.dispose();
    fs.rmSync(dir, { recursive: true });
  },
  async 'full resolution scores each mask at its own size; data.size scoring is the other choice'() {
    const { fixtureConfig, redChannelModel, tmpDir, writeIsic } = await fixtures();
    const sharp = (await import('sharp')).default;
    const dir = tmpDir('evalfull');
    await writeIsic(path.join(dir, 'isic'), 'Validation', ['ISIC_1', 'ISIC_2'], 32, 24);
    const cfg = fixtureConfig(dir, { data: { name: 'isic', root: path.join(dir, 'isic'), size: [12, 16] } });
    const model = redChannelModel();
    const pairs = await listSplit(cfg, 'val');
    const sizeOf = async (f: string) => { const m = await sharp(f).metadata(); return [m.width, m.height]; };
    cfg.training.workers = 2; // masks at their own size must come back from worker threads too
    for (const fullResolution of [true, false]) {
      const out = path.join(dir, `out-${fullResolution}`);
      const res = await evaluateSplit(model, cfg, pairs, { threshold: 0.5, sweep: true, outDir: out, fullResolution, tta: ['hflip'] });
      assert.deepEqual(await sizeOf(path.join(out, res.perImage[0].overlay!)), fullResolution ? [32, 24] : [16, 12]);
      assert.ok(res.metrics.dice > 0.9, `dice ${res.metrics.dice}`);
      assert.ok(res.bestThreshold!.dice >= res.metrics.dice - 1e-9);
    }
    model.dispose();
    fs.rmSync(dir, { recursive: true });
  },
  async 'overlays show the image itself under either normalisation (per-image statistics cannot be undone)'() {
    const { fixtureConfig, redChannelModel, tmpDir, writeIsic } = await fixtures();
    const dir = tmpDir('evalnorm');
    await writeIsic(path.join(dir, 'isic'), 'Validation', ['ISIC_1', 'ISIC_2'], 16, 12);
    const model = redChannelModel();
    const pixels: Uint8Array[][] = [];
    for (const normalize of ['dataset', 'image']) {
      const cfg = fixtureConfig(dir, { data: { name: 'isic', root: path.join(dir, 'isic'), size: [12, 16], normalize } });
      // Threshold 1: nothing predicted under either, so only the picture under the outlines could differ.
      const res = await evaluateSplit(model, cfg, await listSplit(cfg, 'val'), { threshold: 1, keepOverlays: 2 });
      pixels.push(res.overlays!.map((o) => o.rgb));
    }
    for (const [i, a] of pixels[0].entries()) {
      const b = pixels[1][i];
      assert.equal(a.length, b.length);
      assert.ok(a.every((v, k) => Math.abs(v - b[k]) <= 1), `overlay ${i} differs`);
    }
    model.dispose();
    fs.rmSync(dir, { recursive: true });
  },
  async 'a model that predicts nothing gets 0 foreground IoU but high pixel accuracy'() {
    const { fixtureConfig, redChannelModel, tmpDir, writeIsic } = await fixtures();
    const dir = tmpDir('eval0');
    await writeIsic(path.join(dir, 'isic'), 'Validation', ['ISIC_1', 'ISIC_2'], 16, 12);
    const cfg = fixtureConfig(dir, { data: { name: 'isic', root: path.join(dir, 'isic'), size: [12, 16] } });
    const model = redChannelModel();
    const res = await evaluateSplit(model, cfg, await listSplit(cfg, 'val'), { threshold: 1 });
    assert.equal(res.metrics.iou, 0);
    assert.equal(res.metrics.thresholded_jaccard, 0);
    assert.ok(res.metrics.pixel_acc > 0.4 && res.metrics.pixel_acc < 0.6);
    model.dispose();
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
