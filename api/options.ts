// What every library call takes: a config (a YAML path, or an object as the YAML would
// hold it), `--set`-style overrides and a backend, as the commands do; and the start-up
// they share (validate, start the backend once).
import path from 'node:path';
import assert from 'node:assert/strict';
import { BackendInfo, BackendName, initBackend } from '../backends';
import { applySet, Config, dumpConfig, loadConfig, parseConfig } from '../utils/config';
import { composeConfig } from '../utils/config_files';
import { runIfMain, SelfTest } from '../utils/self_test';

/** A config file's path, or the config as an object (`extends:` resolved from the working folder). */
export type ConfigSource = string | Record<string, unknown>;

export interface CommonOptions {
  /** Overrides as `key.path=value`, like the commands' --set. */
  set?: string[];
  /** Overrides the config's backend. */
  backend?: BackendName;
  /** Print nothing (progress bars, tables, start-up lines); errors still throw. */
  quiet?: boolean;
}

/** The validated config; throws a UserError (one line) naming the key on a bad one. */
export function resolveConfig(source: ConfigSource, o: CommonOptions = {}): Config {
  const sets = [...(o.set ?? []), ...(o.backend ? [`backend=${o.backend}`] : [])];
  if (typeof source === 'string') return loadConfig(source, sets);
  const raw = composeConfig(structuredClone(source), process.cwd(), 'config object');
  for (const s of sets) applySet(raw, s);
  return parseConfig(raw, 'config object');
}

/**
 * Validates the config and starts its backend (once per process and backend); unless
 * quiet, prints the backend line (and the resolved config when `printConfig`).
 */
export async function prepare(source: ConfigSource, o: CommonOptions = {}, printConfig = false): Promise<{ cfg: Config; backend: BackendInfo }> {
  const cfg = resolveConfig(source, o);
  const log = logger(o);
  if (printConfig) log(`config ${typeof source === 'string' ? source : '(object)'} (resolved):\n${indent(dumpConfig(cfg))}`);
  const backend = await initBackend(cfg.backend, cfg.gpus);
  log(`backend: ${backend.description}`);
  return { cfg, backend };
}

function indent(s: string): string {
  return s
    .trimEnd()
    .split('\n')
    .map((l) => '  ' + l)
    .join('\n');
}

/** `line` to the console unless quiet. */
export const logger = (o: CommonOptions) => (line: string) => {
  if (!o.quiet) console.log(line);
};

export const selfTest: SelfTest = {
  'an object config is validated, extends resolve from the working folder, overrides apply'() {
    const cfg = resolveConfig({ extends: path.relative(process.cwd(), path.join(__dirname, '..', ...(path.extname(__filename) === '.js' ? ['..'] : []), 'configs', 'demo.yaml')), name: 'lib' }, { set: ['training.epochs=2'], backend: 'cpu' });
    assert.deepEqual([cfg.name, cfg.model.name, cfg.training.epochs, cfg.backend], ['lib', 'unet', 2, 'cpu']);
    assert.throws(() => resolveConfig({ training: { epohcs: 1 } }), /config object: unknown key 'training\.epohcs'/);
  },
};

runIfMain(module, selfTest);
