// Building a model from the config and loading a checkpoint's weights into it.
import * as tf from '@tensorflow/tfjs';
import { getModel } from '../models';
import { Config } from '../utils/config';
import { UserError } from '../utils/errors';
import path from 'node:path';
import { applyWeights, checkpointExists, CheckpointMeta, loadCheckpoint, NamedTensor, saveCheckpoint } from './checkpoint/store';
import { runDirs } from './run_dirs';
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
  const isFile = fs.existsSync(source) && fs.statSync(source).isFile();
  const modelJson = isFile ? source : path.join(source, 'model.json');
  if (isFile || (fs.existsSync(modelJson) && !fs.existsSync(path.join(source, 'weights.json')))) return { weights: await readExportedWeights(modelJson), meta: null };
  const ck = await loadCheckpoint(source);
  return { weights: ck.weights, meta: ck.meta };
}

export async function loadModel(cfg: Config, checkpoint: string): Promise<tf.LayersModel> {
  const model = getModel(cfg);
  applyWeights(model, (await loadWeightsFrom(checkpoint)).weights, checkpoint);
  return model;
}

const fixtures = () => import('../test/fixtures/datasets');

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
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
