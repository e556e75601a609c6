// Checkpoints that never lose work. A checkpoint is a folder (e.g.
// checkpoints/<run>/last) holding weights.bin/.json, optimizer.bin/.json,
// state.json, a readable config.yaml and, written last, complete.json.
// The swap scheme that keeps a complete copy loadable at every moment (even
// across SIGKILL) lives in checkpoint/atomic_dir.ts; the encoding in checkpoint/format.ts.
import { checkDevice } from '../backends/webgpu_errors';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '../backends/tf';
import yaml from 'js-yaml';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';
import { MARKER, publishDir, readMarker, readVerified, resolveComplete, whyIncomplete } from './atomic_dir';
import { FORMAT, FORMAT_VERSION, ManifestEntry, NamedTensor, numel, OptimizerJsonSchema, OptimizerState, packTensors, parseJson, parseState, unpackTensors } from './format';

export type { NamedTensor } from './format';

// The optimizer's own type (name, tensors, plus scalars such as step and lr).
// Stored generically: every field besides `tensors` goes to optimizer.json as
// JSON, so fields added there later survive a round trip without changes here.
export type { OptimizerState };

export interface CheckpointMeta {
  epoch: number;
  step: number;
  bestMetric: number | null;
  bestMetricName: string;
  rng: unknown; // opaque random-generator state
  config: unknown; // the resolved config
  savedAt?: string; // ISO time; filled in on save when absent
  /** Steps per epoch and training pairs when saved: resume compares them with the current data. */
  stepsPerEpoch?: number;
  trainPairs?: number;
}

export interface LoadedCheckpoint {
  weights: NamedTensor[];
  optimizer: OptimizerState | null;
  meta: CheckpointMeta;
  /** The folder actually read: `dir`, or its hidden old copy when a save was interrupted mid-swap. */
  source: string;
}

const FILES = ['weights.bin', 'weights.json', 'optimizer.bin', 'optimizer.json', 'state.json', 'config.yaml'];

/** Stable weight name like `enc0_conv1/kernel`: `originalName` lacks the `_1` suffix tfjs adds when a name repeats in the process. */
export function weightName(v: tf.LayerVariable): string {
  return v.originalName ?? v.name;
}

/** A variable's concrete shape (LayerVariable.shape is typed as possibly-null dims). */
function shapeOf(v: tf.LayerVariable): number[] {
  return v.read().shape;
}

/** Copies every model weight (trainable and not, e.g. BN moving stats) at one instant, read asynchronously. */
export async function snapshotWeights(model: tf.LayersModel): Promise<(NamedTensor & { dtype: string })[]> {
  const vars = model.weights;
  // Clones share storage but survive the variables being reassigned while we await data().
  const clones = tf.tidy(() => vars.map((v) => v.read().clone()));
  try {
    const data = await Promise.all(clones.map((c) => c.data()));
    checkDevice('reading the weights'); // after a device error they are not to be saved or exported
    return vars.map((v, i) => ({
      name: weightName(v),
      shape: [...shapeOf(v)],
      dtype: v.dtype,
      values: data[i] instanceof Float32Array ? (data[i] as Float32Array) : Float32Array.from(data[i] as ArrayLike<number>),
    }));
  } finally {
    clones.forEach((c) => c.dispose());
  }
}

function manifestJson(manifest: ManifestEntry[]): string {
  // One tensor per line: readable, and diffable between checkpoints.
  return '[\n' + manifest.map((e) => ' ' + JSON.stringify(e)).join(',\n') + '\n]\n';
}

/**
 * Saves atomically: `dir` always holds (or, mid-swap, its hidden old copy holds) a complete checkpoint.
 * `check` sees the weights as read for saving (one read of them) and may throw to save nothing.
 */
export async function saveCheckpoint(
  dir: string,
  model: tf.LayersModel,
  optimizer: { name: string; tensors: NamedTensor[] } | null, // an OptimizerState; extra fields are kept
  meta: CheckpointMeta,
  check?: (weights: NamedTensor[]) => void,
): Promise<void> {
  if (!Number.isFinite(meta.epoch) || !Number.isFinite(meta.step)) throw new Error(`saveCheckpoint: epoch/step must be finite numbers`);
  const snapshot = await snapshotWeights(model);
  check?.(snapshot);
  const weights = packTensors(snapshot);
  const opt = packTensors(optimizer?.tensors ?? []);
  const { tensors: _t, name: optName, ...optScalars } = optimizer ?? { tensors: [], name: null };
  const state = {
    format: FORMAT,
    version: FORMAT_VERSION,
    epoch: meta.epoch,
    step: meta.step,
    bestMetric: meta.bestMetric !== null && Number.isFinite(meta.bestMetric) ? meta.bestMetric : null,
    bestMetricName: meta.bestMetricName,
    rng: meta.rng ?? null,
    config: meta.config ?? null,
    savedAt: meta.savedAt ?? new Date().toISOString(),
    ...(meta.stepsPerEpoch !== undefined ? { stepsPerEpoch: meta.stepsPerEpoch } : {}),
    ...(meta.trainPairs !== undefined ? { trainPairs: meta.trainPairs } : {}),
  };
  const stateText = JSON.stringify(state, null, 2) + '\n';
  const configYaml =
    `# Copy of the resolved config for reading; state.json holds the authoritative one.\n` +
    (state.config === null ? '' : yaml.dump(state.config, { lineWidth: 120, noRefs: true, skipInvalid: true }));
  await publishDir(
    dir,
    async (out) => {
      await out.write('weights.bin', weights.bin);
      await out.write('weights.json', manifestJson(weights.manifest));
      await out.write('optimizer.bin', opt.bin);
      await out.write('optimizer.json', `{\n "name": ${JSON.stringify(optName)},\n "state": ${JSON.stringify(optScalars)},\n "tensors": ${manifestJson(opt.manifest)}}\n`);
      await out.write('state.json', stateText);
      await out.write('config.yaml', configYaml);
    },
    FILES,
  );
}

async function readFrom(src: string): Promise<LoadedCheckpoint> {
  const marker = await readMarker(src);
  const read = (name: string) => readVerified(src, marker, name);
  const [wBin, wJson, oBin, oJson, sJson] = await Promise.all(['weights.bin', 'weights.json', 'optimizer.bin', 'optimizer.json', 'state.json'].map(read));
  const file = (name: string) => path.join(src, name);

  const wManifest = parseJson(wJson.toString('utf8'), file('weights.json'), 'a list of {name, shape, dtype, offset}');
  const weights = unpackTensors(wBin, wManifest, file('weights.bin'), file('weights.json'));

  const oRaw = OptimizerJsonSchema.safeParse(parseJson(oJson.toString('utf8'), file('optimizer.json'), '{name, state, tensors}'));
  if (!oRaw.success) throw new UserError(`${file('optimizer.json')}: expected {name, state: {...}, tensors: [{name, shape, dtype, offset}]}`);
  const optTensors = unpackTensors(oBin, oRaw.data.tensors, file('optimizer.bin'), file('optimizer.json'));
  const optimizer = oRaw.data.name === null ? null : ({ ...oRaw.data.state, name: oRaw.data.name, tensors: optTensors } as OptimizerState);

  const s = parseState(parseJson(sJson.toString('utf8'), file('state.json'), 'a JSON object'), file('state.json'));
  const meta: CheckpointMeta = {
    epoch: s.epoch,
    step: s.step,
    bestMetric: s.bestMetric,
    bestMetricName: s.bestMetricName,
    rng: s.rng,
    config: s.config,
    savedAt: s.savedAt,
    ...(s.stepsPerEpoch !== undefined ? { stepsPerEpoch: s.stepsPerEpoch } : {}),
    ...(s.trainPairs !== undefined ? { trainPairs: s.trainPairs } : {}),
  };
  return { weights, optimizer, meta, source: src };
}

function markerIdentity(src: string | null): string {
  if (src === null) return 'none';
  try {
    // ctime and birth time too: a new marker may get the inode number of a removed one.
    const st = fs.statSync(path.join(src, MARKER));
    return `${src}:${st.ino}:${st.mtimeMs}:${st.ctimeMs}:${st.birthtimeMs}:${st.size}`;
  } catch {
    return `${src}:gone`;
  }
}

/** Loads `dir` (or the old copy a save left mid-swap). Bad/missing/corrupt data: one-line UserError naming the file. */
export async function loadCheckpoint(dir: string): Promise<LoadedCheckpoint> {
  // A save in another process may swap folders while we read (raw ENOENT, or files of
  // two saves): if the folder we resolved changed under us, the error was the swap, not
  // the data, so read again. Bounded: a writer saving without pause cannot starve us for long.
  const deadline = Date.now() + 5000;
  for (let attempt = 0; ; attempt++) {
    const src = resolveComplete(dir);
    const before = markerIdentity(src);
    try {
      if (src === null) throw new UserError(whyIncomplete(dir));
      return await readFrom(src);
    } catch (err) {
      if (attempt >= 50 || Date.now() > deadline) throw err;
      if (src === null) await new Promise((r) => setTimeout(r, 20)); // maybe resolved between two renames of a swap
      if (markerIdentity(resolveComplete(dir)) === before) throw err;
    }
  }
}

/** True when `dir` (or its mid-swap old copy) holds a complete checkpoint. */
export function checkpointExists(dir: string): boolean {
  return resolveComplete(dir) !== null;
}

function fmtShape(shape: number[]): string {
  return `[${shape.join(',')}]`;
}

/**
 * Writes checkpoint weights into `model`, matched by name. Everything is checked
 * first, so on a mismatch the model is untouched and the UserError names the
 * first mismatched weight (with both shapes) and how many more there are.
 */
export function applyWeights(model: tf.LayersModel, weights: NamedTensor[], source: string): void {
  const byName = new Map(weights.map((w) => [w.name, w]));
  const problems: string[] = [];
  const vars = model.weights;
  const used = new Set<string>();
  for (const v of vars) {
    const name = weightName(v);
    const shape = shapeOf(v);
    const w = byName.get(name);
    if (!w) {
      problems.push(`weight '${name}' ${fmtShape(shape)} of the model is missing from the checkpoint`);
      continue;
    }
    used.add(name);
    if (w.shape.length !== shape.length || w.shape.some((d, i) => d !== shape[i])) {
      problems.push(`weight '${name}' has shape ${fmtShape(w.shape)} in the checkpoint but ${fmtShape(shape)} in the model`);
    } else if (w.values.length !== numel(shape)) {
      problems.push(`weight '${name}' has ${w.values.length} values for shape ${fmtShape(w.shape)}`);
    }
  }
  for (const w of weights) {
    if (!used.has(w.name)) problems.push(`weight '${w.name}' ${fmtShape(w.shape)} in the checkpoint has no counterpart in the model`);
  }
  if (problems.length) {
    const more = problems.length > 1 ? ` (+${problems.length - 1} more mismatched weights; model has ${vars.length}, checkpoint ${weights.length})` : '';
    throw new UserError(`${source}: ${problems[0]}${more}`);
  }
  for (const v of vars) {
    const w = byName.get(weightName(v))!;
    const t = tf.tensor(w.values, shapeOf(v), v.dtype);
    v.write(t); // assign copies, so the temporary can go
    t.dispose();
  }
}

export interface PartialLoad {
  /** Model weights written from the source. */
  loaded: number;
  /** Parameters (values) in those weights. */
  loadedValues: number;
  /** Model weights the source has no weight for: they keep their initial values. */
  kept: string[];
  /** Source weights the model has no weight for. */
  ignored: number;
}

/**
 * Writes the source's weights into the model weights of the same name (pretrained
 * encoders: model.encoder_weights); the others keep their values. A name in both with
 * another shape is a UserError (nothing written): a silently skipped layer would train
 * from scratch while the user believes it pretrained. No name in common is one too.
 */
export function applyMatchingWeights(model: tf.LayersModel, weights: NamedTensor[], source: string): PartialLoad {
  const byName = new Map(weights.map((w) => [w.name, w]));
  const matches: [tf.LayerVariable, NamedTensor][] = [];
  const kept: string[] = [];
  for (const v of model.weights) {
    const w = byName.get(weightName(v));
    if (!w) {
      kept.push(weightName(v));
      continue;
    }
    const shape = shapeOf(v);
    if (w.shape.length !== shape.length || w.shape.some((d, i) => d !== shape[i]) || w.values.length !== numel(shape)) {
      throw new UserError(`${source}: weight '${w.name}' has shape ${fmtShape(w.shape)} there but ${fmtShape(shape)} in the model; same names must have the same shapes (same encoder and widths)`);
    }
    matches.push([v, w]);
  }
  if (!matches.length) {
    throw new UserError(`${source}: none of its ${weights.length} weights has the name of one of the model's ${model.weights.length} (e.g. '${weights[0]?.name}' vs '${kept[0]}'); weights load by layer name`);
  }
  for (const [v, w] of matches) {
    const t = tf.tensor(w.values, shapeOf(v), v.dtype);
    v.write(t);
    t.dispose();
  }
  return { loaded: matches.length, loadedValues: matches.reduce((n, [, w]) => n + w.values.length, 0), kept, ignored: weights.length - matches.length };
}

// --- self test -------------------------------------------------------------

function tinyModel(filters = 4): tf.LayersModel {
  const input = tf.input({ shape: [6, 6, 3] });
  let x = tf.layers.conv2d({ filters, kernelSize: 3, padding: 'same', name: 'enc0_conv1' }).apply(input) as tf.SymbolicTensor;
  x = tf.layers.batchNormalization({ name: 'enc0_bn1' }).apply(x) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: x });
}

export const selfTest: SelfTest = {
  async 'a non-finite best metric is saved as null; a non-finite step is refused before writing'() {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-self-'));
    try {
      const dir = path.join(root, 'last');
      const meta: CheckpointMeta = { epoch: 1, step: 5, bestMetric: NaN, bestMetricName: 'val.mIoU', rng: null, config: null };
      await assert.rejects(saveCheckpoint(dir, tinyModel(), null, { ...meta, step: Infinity }), /epoch\/step must be finite/);
      assert.deepEqual(fs.readdirSync(root), []);
      await saveCheckpoint(dir, tinyModel(), null, meta);
      const ck = await loadCheckpoint(dir);
      assert.equal(ck.meta.bestMetric, null);
      assert.equal(ck.meta.step, 5);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  },
};

runIfMain(module, selfTest);
