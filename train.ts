#!/usr/bin/env node
// `npx train --config configs/demo.yaml`: trains a model from a YAML config (api/train.ts).
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { BackendName } from './backends';
import { commonOptions } from './utils/cli';
import { runCli } from './utils/errors';
import { train } from './api';

async function main(): Promise<void> {
  const args = await commonOptions(yargs(hideBin(process.argv)))
    .scriptName('train')
    .usage('$0 --config FILE [options]\n\nTrains a segmentation model; checkpoints go to <ckpt_root>/<name>/{last,best}, results to <results.root>/<name>/.')
    .option('resume', { type: 'boolean', default: false, describe: 'continue the run from <ckpt_root>/<name>/last' })
    .option('overwrite', { type: 'boolean', default: false, describe: 'start afresh even where <ckpt_root>/<name> holds an earlier run (its last/ and best/ are replaced as the new run saves)' })
    .option('weights', { type: 'string', describe: 'start from the weights of this checkpoint folder or exported model.json (overrides checkpoint.weights)' })
    .example('$0 --config configs/demo.yaml', 'train the demo model on generated data')
    .example('$0 --config configs/demo.yaml --resume', 'continue an interrupted run')
    .example('$0 --config configs/isic.yaml --set training.epochs=5 --backend wasm', 'override keys')
    .help()
    .parse();
  const started = Date.now();
  const out = await train(args.config, { set: args.set, backend: args.backend as BackendName | undefined, resume: args.resume, overwrite: args.overwrite, weights: args.weights });
  if (!out.interrupted) console.log(`done in ${((Date.now() - started) / 1000).toFixed(0)} s`);
}

void runCli(main);
