// evaluate(): what `npx evaluate` does, returning the metrics instead of printing them.
import path from 'node:path';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { listSplit } from '../loaders/registry';
import { History } from '../storage/history';
import { defaultCheckpoint, loadNetwork, useCheckpointDefinition } from '../engine/model_io';
import { isRuntime } from '../engine/inference';
import { evalDir, runDirs } from '../engine/run_dirs';
import { checkResultsFolder, writeResults } from '../engine/results';
import { preflightInference } from '../engine/preflight';
import { resolveRun } from '../config/resolve';
import { runIfMain, SelfTest } from '../utils/self_test';
import { checkArgs, CommonOptions, ConfigSource, libraryCall, logger, OPTION_KINDS as K, prepare, thresholdOpt } from './options';

export interface EvaluateOptions extends CommonOptions {
  /** Checkpoint folder, exported model.json, or exported model.onnx (run on ONNX Runtime: needs the optional onnxruntime-node) (default: <ckpt_root>/<name>/best, else last). */
  checkpoint?: string;
  /** Split to score (default: data.val_split). */
  split?: string;
  /** Foreground threshold of binary models (default: training.threshold). */
  threshold?: number;
  /** The dataset's post-processing before scoring (default: evaluation.postprocess). */
  postprocess?: boolean;
  /** Folder for metrics.json and the report (default: <results.root>/<name>/eval-<split>). */
  output?: string;
  /** Write into `output` even where it holds other files. */
  overwrite?: boolean;
}

export interface EvaluateResult {
  checkpoint: string;
  split: string;
  images: number;
  /** mIoU, mDice, pixel_acc, ...; binary problems also dice, iou, thresholded_jaccard, ... */
  metrics: Record<string, number>;
  perClass: { name: string; iou: number; dice: number; acc: number }[];
  /** Binary problems: Dice and IoU over thresholds 0.05..0.95, and the best one. */
  sweep: { threshold: number; dice: number; iou: number }[] | null;
  bestThreshold: { threshold: number; dice: number; iou: number } | null;
  outDir: string;
  report: string;
  /** The warning lines (also given to onWarning as they happen). */
  warnings: string[];
}

export async function evaluate(config: ConfigSource, o: EvaluateOptions = {}): Promise<EvaluateResult> {
  return libraryCall(o, (warnings) => run(config, o, warnings));
}

async function run(config: ConfigSource, o: EvaluateOptions, warnings: string[]): Promise<EvaluateResult> {
  checkArgs('evaluate', config, o, { checkpoint: K.path, split: [z.string(), 'a split name such as val'], threshold: thresholdOpt, postprocess: K.bool, output: K.path, overwrite: K.bool });
  const log = logger(o);
  const { cfg, backend } = await prepare(config, o);
  const checkpoint = o.checkpoint ?? defaultCheckpoint(cfg);
  useCheckpointDefinition(cfg, checkpoint); // the network the weights were trained as
  const parts = resolveRun(cfg); // after the checkpoint's definition is adopted
  preflightInference(parts, { backend: backend.name, batch: cfg.training.batch_size, what: 'evaluation', threshold: o.threshold });
  const split = o.split ?? cfg.data.val_split;
  const outDir = o.output ?? evalDir(cfg, split);
  if (o.output) checkResultsFolder(outDir, o.overwrite ?? false);
  const model = await loadNetwork(parts, checkpoint);
  try {
    const pairs = await listSplit(cfg, split, parts.dataset);
    // The network's runtime where it is not the TF.js backend (which still prepares the inputs and decides the masks).
    const runtime = isRuntime(model) ? model.description : null;
    log(`evaluating ${checkpoint}${runtime ? ` (${runtime})` : ''} on ${pairs.length} ${split} pairs of ${cfg.data.root}`);
    const history = new History(runDirs(cfg).history).read();
    const res = await writeResults(model, cfg, pairs, history, { threshold: o.threshold, split, outDir, backend: runtime ? `${runtime}; inputs and decisions on ${backend.description}` : backend.description, postprocess: o.postprocess, quiet: o.quiet, dataset: parts.dataset });
    return {
      checkpoint, split, images: res.images, metrics: res.metrics, perClass: res.perClass,
      sweep: res.sweep ?? null, bestThreshold: res.bestThreshold ?? null, outDir, report: path.join(outDir, 'report.html'), warnings,
    };
  } finally {
    model.dispose();
  }
}

export const selfTest: SelfTest = {
  async 'without a checkpoint it says to train first'() {
    const os = await import('node:os');
    const fs = await import('node:fs');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'api-eval-'));
    await assert.rejects(evaluate({ backend: 'cpu', checkpoint: { ckpt_root: dir } }, { quiet: true }), /train first/);
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
