#!/usr/bin/env node
// `npx predict --config C --checkpoint DIR --input FILE_OR_DIR --output DIR`:
// masks at each input's original size, post-processed for the dataset, plus overlays.
import fs from 'node:fs';
import path from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { commonOptions, setup } from './utils/cli';
import { guardFsSync, runCli, UserError } from './utils/errors';
import { isBinary } from './utils/config';
import { defaultCheckpoint, loadModel, useTrainedSize } from './engine/model_io';
import { listImages, planOutputs, predictFile } from './engine/predictor';
import { preflightInference } from './engine/preflight';

async function main(): Promise<void> {
  const args = await commonOptions(yargs(hideBin(process.argv)))
    .scriptName('predict')
    .usage('$0 --config FILE --checkpoint DIR --input FILE_OR_DIR --output DIR\n\nWrites <stem>.png masks at each input\'s original size (ISIC: 0/255; Cityscapes: official label ids plus <stem>_color.png; others: class ids plus <stem>_color.png) and <stem>_overlay.png.')
    .option('checkpoint', { type: 'string', describe: 'checkpoint folder (default: <ckpt_root>/<name>/best, else last)' })
    .option('input', { alias: 'i', type: 'string', demandOption: true, describe: 'an image file or a folder of images' })
    .option('output', { alias: 'o', type: 'string', demandOption: true, describe: 'output folder' })
    .option('threshold', { type: 'number', describe: 'foreground probability threshold for binary models (default: training.threshold)' })
    .option('overwrite', { type: 'boolean', default: false, describe: 'replace outputs of an earlier prediction in --output (otherwise refused)' })
    .option('postprocess', { type: 'boolean', describe: 'dataset post-processing (ISIC: keep the largest lesion, fill holes; default: evaluation.postprocess); --no-postprocess to skip' })
    .help()
    .parse();
  const { cfg, backend } = await setup(args, { printConfig: false });
  const checkpoint = args.checkpoint ?? defaultCheckpoint(cfg);
  useTrainedSize(cfg, checkpoint);
  // One image at a time, with its flipped copies for test-time augmentation.
  preflightInference(cfg, { backend: backend.name, batch: 1 + cfg.evaluation.tta.length, what: 'prediction', threshold: args.threshold });
  const files = listImages(args.input);
  if (!files.length) throw new UserError(`--input ${args.input}: no images found (.jpg, .png, ...)`);
  const plan = planOutputs(args.input, files, args.output, isBinary(cfg), args.overwrite); // refuses before anything is written
  const model = await loadModel(cfg, checkpoint);
  guardFsSync({ what: 'predictions', kept: 'nothing was written', setting: '--output' }, () => fs.mkdirSync(args.output, { recursive: true }));
  console.log(`predicting ${files.length} image(s) with ${checkpoint}`);
  const threshold = args.threshold ?? cfg.training.threshold;
  let done = 0;
  for (const { file, stem } of plan) {
    const kept = `the ${done} prediction(s) before it are complete and no input was changed`;
    const written = await predictFile(model, cfg, file, args.output, { threshold, postprocess: args.postprocess ?? cfg.evaluation.postprocess, tta: cfg.evaluation.tta, scales: cfg.evaluation.scales }, stem, kept);
    done++;
    console.log(`${file} -> ${written.map((w) => path.basename(w)).join(', ')}`);
  }
  console.log(`wrote ${done} prediction(s) to ${args.output}`);
}

void runCli(main);
