// Options and start-up shared by the train, evaluate and predict commands.
import fs from 'node:fs';
import path from 'node:path';
import type { Argv } from 'yargs';
import { Config, dumpConfig, loadConfig } from './config';
import { BackendInfo, initBackend } from './backend';
import { UserError } from './errors';

export interface CommonArgs {
  config: string;
  set: string[];
  backend?: string;
}

export function commonOptions<T>(y: Argv<T>) {
  return y
    .option('config', { alias: 'c', type: 'string', demandOption: true, describe: 'YAML config file, e.g. configs/demo.yaml' })
    .option('set', { type: 'string', array: true, default: [] as string[], describe: 'override a config key: --set training.epochs=5 (repeatable)' })
    .option('backend', { type: 'string', choices: ['auto', 'tensorflow', 'wasm', 'cpu'], describe: 'compute backend (overrides the config)' })
    .strict()
    .fail((msg, err) => {
      throw new UserError(err ? err.message : `${msg} (see --help)`);
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

export function writeResolvedConfig(dir: string, cfg: Config): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.yaml'), dumpConfig(cfg));
}
