// Options shared by the commands (train, evaluate, predict, export-model); the start-up
// they share is api/options.ts's.
import type { Argv } from 'yargs';
import { UserError } from './errors';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from './self_test';

export interface CommonArgs {
  config: string;
  set: string[];
  backend?: string;
}

export function commonOptions<T>(y: Argv<T>) {
  return y
    .option('config', { alias: 'c', type: 'string', demandOption: true, describe: 'YAML config file, e.g. configs/demo.yaml' })
    .option('set', { type: 'string', array: true, default: [] as string[], describe: 'override a config key: --set training.epochs=5 (repeatable)' })
    .option('backend', { type: 'string', choices: ['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu'], describe: 'compute backend (overrides the config)' })
    .strict()
    .wrap(Math.min(110, y.terminalWidth()))
    .fail((msg, err) => {
      throw new UserError((err ? err.message : `${msg} (see --help)`).replace(/\s*\n\s*/g, ' ')); // yargs messages span lines
    });
}

/** `s` as one word for a POSIX shell, so that a printed command can be pasted as it is. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The line `export --web` ends with: how to serve the folder. */
export function webServeHint(output: string): string {
  return `web app: serve ${output} with any static server, e.g. python3 -m http.server -d ${shellQuote(output)} 8080, and open http://127.0.0.1:8080/`;
}

export const selfTest: SelfTest = {
  'a printed folder is quoted for the shell'() {
    assert.equal(shellQuote("a b'c"), `'a b'\\''c'`);
    assert.match(webServeHint('out dir'), /-d 'out dir' 8080/);
  },
  async 'a misspelled option is one line, not a stack trace'() {
    const yargs = (await import('yargs')).default;
    await assert.rejects(
      async () => commonOptions(yargs(['--config', 'x.yaml', '--epohcs', '3'])).parse(),
      (e: Error) => e instanceof UserError && /Unknown argument: epohcs/.test(e.message),
    );
  },
};

runIfMain(module, selfTest);
