// Options and start-up shared by the train, evaluate and predict commands.
import type { Argv } from 'yargs';
import { Config, dumpConfig, loadConfig } from './config';
import { BackendInfo, initBackend } from '../backends';
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

/** Loads and validates the config, applies --backend, starts the backend, prints both. */
export async function setup(args: CommonArgs, opts: { printConfig?: boolean } = {}): Promise<{ cfg: Config; backend: BackendInfo }> {
  const sets = [...(args.set ?? [])];
  if (args.backend) sets.push(`backend=${args.backend}`);
  const cfg = loadConfig(args.config, sets);
  if (opts.printConfig ?? true) {
    console.log(`config ${args.config} (resolved):`);
    console.log(indent(dumpConfig(cfg)));
  }
  const backend = await initBackend(cfg.backend, cfg.gpus);
  console.log(`backend: ${backend.description}`);
  return { cfg, backend };
}

function indent(s: string): string {
  return s
    .trimEnd()
    .split('\n')
    .map((l) => '  ' + l)
    .join('\n');
}

export const selfTest: SelfTest = {
  async 'a misspelled option is one line, not a stack trace'() {
    const yargs = (await import('yargs')).default;
    await assert.rejects(
      async () => commonOptions(yargs(['--config', 'x.yaml', '--epohcs', '3'])).parse(),
      (e: Error) => e instanceof UserError && /Unknown argument: epohcs/.test(e.message),
    );
  },
  async '--backend is applied over the config'() {
    const fs = await import('node:fs');
    const os = await import('node:os');
    const path = await import('node:path');
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'cli-')), 'c.yaml');
    fs.writeFileSync(file, 'backend: wasm\n');
    const { cfg, backend } = await setup({ config: file, set: [], backend: 'cpu' }, { printConfig: false });
    assert.equal(cfg.backend, 'cpu');
    assert.equal(backend.name, 'cpu');
  },
};

runIfMain(module, selfTest);
