// The results folder of a run: final validation with predictions and overlays,
// metrics.json, and report.html (curves, per-class table, worst-first gallery).
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { PairRef } from '../loaders';
import { Config } from './config';
import { evaluateSplit, EvalResult } from './evaluator';
import { HistoryRow } from './history';
import { writeReport } from './report';
import { getDatasetInfo } from './dataset_utils';

export interface ResultsOptions {
  trainSeconds?: number;
  backend?: string;
  quiet?: boolean;
  /** Defaults to the configured training.threshold. */
  threshold?: number;
  split?: string;
  outDir?: string;
}

export async function writeResults(model: tf.LayersModel, cfg: Config, pairs: PairRef[], history: HistoryRow[], opts: ResultsOptions = {}): Promise<EvalResult> {
  const dir = opts.outDir ?? path.join(cfg.results.root, cfg.name);
  const threshold = opts.threshold ?? cfg.training.threshold;
  const res = await evaluateSplit(model, cfg, pairs, { threshold, sweep: true, outDir: cfg.results.save_predictions ? dir : undefined });
  const metricsJson = {
    run: cfg.name,
    split: opts.split ?? cfg.data.val_split,
    images: res.images,
    threshold,
    metrics: res.metrics,
    per_class: res.perClass,
    best_threshold: res.bestThreshold,
    threshold_sweep: res.sweep,
    per_image: res.perImage.map(({ id, dice, iou }) => ({ id, dice, iou })),
  };
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'metrics.json'), JSON.stringify(metricsJson, null, 2));
  const ordered = [...res.perImage].sort((a, b) => a.dice - b.dice || a.iou - b.iou);
  const shown = cfg.results.gallery_size ? ordered.slice(0, cfg.results.gallery_size) : ordered;
  writeReport(dir, {
    runName: cfg.name,
    createdAt: new Date().toISOString(),
    config: cfg,
    history,
    classNames: getDatasetInfo(cfg.data.name, cfg.data.num_classes).classNames,
    summary: { ...res.metrics, threshold },
    perClass: res.perClass,
    gallery: shown.filter((s) => s.overlay).map((s) => ({ id: s.id, image: s.overlay!, dice: s.dice, iou: s.iou })),
    backend: opts.backend,
    trainSeconds: opts.trainSeconds,
  });
  if (!opts.quiet) console.log(res.table);
  return res;
}
