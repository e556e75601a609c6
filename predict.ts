#!/usr/bin/env node
// `npx predict --config C --checkpoint DIR --input FILE_OR_DIR --output DIR`:
// masks at each input's original size, post-processed for the dataset, plus overlays (api/predict.ts).
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { commandCall, commonOptions } from './utils/cli';
import { runCli } from './utils/errors';
import { predict } from './api';

async function main(): Promise<void> {
  const args = await commonOptions(yargs(hideBin(process.argv)))
    .scriptName('predict')
    .usage('$0 --config FILE [--checkpoint DIR] --input FILE_OR_DIR --output DIR\n\nWrites <stem>.png masks at each input\'s original size (ISIC: 0/255; Cityscapes: official label ids plus <stem>_color.png; others: class ids plus <stem>_color.png) and <stem>_overlay.png.')
    .option('checkpoint', { type: 'string', describe: 'checkpoint folder, exported model.json, or exported model.onnx (runs on ONNX Runtime; needs onnxruntime-node) (default: <ckpt_root>/<name>/best, else last)' })
    .option('input', { alias: 'i', type: 'string', demandOption: true, describe: 'an image file or a folder of images' })
    .option('output', { alias: 'o', type: 'string', demandOption: true, describe: 'output folder' })
    .option('threshold', { type: 'number', describe: 'foreground probability threshold for binary models (default: training.threshold)' })
    .option('overwrite', { type: 'boolean', default: false, describe: 'replace outputs of an earlier prediction in --output (otherwise refused)' })
    .option('postprocess', { type: 'boolean', describe: 'dataset post-processing (ISIC: keep the largest lesion, fill holes; default: evaluation.postprocess); --no-postprocess to skip' })
    .help()
    .alias('help', 'h')
    .parse();
  const out = await predict(args.config, {
    ...commandCall(args), checkpoint: args.checkpoint, input: args.input, output: args.output,
    threshold: args.threshold, overwrite: args.overwrite, postprocess: args.postprocess,
  });
  console.log(`wrote ${out.length} prediction(s) to ${args.output}`);
}

void runCli(main);
