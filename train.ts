#!/usr/bin/env node
// `npx train --config configs/demo.yaml`: trains a model from a YAML config (api/train.ts).
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { commandCall, commonOptions } from './utils/cli';
import { runCli, signalExitCode } from './utils/errors';
import { train } from './api';

async function main(): Promise<number> {
  const args = await commonOptions(yargs(hideBin(process.argv)))
    .scriptName('train')
    .usage('$0 --config FILE [options]\n\nTrains a segmentation model; checkpoints go to <ckpt_root>/<name>/{last,best}, results to <results.root>/<name>/.')
    .option('resume', { type: 'boolean', default: false, describe: 'continue the run from <ckpt_root>/<name>/last' })
    .option('overwrite', { type: 'boolean', default: false, describe: 'start afresh even where <ckpt_root>/<name> holds an earlier run (its last/ and best/ are replaced as the new run saves)' })
    .option('weights', { type: 'string', describe: 'start from the weights of this checkpoint folder or exported model.json (overrides checkpoint.weights)' })
    .option('print-config', { type: 'boolean', default: false, describe: 'print the resolved config first (it is always written to <results.root>/<name>/config.yaml)' })
    .example('$0 --config configs/demo.yaml', 'train the demo model on generated data')
    .example('$0 --config configs/demo.yaml --resume', 'continue an interrupted run')
    .example('$0 --config configs/isic.yaml --set training.epochs=5 --backend wasm', 'override keys')
    .help()
    .alias('help', 'h')
    .parse();
  const started = Date.now();
  const out = await train(args.config, { ...commandCall(args), resume: args.resume, overwrite: args.overwrite, weights: args.weights, printConfig: args['print-config'] });
  // Stopped by a signal, after saving: the shell's code for it, so `train && export-model` stops too.
  if (out.interrupted) return out.stoppedBy?.startsWith('SIG') ? signalExitCode(out.stoppedBy) : 130;
  if (args.quiet) console.log(`checkpoints: ${out.checkpoints.last} (latest), ${out.checkpoints.best} (best)`); // the results the quiet trainer did not print
  if (!args.quiet) console.error(`done in ${((Date.now() - started) / 1000).toFixed(0)} s`); // a diagnostic: stderr
  return 0;
}

void runCli(main);
