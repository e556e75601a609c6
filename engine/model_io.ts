// Building a model from the config and loading a checkpoint's weights into it.
import * as tf from '@tensorflow/tfjs';
import { getModel } from '../models';
import { Config } from '../utils/config';
import { UserError } from '../utils/errors';
import { applyWeights, checkpointExists, loadCheckpoint, saveCheckpoint } from './checkpoint/store';
import { runDirs } from './run_dirs';
import fs from 'node:fs';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../utils/self_test';

/** The checkpoint to use when none is given: best/ of the run, else last/. */
export function defaultCheckpoint(cfg: Config): string {
  const { ckpt, best, last } = runDirs(cfg);
  for (const dir of [best, last]) if (checkpointExists(dir)) return dir;
  throw new UserError(`no checkpoint in ${ckpt}/best or ${ckpt}/last: train first (npx train --config ...) or pass --checkpoint DIR`);
}

export async function loadModel(cfg: Config, checkpoint: string): Promise<tf.LayersModel> {
  const model = getModel(cfg);
  const ck = await loadCheckpoint(checkpoint);
  applyWeights(model, ck.weights, checkpoint);
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
