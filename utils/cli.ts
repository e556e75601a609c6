// Options shared by the commands (train, evaluate, predict, export-model); the start-up
// they share is api/options.ts's.
import type { Argv } from 'yargs';
import { UsageError } from './errors';
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
    .option('quiet', { alias: 'q', type: 'boolean', default: false, describe: 'print only results and errors (no progress, start-up lines or warnings)' })
    .strict()
    .wrap(Math.min(110, y.terminalWidth()))
    .fail((msg, err) => {
      throw new UsageError((err ? err.message : `${msg} (see --help)`).replace(/\s*\n\s*/g, ' ')); // yargs messages span lines
    });
}

/** The options every command passes to its library call: the commands own the signals. */
export function commandCall(args: { set: string[]; backend?: string; quiet: boolean }) {
  // The backend is one of --backend's choices (yargs checked it); the type is backends/index.ts's BackendName.
  return { set: args.set, backend: args.backend as 'auto' | 'tensorflow' | 'webgpu' | 'wasm' | 'cpu' | undefined, quiet: args.quiet, handleSignals: true };
}

/** `s` as one word for a POSIX shell, so that a printed command can be pasted as it is. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The line `export --web` ends with: how to serve the folder. */
export function webServeHint(output: string): string {
  // Bound to 127.0.0.1: the hint should not publish the model to the whole network.
  return `web app: serve ${output} with any static server, e.g. python3 -m http.server -b 127.0.0.1 -d ${shellQuote(output)} 8080, and open http://127.0.0.1:8080/`;
}

export const selfTest: SelfTest = {
  'a printed folder is quoted for the shell'() {
    assert.equal(shellQuote("a b'c"), `'a b'\\''c'`);
    assert.match(webServeHint('out dir'), /-b 127\.0\.0\.1 -d 'out dir' 8080/);
  },
  async 'a misspelled option is one line, not a stack trace'() {
    const yargs = (await import('yargs')).default;
    await assert.rejects(
      async () => commonOptions(yargs(['--config', 'x.yaml', '--epohcs', '3'])).parse(),
      (e: Error) => e instanceof UsageError && /Unknown argument: epohcs/.test(e.message),
    );
  },
};

runIfMain(module, selfTest);
