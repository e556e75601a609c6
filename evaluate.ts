#!/usr/bin/env node
// `npx evaluate --config C [--checkpoint DIR|model.json|model.onnx] [--split val|test]`: metrics of a checkpoint on a split (api/evaluate.ts).
import path from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { commandCall, commonOptions } from './utils/cli';
import { runCli } from './utils/errors';
import { evaluate } from './api';

async function main(): Promise<void> {
  const args = await commonOptions(yargs(hideBin(process.argv)))
    .scriptName('evaluate')
    .usage('$0 --config FILE [--checkpoint DIR] [--split val|test]\n\nPrints the metrics table of a checkpoint on a split and writes metrics.json, overlays and report.html.')
    .option('checkpoint', { type: 'string', describe: 'checkpoint folder, exported model.json, or exported model.onnx (runs on ONNX Runtime; needs onnxruntime-node) (default: <ckpt_root>/<name>/best, else last)' })
    .option('split', { type: 'string', describe: 'split to evaluate (default: data.val_split)' })
    .option('threshold', { type: 'number', describe: 'foreground probability threshold for binary models (default: training.threshold)' })
    .option('sweep-threshold', { type: 'boolean', default: false, describe: 'report Dice/IoU over thresholds 0.05..0.95 and the best one' })
    .option('postprocess', { type: 'boolean', describe: "score after the dataset's post-processing (ISIC: keep the largest lesion, fill holes), as predict writes it (default: evaluation.postprocess)" })
    .option('output', { type: 'string', describe: 'folder for metrics.json and the report (default: <results.root>/<name>/eval-<split>); an earlier evaluation there is replaced, other files are refused' })
    .option('overwrite', { type: 'boolean', default: false, describe: 'write into --output even where it holds other files' })
    .help()
    .alias('help', 'h')
    .parse();
  const res = await evaluate(args.config, {
    ...commandCall(args), checkpoint: args.checkpoint, split: args.split,
    threshold: args.threshold, postprocess: args.postprocess, output: args.output, overwrite: args.overwrite,
  });
  if (args['sweep-threshold']) {
    if (!res.sweep) {
      if (!args.quiet) console.error('warning: --sweep-threshold: only for binary problems; no sweep'); // a diagnostic, not a result
    } else {
      console.log('threshold   dice     iou');
      for (const r of res.sweep) console.log(`${r.threshold.toFixed(2).padStart(9)}  ${r.dice.toFixed(4)}  ${r.iou.toFixed(4)}`);
      const b = res.bestThreshold!;
      console.log(`best threshold ${b.threshold.toFixed(2)}: dice ${b.dice.toFixed(4)}, iou ${b.iou.toFixed(4)}`);
    }
  }
  console.log(`metrics: ${path.join(res.outDir, 'metrics.json')}`);
  console.log(`report: ${res.report}`);
}

void runCli(main);
