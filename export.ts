#!/usr/bin/env node
// `npx export-model --config C [--checkpoint DIR] [--output DIR] [--web] [--quantize uint8|float16] [--format tfjs|onnx]`:
// a checkpoint as a standard TF.js LayersModel (model.json + shards), optionally with
// the static page that segments images in a browser, or as one ONNX file.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { commandCall, commonOptions, webServeHint } from './utils/cli';
import { runCli } from './utils/errors';
import { exportModel } from './api';

async function main(): Promise<void> {
  const args = await commonOptions(yargs(hideBin(process.argv)))
    .scriptName('export-model')
    .usage('$0 --config FILE [--checkpoint DIR] [--output DIR] [--web] [--quantize uint8|float16] [--format tfjs|onnx]\n\nWrites model.json + weight shards that tf.loadLayersModel loads, with the preprocessing and class facts in its userDefinedMetadata; --web adds a static page that segments images in the browser. --format onnx writes model.onnx (opset 17) for ONNX Runtime instead.')
    .option('checkpoint', { type: 'string', describe: 'checkpoint folder (default: <ckpt_root>/<name>/best, else last)' })
    .option('output', { alias: 'o', type: 'string', describe: 'output folder; an earlier export there is replaced, anything else is refused (default: <results.root>/<name>/export)' })
    .option('web', { type: 'boolean', default: false, describe: 'also write the static web app (index.html, app.js, tfjs bundles)' })
    .option('quantize', { type: 'string', describe: 'store weights as uint8 (affine, 4x smaller) or float16 (2x smaller)' })
    .option('format', { type: 'string', default: 'tfjs', describe: 'tfjs (model.json + shards) or onnx (model.onnx, opset 17, NHWC input; float32 only)' })
    .help()
    .alias('help', 'h')
    .parse();
  const res = await exportModel(args.config, {
    ...commandCall(args), checkpoint: args.checkpoint, output: args.output, web: args.web,
    quantize: args.quantize as 'uint8' | 'float16' | undefined, format: args.format as 'tfjs' | 'onnx',
  });
  const kb = (b: number) => `${(b / 1024).toFixed(1)} KiB`;
  const q = args.quantize && args.quantize !== 'none' ? ` (${args.quantize} weights)` : '';
  console.log(`exported ${res.checkpoint} to ${res.output}: model ${kb(res.modelBytes)}${q}, ${res.files.length} files`);
  if (args.web) console.log(webServeHint(res.output));
}

void runCli(main);
