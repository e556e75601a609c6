// What every library call takes: a config (a YAML path, or an object as the YAML would
// hold it), `--set`-style overrides and a backend, as the commands do; and the start-up
// they share (validate, start the backend once).
import path from 'node:path';
import assert from 'node:assert/strict';
import { BackendInfo, BackendName, initBackend } from '../backends';
import { z } from 'zod';
import { applySets, Config, ConfigSchema, dumpConfig } from '../utils/config';
import { loadConfig, parseConfig } from '../config/resolve';
import { checkConfigValue, composeConfig } from '../utils/config_files';
import { isCommandLine, UserError } from '../utils/errors';
import { setSignalHandling } from '../engine/stop';
import { withWarnings } from '../utils/warnings';
import { runIfMain, SelfTest } from '../utils/self_test';

/**
 * A config object as a YAML file would hold it (the schema's input: every key optional,
 * defaults filled in when read), plus `extends:`. A misspelt key or a value of the wrong
 * type is a compile error; the model's and the loss's own options are checked when read.
 */
export type ConfigInput = z.input<typeof ConfigSchema> & {
  /** Configs this one is merged over (paths from the working folder), as in a YAML file. */
  extends?: string | string[] | null;
};

/** A config file's path, or the config as an object (`extends:` resolved from the working folder). */
export type ConfigSource = string | ConfigInput;

export interface CommonOptions {
  /** Overrides as `key.path=value`, like the commands' --set. */
  set?: string[];
  /** Overrides the config's backend. */
  backend?: BackendName;
  /** Print nothing (progress bars, tables, start-up lines, warnings); errors still throw. */
  quiet?: boolean;
  /** Receives each warning line (also when quiet). */
  onWarning?: (line: string) => void;
  /**
   * Handle SIGINT/SIGTERM as the commands do: the first stops training after the current
   * step and saves, a second ends the process (exit 130). Default false: signals are the
   * host program's (train() stops on its `abortSignal`), and nothing here exits the process.
   */
  handleSignals?: boolean;
}

// --- the library's arguments, checked where they enter: a host program passes anything ---

/** An option: its schema, and what it must be, for the message. */
type Opt = [z.ZodTypeAny, string];
const pathOpt: Opt = [z.string(), 'a string path'];
const boolOpt: Opt = [z.boolean(), 'true or false'];
const BACKENDS = ['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu'] as const;

/** The options every call takes (CommonOptions). */
export const COMMON_OPTIONS: Record<string, Opt> = {
  set: [z.array(z.string()), "a list of 'key.path=value' strings"],
  backend: [z.enum(BACKENDS), `one of ${BACKENDS.join(', ')}`],
  quiet: boolOpt,
  onWarning: [z.function(), 'a function (line: string) => void'],
  handleSignals: boolOpt,
};
export const OPTION_KINDS = { path: pathOpt, bool: boolOpt };
/** A threshold's range is preflight's to check (its message gives the range); NaN included, as yargs gives it. */
export const thresholdOpt: Opt = [z.number().or(z.nan()), 'a number from 0 to 1'];

function shown(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 37) + '...' : v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return Object.getPrototypeOf(v) === Object.prototype ? 'an object' : `a ${(v as object).constructor?.name ?? 'object'}`;
  return `a ${typeof v}`;
}

/**
 * Refuses, in one line naming `fn` and the option, options that are not an object, an unknown
 * option (a strict schema: a misspelt one would be ignored) and one of the wrong type or missing.
 */
export function checkOptions(fn: string, o: unknown, options: Record<string, Opt>, required: Record<string, string> = {}): void {
  if (o === undefined) o = {};
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new UserError(`${fn}(): the options must be an object such as { quiet: true }; got ${shown(o)}`);
  const shape = Object.fromEntries(Object.entries(options).map(([k, [s]]) => [k, k in required ? s : s.optional()]));
  const res = z.object(shape).strict().safeParse(o);
  if (res.success) return;
  const iss = res.error.issues[0];
  if (iss.code === 'unrecognized_keys') throw new UserError(`${fn}(): unknown option '${iss.keys[0]}' (options: ${Object.keys(options).join(', ')})`);
  const key = String(iss.path[0]);
  const v = (o as Record<string, unknown>)[key];
  if (v === undefined && key in required) throw new UserError(`${fn}(): option '${key}' is required: ${required[key]}`);
  throw new UserError(`${fn}(): option '${key}' must be ${options[key][1]}; got ${shown(v)}`);
}

/** Refuses a config that is neither a path nor a plain object (123, null and [] were read as {}). */
export function checkConfigSource(fn: string, source: unknown): asserts source is ConfigSource {
  if (typeof source === 'string' && source) return;
  const proto = source !== null && typeof source === 'object' ? Object.getPrototypeOf(source) : undefined;
  if (proto === Object.prototype || proto === null) return;
  throw new UserError(`${fn}(): the config must be a YAML file path or a config object (as the YAML would hold it); got ${shown(source)}`);
}

/** The validated config; throws a UserError (one line) naming the key on a bad one. */
export function resolveConfig(source: ConfigSource, o: CommonOptions = {}): Config {
  checkConfigSource('resolveConfig', source);
  checkOptions('resolveConfig', o, COMMON_OPTIONS);
  return resolveChecked(source, o);
}

function resolveChecked(source: ConfigSource, o: CommonOptions): Config {
  const sets = [...(o.set ?? []), ...(o.backend ? [`backend=${o.backend}`] : [])];
  if (typeof source === 'string') return loadConfig(source, sets);
  // Before structuredClone, which throws its own error on a function and keeps a cycle.
  checkConfigValue(source, 'config object');
  const raw = () => structuredClone(source);
  const composed = applySets(() => composeConfig(raw(), process.cwd(), 'config object'), sets, raw, process.cwd(), 'config object');
  return parseConfig(composed, 'config object');
}

/**
 * Validates the config and starts its backend (once per process and backend); unless
 * quiet, prints the backend line (and the resolved config when `printConfig`).
 */
export async function prepare(source: ConfigSource, o: CommonOptions = {}, printConfig = false): Promise<{ cfg: Config; backend: BackendInfo }> {
  const cfg = resolveChecked(source, o); // the entry point checked its arguments (checkArgs)
  const log = logger(o);
  // Asked for (--print-config): output, so on stdout; and before the backend starts.
  if (printConfig && !o.quiet) console.log(`config ${typeof source === 'string' ? source : '(object)'} (resolved):\n${indent(dumpConfig(cfg))}`);
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

/** An entry point's arguments: the config source, then its options by `options` (COMMON_OPTIONS added). */
export function checkArgs(fn: string, source: unknown, o: unknown, options: Record<string, Opt>, required: Record<string, string> = {}): void {
  checkConfigSource(fn, source);
  checkOptions(fn, o, { ...options, ...COMMON_OPTIONS }, required);
}

/** A progress line (`backend: ...`, `evaluating ...`) to stderr unless quiet: stdout is for results. */
export const logger = (o: CommonOptions) => (line: string) => {
  if (!o.quiet) console.error(line);
};

/**
 * Runs a library call: its warnings go to `onWarning` and `warnings` (and the console unless
 * quiet), signals are handled only when asked, and a UserError names the library's options
 * rather than the commands' (`overwrite: true`, not `--overwrite`).
 */
export async function libraryCall<T>(o: CommonOptions | undefined, fn: (warnings: string[]) => Promise<T>): Promise<T> {
  const opts = o && typeof o === 'object' ? o : {};
  const warnings: string[] = [];
  setSignalHandling(opts.handleSignals === true);
  try {
    return await withWarnings((line) => {
      warnings.push(line);
      if (typeof opts.onWarning === 'function') opts.onWarning(line);
      if (!opts.quiet) console.warn(line);
    }, () => fn(warnings));
  } catch (err) {
    if (err instanceof UserError && !isCommandLine()) err.message = inLibraryTerms(err.message);
    throw err;
  } finally {
    setSignalHandling(true);
  }
}

/** A command-line hint in the library's terms: `--overwrite` is `overwrite: true`, `--set k=v` is `set: ['k=v']`. */
export function inLibraryTerms(msg: string): string {
  return msg
    .replace(/--[\w-]+ \(library: ([^)]*)\)/g, '$1')
    .replace(/npx (train|evaluate|predict|export-model) --config [^\s)]+/g, (_, c: string) => `${c === 'export-model' ? 'exportModel' : c}(config)`)
    .replace(/--set '([^']*)'/g, "set: ['$1']")
    .replace(/--set ([^\s),;]+)/g, "set: ['$1']")
    .replace(/--(overwrite|resume|web):/g, '$1:') // a label, as in '--resume: no checkpoint at ...'
    .replace(/--(overwrite|resume|web)\b/g, '$1: true')
    .replace(/--(\w+)\b/g, '$1');
}

export const selfTest: SelfTest = {
  'an object config is validated, extends resolve from the working folder, overrides apply'() {
    const cfg = resolveConfig({ extends: path.relative(process.cwd(), path.join(__dirname, '..', ...(path.extname(__filename) === '.js' ? ['..'] : []), 'configs', 'demo.yaml')), name: 'lib' }, { set: ['training.epochs=2'], backend: 'cpu' });
    assert.deepEqual([cfg.name, cfg.model.name, cfg.training.epochs, cfg.backend], ['lib', 'unet', 2, 'cpu']);
    // @ts-expect-error a misspelt key is a compile error (ConfigInput) and, from JavaScript, one line
    assert.throws(() => resolveConfig({ training: { epohcs: 1 } }), /config object: unknown key 'training\.epohcs'/);
    // @ts-expect-error so is a value of the wrong type
    assert.throws(() => resolveConfig({ training: { epochs: 'five' } }), /training\.epochs/);
  },
  'command-line hints read as library options'() {
    assert.equal(inLibraryTerms("x holds a run; continue it with --resume, pick another name (--set name=...), or pass --overwrite to replace it"), "x holds a run; continue it with resume: true, pick another name (set: ['name=...']), or pass overwrite: true to replace it");
    assert.equal(inLibraryTerms('pass --overwrite (library: overwrite: true) to replace them'), 'pass overwrite: true to replace them');
    assert.equal(inLibraryTerms('--resume: no checkpoint at x'), 'resume: no checkpoint at x');
    assert.equal(inLibraryTerms('--output /x: holds files; train first (npx train --config ...) or pass --checkpoint DIR'), 'output /x: holds files; train first (train(config)) or pass checkpoint DIR');
  },
  'a config of the wrong kind and options of the wrong type are one line naming them'() {
    assert.throws(() => checkArgs('train', 123, {}, {}), /^UserError: train\(\): the config must be a YAML file path or a config object .*; got 123$/);
    assert.throws(() => checkArgs('f', {}, { set: [5] }, {}), /^UserError: f\(\): option 'set' must be a list of 'key\.path=value' strings; got a list$/);
    assert.throws(() => checkArgs('f', {}, { chekpoint: 'x' }, { checkpoint: OPTION_KINDS.path }), /unknown option 'chekpoint' \(options: checkpoint, set, backend, quiet, onWarning, handleSignals\)/);
    assert.throws(() => checkArgs('f', {}, {}, { input: OPTION_KINDS.path }, { input: 'an image' }), /option 'input' is required: an image$/);
    checkArgs('f', 'x.yaml', { set: ['a=1'], quiet: true, checkpoint: undefined }, { checkpoint: OPTION_KINDS.path });
  },
};

runIfMain(module, selfTest);
