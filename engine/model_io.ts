// Building a model from the config and loading a checkpoint's weights into it.
import * as tf from '@tensorflow/tfjs';
import { getModel } from '../models/registry';
import { Config } from '../utils/config';
import { UserError } from '../utils/errors';
import path from 'node:path';
import { applyWeights, checkpointExists, CheckpointMeta, loadCheckpoint, NamedTensor, saveCheckpoint } from './checkpoint/store';
import { runDirs } from './run_dirs';
import { resolveComplete } from './checkpoint/atomic_dir';
import { readExportedWeights } from '../deploy/model_files';
import fs from 'node:fs';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../utils/self_test';

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
  const json = exportModelJson(source);
  if (json) return { weights: await readExportedWeights(json), meta: null };
  const ck = await loadCheckpoint(source);
  return { weights: ck.weights, meta: ck.meta };
}

/**
 * The model.json to read when `source` is an export: the file itself, or the one in the
 * folder, or in its hidden old copy when a replacing export was interrupted mid-swap (as a
 * checkpoint's is). Null for a checkpoint folder.
 */
function exportModelJson(source: string): string | null {
  // One stat, not exists-then-stat: a save swapping the folder away in between was a raw ENOENT.
  if (fs.statSync(source, { throwIfNoEntry: false })?.isFile()) return source;
  const dir = resolveComplete(source) ?? source;
  const modelJson = path.join(dir, 'model.json');
  return fs.existsSync(modelJson) && !fs.existsSync(path.join(dir, 'weights.json')) ? modelJson : null;
}

/**
 * The input size the weights in `source` were trained at (a checkpoint's config) or
 * exported for (an export's input.size), where recorded; null otherwise or when
 * unreadable (loading the weights then says what is wrong).
 */
export function trainedSize(source: string): [number, number] | null {
  let size: unknown;
  try {
    const modelJson = exportModelJson(source);
    if (modelJson) {
      size = JSON.parse(fs.readFileSync(modelJson, 'utf8'))?.userDefinedMetadata?.input?.size;
    } else {
      const dir = resolveComplete(source);
      if (!dir) return null;
      size = JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8'))?.config?.data?.size;
    }
  } catch {
    return null;
  }
  const ok = Array.isArray(size) && size.length === 2 && size.every((v) => Number.isInteger(v) && v > 0);
  return ok ? (size as [number, number]) : null;
}

/**
 * evaluate and predict run at the size the weights were trained at: a config with
 * another data.size gave other masks, without a word. Sets cfg.data.size and warns.
 */
export function useTrainedSize(cfg: Config, source: string, warn: (line: string) => void = (l) => console.warn(l)): void {
  const size = trainedSize(source);
  const [h, w] = cfg.data.size;
  if (!size || (size[0] === h && size[1] === w)) return;
  warn(`warning: ${source} was trained at data.size [${size.join(', ')}]; running at that size, not the config's [${h}, ${w}]`);
  cfg.data.size = size;
}

export async function loadModel(cfg: Config, checkpoint: string): Promise<tf.LayersModel> {
  const model = getModel(cfg);
  applyWeights(model, (await loadWeightsFrom(checkpoint)).weights, checkpoint);
  return model;
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
    const loaded = await loadModel(cfg, last);
    const a = model.getWeights().map((w) => w.dataSync());
    const b = loaded.getWeights().map((w) => w.dataSync());
    assert.deepEqual(b, a);
    model.dispose();
    loaded.dispose();
    // The size it was trained at wins over another data.size, with a warning.
    const other = { ...cfg, data: { ...cfg.data, size: [cfg.data.size[0] + 8, cfg.data.size[1]] as [number, number] } };
    const warned: string[] = [];
    useTrainedSize(other, last, (l) => warned.push(l));
    assert.deepEqual(other.data.size, cfg.data.size);
    assert.match(warned[0], /was trained at data\.size \[\d+, \d+\]; running at that size, not the config's/);
    useTrainedSize(other, last, (l) => warned.push(l));
    assert.equal(warned.length, 1);
    assert.equal(trainedSize(path.join(dir, 'nothing')), null);
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
