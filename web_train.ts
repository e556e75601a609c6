#!/usr/bin/env node
// `npx tfjs-semseg web-train --output DIR`: writes the static page that trains a model in a
// browser tab (deploy/web_train/): pick image and mask folders, paste a config, train on
// webgpu, webgl or wasm, download the export. Nothing is uploaded anywhere.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { webServeHint } from './utils/cli';
import { runCli, UsageError } from './utils/errors';
import { writeWebTrain } from './deploy/web_train/files';

async function main(): Promise<void> {
  const args = await yargs(hideBin(process.argv))
    .scriptName('tfjs-semseg web-train')
    .usage('$0 --output DIR\n\nWrites a static web page that trains a segmentation model in the browser with this package\'s own training code (the same configs, models, losses, optimizers and augmentations), checkpoints to the browser\'s storage and downloads the model as `export-model` writes it.')
    .option('output', { alias: 'o', type: 'string', demandOption: true, describe: 'folder for the page (new, empty, or an earlier page)' })
    .strict()
    .help()
    .alias('help', 'h')
    .fail((msg, err) => {
      throw new UsageError((err ? err.message : `${msg} (see --help)`).replace(/\s*\n\s*/g, ' '));
    })
    .parse();
  const files = writeWebTrain(args.output);
  const kb = files.reduce((s, f) => s + f.bytes, 0) / 1024;
  console.log(`wrote the training page to ${args.output}: ${files.length} files, ${kb.toFixed(0)} KiB`);
  console.log(webServeHint(args.output).replace(/^web app:/, 'training page:'));
}

void runCli(main);
