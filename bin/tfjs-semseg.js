#!/usr/bin/env node
// `npx tfjs-semseg <command> [options]`: the commands under the package's own name,
// which no other package's bin can shadow (`train`, `predict`, ... are common names).
const path = require('node:path');

const COMMANDS = { train: 'train', evaluate: 'evaluate', predict: 'predict', 'export-model': 'export', 'web-train': 'web_train' };
const USAGE = `Usage: tfjs-semseg <command> [options]

Commands:
  train          train a model from a YAML config
  evaluate       metrics of a checkpoint on a split
  predict        masks of images
  export-model   a checkpoint as a TF.js model (optionally with a web page)
  web-train      a static web page that trains a model in the browser

'tfjs-semseg <command> --help' lists a command's options.`;

const [cmd, ...rest] = process.argv.slice(2);
if (cmd === '-h' || cmd === '--help') {
  console.log(USAGE);
} else if (cmd === '-v' || cmd === '--version') {
  console.log(require('../package.json').version);
} else if (!cmd || !Object.hasOwn(COMMANDS, cmd)) {
  // Exit 2: a usage error, as the commands' own.
  console.error(cmd ? `error: unknown command '${cmd}' (commands: ${Object.keys(COMMANDS).join(', ')}; see --help)` : USAGE);
  process.exitCode = 2;
} else {
  // The command reads its options from process.argv as if started on its own.
  process.argv = [process.argv[0], path.join(__dirname, '..', 'dist', `${COMMANDS[cmd]}.js`), ...rest];
  require(process.argv[1]);
}
