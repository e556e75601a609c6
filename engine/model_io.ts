// Building a model from the config and loading a checkpoint's weights into it.
import * as tf from '../backends/tf';
import { getModel } from '../models/registry';
import { Config } from '../utils/config';
import { Resolved } from '../config/resolve';
import { UserError } from '../utils/errors';
import path from 'node:path';
import { applyWeights, checkpointExists, CheckpointMeta, loadCheckpoint, NamedTensor, saveCheckpoint } from '../storage/checkpoint';
import { runDirs } from './run_dirs';
import { portableModel } from './portable';
import { resolveComplete } from '../storage/atomic_dir';
import { MODEL_JSON_MAX_BYTES, readBoundedFile, readExportedWeights, WEIGHTS_MAX_BYTES } from '../storage/model_files';
import fs from 'node:fs';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../utils/self_test';
import { warning } from '../utils/warnings';
import { Network } from './inference';
import { onnxExportMetadata, onnxModelFile, openOnnx } from './onnx_runtime';

/** The checkpoint to use when none is given: best/ of the run, else last/. */
export function defaultCheckpoint(cfg: Config): string {
  const { ckpt, best, last } = runDirs(cfg);
  for (const dir of [best, last]) if (checkpointExists(dir)) return dir;
  throw new UserError(`no checkpoint in ${ckpt}/best or ${ckpt}/last: train first (npx train --config ...) or pass --checkpoint DIR`);
}

/**
 * Weights from a checkpoint folder, or from an export (`npx export`): its model.json, or
 * a folder holding one. Exports carry no training state, so meta is null for them.
 */
export async function loadWeightsFrom(source: string): Promise<{ weights: NamedTensor[]; meta: CheckpointMeta | null }> {
  // An ONNX graph holds its weights under ONNX names, lowered: it is run (loadNetwork), not loaded into a TF.js model.
  if (onnxModelFile(source)) throw new UserError(`${source}: an ONNX export, which evaluate and predict run on ONNX Runtime; training and exporting need the checkpoint folder or a TF.js export (model.json)`);
  const json = exportModelJson(source);
  if (json) return { weights: await readExportedWeights(json), meta: null };
  const ck = await loadCheckpoint(source);
  return { weights: ck.weights, meta: ck.meta };
}

/**
 * The model.json to read when `source` is an export: the file itself, or the one in the
 * folder, or in its hidden old copy when a replacing export was interrupted mid-swap (as a
 * checkpoint's is). Null for a checkpoint folder or an ONNX model.
 */
function exportModelJson(source: string): string | null {
  // One stat, not exists-then-stat: a save swapping the folder away in between was a raw ENOENT.
  if (fs.statSync(source, { throwIfNoEntry: false })?.isFile()) return onnxModelFile(source) ? null : source;
  const dir = resolveComplete(source) ?? source;
  const modelJson = path.join(dir, 'model.json');
  return fs.existsSync(modelJson) && !fs.existsSync(path.join(dir, 'weights.json')) ? modelJson : null;
}

/**
 * The metadata an export records (model.json's userDefinedMetadata, an .onnx file's
 * 'tfjs_semseg' metadata_props); undefined for a checkpoint folder.
 */
function exportMetadataOf(source: string): unknown {
  const modelJson = exportModelJson(source);
  if (modelJson) return JSON.parse(readBoundedFile(modelJson, MODEL_JSON_MAX_BYTES).toString('utf8'))?.userDefinedMetadata ?? null;
  const onnx = onnxModelFile(source);
  return onnx ? onnxExportMetadata(onnx) : undefined;
}

/**
 * The input size the weights in `source` were trained at (a checkpoint's config) or
 * exported for (an export's input.size), where recorded; null otherwise or when
 * unreadable (loading the weights then says what is wrong).
 */
export function trainedSize(source: string): [number, number] | null {
  let size: unknown;
  try {
    const md = exportMetadataOf(source) as { input?: { size?: unknown } } | null | undefined;
    if (md !== undefined) {
      size = md?.input?.size;
    } else {
      const dir = resolveComplete(source);
      if (!dir) return null;
      size = JSON.parse(readBoundedFile(path.join(dir, 'state.json'), MODEL_JSON_MAX_BYTES).toString('utf8'))?.config?.data?.size;
    }
  } catch {
    return null;
  }
  const ok = Array.isArray(size) && size.length === 2 && size.every((v) => Number.isInteger(v) && v > 0);
  return ok ? (size as [number, number]) : null;
}

/**
 * What defines the network and what it sees: every model key but these (where the
 * training starts and what it trains, not what the trained network computes) ...
 */
const NOT_DEFINING_MODEL_KEYS = new Set(['encoder_weights', 'frozen_stages', 'dropout']);
/** ... and these data keys (the input size, its normalisation, the classes). */
const DEFINING_DATA_KEYS = ['size', 'normalize', 'mean', 'std', 'num_classes'] as const;

type Section = Record<string, unknown>;
const isSection = (v: unknown): v is Section => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The defining part of the config stored with the weights in `source`: a checkpoint's
 * whole resolved config (state.json), or what an export's model.json records (its model
 * name, input size, normalisation and classes; `model_config`, the model section, where
 * an export writes it). Null when nothing is recorded or readable (loading the weights
 * then says what is wrong).
 */
export function storedDefinition(source: string): { model: Section; data: Section; complete: boolean } | null {
  try {
    const md = exportMetadataOf(source);
    if (md !== undefined) {
      if (!isSection(md) || !isSection(md.input)) return null;
      const input = md.input;
      const model: Section = isSection(md.model_config) ? { ...md.model_config } : {};
      if (typeof md.model === 'string') model.name = md.model;
      if (input.channels !== undefined) model.in_channels = input.channels;
      const data: Section = { size: input.size, normalize: input.normalize, mean: input.mean, std: input.std, num_classes: md.num_classes };
      return { model, data, complete: isSection(md.model_config) };
    }
    const dir = resolveComplete(source);
    if (!dir) return null;
    const config = JSON.parse(readBoundedFile(path.join(dir, 'state.json'), MODEL_JSON_MAX_BYTES).toString('utf8'))?.config;
    return isSection(config) && isSection(config.model) && isSection(config.data) ? { model: config.model, data: config.data, complete: true } : null;
  } catch {
    return null;
  }
}

export interface DefinitionChange { key: string; stored: unknown; config: unknown }

/** The defining keys where `cfg` differs from `stored`; keys `stored` does not record are taken as the same. */
export function definitionChanges(cfg: Config, stored: { model: Section; data: Section }): DefinitionChange[] {
  const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
  const out: DefinitionChange[] = [];
  const model = cfg.model as Section;
  // The model's name first: the other model keys are that model's options.
  const keys = [...new Set(['name', ...Object.keys(stored.model), ...Object.keys(model)])];
  for (const k of keys) {
    if (NOT_DEFINING_MODEL_KEYS.has(k) || !(k in stored.model)) continue;
    if (!same(stored.model[k], model[k])) out.push({ key: `model.${k}`, stored: stored.model[k], config: model[k] });
  }
  const data = cfg.data as unknown as Section;
  for (const k of DEFINING_DATA_KEYS) {
    if (stored.data[k] === undefined) continue;
    if (!same(stored.data[k], data[k])) out.push({ key: `data.${k}`, stored: stored.data[k], config: data[k] });
  }
  return out;
}

const show = (v: unknown): string => (v === undefined ? '(unset)' : typeof v === 'string' ? v : JSON.stringify(v).replace(/,/g, ', '));

/** "model.up_mode bilinear (config: nearest), data.size [64, 64] (config: [32, 32])" */
export function describeChanges(changes: DefinitionChange[]): string {
  return changes.map((c) => `${c.key} ${show(c.stored)} (config: ${show(c.config)})`).join(', ');
}

/**
 * evaluate, predict and export run the network the weights were trained as: the model
 * section and the defining data keys come from what `source` stores, not from the config
 * (a config with up_mode nearest gave other masks from a bilinear-trained model, without a
 * word). Sets them on `cfg` and says so in one line when the config differs. An export of
 * another model than the config names is refused: its options are not all recorded.
 */
export function useCheckpointDefinition(cfg: Config, source: string, warn: (line: string) => void = warning): void {
  const stored = storedDefinition(source);
  if (!stored) return;
  const changes = definitionChanges(cfg, stored);
  if (!changes.length) return;
  const exported = exportModelJson(source) !== null || onnxModelFile(source) !== null;
  if (!stored.complete && changes.some((c) => c.key === 'model.name'))
    throw new UserError(`${source}: an export of model ${show(stored.model.name)}, but the config's model.name is ${show(cfg.model.name)}; use the config it was trained with`);
  // A full model section (a checkpoint's) replaces the config's; an export's few keys are laid over it.
  const model = stored.complete ? { ...stored.model, encoder_weights: cfg.model.encoder_weights } : { ...(cfg.model as Section), ...stored.model };
  cfg.model = model as Config['model'];
  const data = cfg.data as unknown as Section;
  for (const k of DEFINING_DATA_KEYS) if (stored.data[k] !== undefined) data[k] = stored.data[k];
  warn(`warning: ${source} was trained with ${describeChanges(changes)}; using the ${exported ? "export's" : "checkpoint's"} settings`);
}

/** @deprecated the data.size part of useCheckpointDefinition, kept for callers of the library. */
export const useTrainedSize = useCheckpointDefinition;

/**
 * --resume continues training the same network: a config whose defining keys differ from
 * the checkpoint's is refused, one line naming each key with both values.
 */
export function refuseChangedDefinition(cfg: Config, storedConfig: unknown, source: string): void {
  if (!isSection(storedConfig) || !isSection(storedConfig.model) || !isSection(storedConfig.data)) return;
  const stored = { model: storedConfig.model, data: storedConfig.data };
  // Training-only model keys count here too: the run continues to train.
  const changes = definitionChanges(cfg, stored);
  const model = cfg.model as Section;
  for (const k of NOT_DEFINING_MODEL_KEYS) {
    if (k === 'encoder_weights' || !(k in stored.model)) continue; // where a run starts: resume does not use it
    if (JSON.stringify(stored.model[k]) !== JSON.stringify(model[k])) changes.push({ key: `model.${k}`, stored: stored.model[k], config: model[k] });
  }
  if (!changes.length) return;
  throw new UserError(
    `--resume: ${source} was trained with ${describeChanges(changes)}; a resumed run trains the same network, so set ${changes.length > 1 ? 'these' : 'it'} back, or start a new run (--set name=...) with --weights ${source}`,
  );
}

/**
 * An export records its network in model.json but not every model option (up_mode,
 * aspp_rates, ...): the network the config builds is compared with it layer by layer, and
 * another one refused, naming the first difference (loading its weights into it gave
 * other masks without a word).
 */
async function checkExportTopology(parts: Resolved, modelJson: string): Promise<void> {
  const { cfg } = parts;
  type Layer = { name: string; class_name: string; config: Record<string, unknown> };
  let theirs: Layer[];
  try {
    const t = JSON.parse(readBoundedFile(modelJson, MODEL_JSON_MAX_BYTES).toString('utf8'))?.modelTopology;
    theirs = (t?.model_config ?? t)?.config?.layers;
    if (!Array.isArray(theirs)) return;
  } catch {
    return; // unreadable: reading its weights says what is wrong
  }
  const built = getModel(parts.model);
  const portable = await portableModel(built, cfg.data.size, parts.model.definition);
  built.dispose();
  const ours = new Map(((portable.toJSON(null, false) as unknown as { config: { layers: Layer[] } }).config.layers).map((l) => [l.name, l]));
  portable.dispose();
  const strip = (c: Record<string, unknown>) => JSON.stringify({ ...c, name: undefined, trainable: undefined });
  for (const l of theirs) {
    const o = ours.get(l.name);
    let why: string | null = null;
    if (!o) why = `layer ${l.name} is not in the network the config builds`;
    else if (o.class_name !== l.class_name) why = `layer ${l.name} is ${l.class_name} there, ${o.class_name} from the config`;
    else if (strip(o.config) !== strip(l.config)) {
      const k = Object.keys(l.config).find((key) => JSON.stringify(l.config[key]) !== JSON.stringify(o.config[key])) ?? '?';
      why = `layer ${l.name} has ${k} ${show(l.config[k])} there, ${show(o.config[k])} from the config`;
    }
    if (why) throw new UserError(`${modelJson}: the config's model options build another network than this export (${why}); use the config it was trained with`);
  }
  if (ours.size !== theirs.length) throw new UserError(`${modelJson}: the config's model options build another network than this export (${ours.size} layers, not ${theirs.length}); use the config it was trained with`);
}

/** The resolved run's model (config/resolve.ts resolveRun, after useCheckpointDefinition) with the checkpoint's weights. */
export async function loadModel(parts: Resolved, checkpoint: string): Promise<tf.LayersModel> {
  const json = exportModelJson(checkpoint);
  if (json && !storedDefinition(checkpoint)?.complete) await checkExportTopology(parts, json);
  const model = getModel(parts.model);
  applyWeights(model, (await loadWeightsFrom(checkpoint)).weights, checkpoint);
  return model;
}

/**
 * What evaluate and predict run for `checkpoint`: an ONNX export (an .onnx file, or a
 * folder holding model.onnx) on ONNX Runtime, anything else as loadModel loads it.
 * useCheckpointDefinition has set `cfg`'s size, normalisation and classes from it first.
 */
export async function loadNetwork(parts: Resolved, checkpoint: string): Promise<Network> {
  const onnx = onnxModelFile(checkpoint);
  if (!onnx) return loadModel(parts, checkpoint);
  const cfg = parts.cfg;
  const bytes = readBoundedFile(onnx, WEIGHTS_MAX_BYTES); // protobuf's own ceiling is 2 GiB
  // Without its metadata the input size, normalisation and classes would be guesses from the config.
  if (!onnxExportMetadata(onnx, bytes)) throw new UserError(`${onnx}: no 'tfjs_semseg' metadata (input size, normalisation, classes); run an ONNX export of this project (npx export-model --format onnx)`);
  // Its crops and pads are fixed at the exported size: an input at another scale cannot run.
  const scales = cfg.evaluation.scales;
  if (scales.some((s) => s !== 1)) throw new UserError(`evaluation.scales ${JSON.stringify(scales)}: an ONNX model runs at its exported input size only (${cfg.data.size.join('x')}); set evaluation.scales to [1] or use the checkpoint or TF.js export`);
  return openOnnx(onnx, { size: cfg.data.size, bytes });
}

const fixtures = () => import('../loaders/fixtures');

export const selfTest: SelfTest = {
  async 'without a checkpoint the error says to train first'() {
    const { fixtureConfig, tmpDir } = await fixtures();
    const dir = tmpDir('mio');
    const cfg = fixtureConfig(dir);
    assert.throws(() => defaultCheckpoint(cfg), (e: Error) => e instanceof UserError && /train first/.test(e.message));
    fs.rmSync(dir, { recursive: true });
  },
  async 'loads the weights of best/, else last/'() {
    const { fixtureConfig, tmpDir } = await fixtures();
    const dir = tmpDir('mio2');
    const cfg = fixtureConfig(dir);
    const model = getModel(cfg);
    const meta = { epoch: 1, step: 4, bestMetric: null, bestMetricName: 'val.dice', rng: null, config: cfg };
    const { last } = runDirs(cfg);
    await saveCheckpoint(last, model, null, meta);
    assert.equal(defaultCheckpoint(cfg), last);
    const loaded = await loadModel((await import('../config/resolve')).resolveRun(cfg), last);
    const a = model.getWeights().map((w) => w.dataSync());
    const b = loaded.getWeights().map((w) => w.dataSync());
    assert.deepEqual(b, a);
    model.dispose();
    loaded.dispose();
    // The size and model options it was trained with win over the config's, with one line.
    const other = { ...cfg, data: { ...cfg.data, size: [cfg.data.size[0] + 8, cfg.data.size[1]] as [number, number] }, model: { ...cfg.model, up_mode: 'bilinear' } };
    const warned: string[] = [];
    useCheckpointDefinition(other, last, (l) => warned.push(l));
    assert.deepEqual(other.data.size, cfg.data.size);
    assert.equal(other.model.up_mode, cfg.model.up_mode);
    assert.match(warned[0], /was trained with model\.up_mode nearest \(config: bilinear\), data\.size \[\d+, \d+\] \(config: \[\d+, \d+\]\); using the checkpoint's settings$/);
    useCheckpointDefinition(other, last, (l) => warned.push(l));
    assert.equal(warned.length, 1);
    const changed = { ...cfg, model: { ...cfg.model, up_mode: 'bilinear' } };
    assert.throws(() => refuseChangedDefinition(changed, cfg, last), (e: Error) => e instanceof UserError && /^--resume: .* was trained with model\.up_mode nearest \(config: bilinear\); a resumed run/.test(e.message));
    refuseChangedDefinition(cfg, cfg, last);
    assert.equal(trainedSize(path.join(dir, 'nothing')), null);
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
