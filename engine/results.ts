// The results folder of a run: final validation with predictions and overlays,
// metrics.json, and report.html (curves, per-class table, confusion, worst-first gallery).
import fs from 'node:fs';
import { UserError } from '../utils/errors';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Config, isBinary } from '../utils/config';
import { evalOptionsFrom, evaluateSplit, EvalResult, RESULTS_FS } from './evaluator';
import type { Flip } from './inference';
import { HistoryRow } from './history';
import { sortWorstFirst, writeReport } from '../report/page';
import assert from 'node:assert/strict';
import { datasetMeta, listSplit, PairRef } from '../loaders/registry';
import { runIfMain, SelfTest } from '../utils/self_test';
import { runDirs } from './run_dirs';
import { guardFsSync } from '../utils/errors';

export interface ResultsOptions {
  trainSeconds?: number;
  backend?: string;
  quiet?: boolean;
  /** Defaults to the configured training.threshold. */
  threshold?: number;
  split?: string;
  outDir?: string;
  postprocess?: boolean;
  /** Defaults to evaluation.tta. */
  tta?: readonly Flip[];
}

/**
 * evaluate --output: an absent or empty folder, or one holding an earlier evaluation
 * (its metrics.json names a run and split), which is replaced; anything else is refused
 * unless `overwrite`, as export-model does, so a mistyped path replaces no one's files.
 */
export function checkResultsFolder(dir: string, overwrite: boolean): void {
  if (overwrite || !fs.existsSync(dir)) return;
  if (!fs.statSync(dir).isDirectory()) throw new UserError(`--output ${dir}: exists and is a file; expected a folder for the results`);
  const names = fs.readdirSync(dir);
  if (!names.length) return;
  try {
    const m = JSON.parse(fs.readFileSync(path.join(dir, 'metrics.json'), 'utf8'));
    if (m && typeof m.run === 'string' && typeof m.split === 'string') return;
  } catch {
    // no earlier evaluation
  }
  throw new UserError(`--output ${dir}: holds files that are not an earlier evaluation (${names.slice(0, 3).join(', ')}${names.length > 3 ? ', ...' : ''}); choose another folder, or pass --overwrite to write over them`);
}

export async function writeResults(model: tf.LayersModel, cfg: Config, pairs: PairRef[], history: HistoryRow[], opts: ResultsOptions = {}): Promise<EvalResult> {
  const dir = opts.outDir ?? runDirs(cfg).results;
  const binary = isBinary(cfg);
  const meta = datasetMeta(cfg);
  const base = evalOptionsFrom(cfg);
  const threshold = opts.threshold ?? base.threshold;
  const postprocess = opts.postprocess ?? base.postprocess ?? false;
  const tta = opts.tta ?? base.tta ?? [];
  const outDir = cfg.results.save_predictions ? dir : undefined;
  const res = await evaluateSplit(model, cfg, pairs, { ...base, threshold, postprocess, tta, sweep: true, outDir });
  const metricsJson = {
    run: cfg.name,
    split: opts.split ?? cfg.data.val_split,
    images: res.images,
    threshold,
    postprocess,
    tta,
    scales: base.scales,
    full_resolution: cfg.evaluation.full_resolution,
    metrics: res.metrics,
    per_class: res.perClass,
    confusion: { rows: 'ground truth', columns: 'prediction', classes: meta.classes, pixels: res.confusion },
    best_threshold: res.bestThreshold,
    threshold_sweep: res.sweep,
    per_image: res.perImage.map(({ id, dice, iou }) => ({ id, dice, iou })),
  };
  const ordered = sortWorstFirst(res.perImage);
  const shown = cfg.results.gallery_size ? ordered.slice(0, cfg.results.gallery_size) : ordered;
  guardFsSync(RESULTS_FS, () => {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'metrics.json'), JSON.stringify(metricsJson, null, 2));
  });
  guardFsSync(RESULTS_FS, () => writeReport(dir, {
    runName: cfg.name,
    createdAt: new Date().toISOString(),
    config: cfg,
    history,
    classNames: meta.classes,
    binary,
    palette: meta.palette,
    summary: { ...res.metrics, ...(binary ? { threshold } : {}) }, // a threshold means nothing for argmax
    perClass: res.perClass,
    confusion: res.confusion,
    gallery: shown.filter((s) => s.overlay).map((s) => ({ id: s.id, image: s.overlay!, dice: s.dice, iou: s.iou })),
    backend: opts.backend,
    trainSeconds: opts.trainSeconds,
    scoring: [
      `${metricsJson.split} split, ${res.images} images`,
      cfg.evaluation.full_resolution ? 'at label resolution' : `at ${cfg.data.size.join('x')}`,
      tta.length ? `TTA ${tta.join('+')}` : 'no TTA',
      ...(base.scales && (base.scales.length > 1 || base.scales[0] !== 1) ? [`scales ${base.scales.join(', ')}`] : []),
      ...(binary ? [`threshold ${threshold}`] : []),
      ...(postprocess ? ['post-processed'] : []),
    ].join(' · '),
  }));
  if (!opts.quiet) console.log(res.table);
  return res;
}

const fixtures = () => import('../loaders/fixtures');

export const selfTest: SelfTest = {
  async 'writes metrics.json (with per-image scores and the threshold sweep), overlays and report.html'() {
    const { fixtureConfig, redChannelModel, tmpDir, writeIsic } = await fixtures();
    const dir = tmpDir('results');
    await writeIsic(path.join(dir, 'isic'), 'Validation', ['ISIC_1', 'ISIC_2'], 16, 12);
    const cfg = fixtureConfig(dir, { data: { name: 'isic', root: path.join(dir, 'isic'), size: [12, 16] } });
    const model = redChannelModel();
    const out = path.join(dir, 'out');
    cfg.evaluation.tta = ['hflip'];
    await writeResults(model, cfg, await listSplit(cfg, 'val'), [{ epoch: 1, step: 2, split: 'val', dice: 0.5 }], { outDir: out, quiet: true });
    const m = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8'));
    assert.equal(m.metrics.dice, 1);
    assert.deepEqual([m.tta, m.full_resolution, m.postprocess], [['hflip'], true, false]);
    assert.equal(m.per_image.length, 2);
    assert.equal(m.threshold_sweep.length, 19);
    const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
    assert.match(html, /overlays\/ISIC_1\.png/);
    assert.match(html, /scored: val split, 2 images · at label resolution · TTA hflip · threshold 0\.5/);
    model.dispose();
    fs.rmSync(dir, { recursive: true });
  },
  async "the report legend shows the dataset's own colours (CamVid, not VOC)"() {
    const { fixtureConfig, tmpDir, writeCamvid } = await fixtures();
    const dir = tmpDir('results-camvid');
    const root = path.join(dir, 'camvid');
    await writeCamvid(root, 'val', ['f1'], [0, 3, 8], 12, 9);
    const cfg = fixtureConfig(dir, { data: { name: 'camvid', root, num_classes: 11, size: [9, 12] } });
    const constant = tf.sequential({ layers: [tf.layers.conv2d({ inputShape: [null, null, 3], filters: 11, kernelSize: 1, kernelInitializer: 'zeros' })] });
    const out = path.join(dir, 'out');
    await writeResults(constant, cfg, await listSplit(cfg, 'val'), [], { outDir: out, quiet: true });
    // The constant model predicts class 0 (Sky) everywhere: each class's pixels all sit in column 0.
    const m = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8'));
    const cm: number[][] = m.confusion.pixels;
    assert.deepEqual([m.confusion.rows, m.confusion.columns, m.confusion.classes.length, cm.length], ['ground truth', 'prediction', 11, 11]);
    assert.ok(cm.every((row) => row.length === 11 && row.slice(1).every((v) => v === 0)), JSON.stringify(cm));
    assert.equal(cm.reduce((a, row) => a + row[0], 0), 12 * 9, 'every pixel counted once');
    assert.deepEqual([0, 3, 8].map((c) => cm[c][0] > 0), [true, true, true], 'the three classes of the mask');
    const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
    assert.match(html, /<tr><th>Road<\/th><td style="--v:1\.000">100\.0<\/td><td style="--v:0\.000"><\/td>/, 'Road row: all predicted as Sky');
    const legend = html.slice(html.indexOf('class="legend"'));
    // Sky, Building, Road in the SegNet colours, named in the legend.
    for (const [name, rgb] of [['Sky', '128,128,128'], ['Building', '128,0,0'], ['Road', '128,64,128']])
      assert.match(legend, new RegExp(`background:rgb\\(${rgb}\\)"></i>${name}<`), name);
    constant.dispose();
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
