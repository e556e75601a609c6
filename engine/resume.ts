// Where a run starts: from scratch, from given weights (--weights / checkpoint.weights:
// a checkpoint folder or an exported model.json),
// or, with --resume, from last/ with its optimizer state, step and best metric.
// The data pipeline draws its randomness from (seed, epoch, position in epoch), so the
// seed plus epoch and step is the whole random-generator state a resume needs.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type * as tf from '@tensorflow/tfjs';
import type { Config } from '../utils/config';
import { UserError } from '../utils/errors';
import type { TrainOptimizer } from '../utils/optimizers';
import { runIfMain, SelfTest } from '../utils/self_test';
import { applyWeights, checkpointExists, CheckpointMeta, loadCheckpoint } from './checkpoint/store';
import { loadWeightsFrom } from './model_io';
import type { RunDirs } from './run_dirs';

export interface StartOptions {
  resume?: boolean;
  weights?: string | null;
}

/** The state a fresh run starts from. */
export function freshMeta(cfg: Config): CheckpointMeta {
  return { epoch: 0, step: 0, bestMetric: null, bestMetricName: cfg.checkpoint.best_metric, rng: { seed: cfg.training.seed }, config: cfg };
}

/** Loads what the run starts from into `model` and `optimizer`; returns the run's state. */
export async function startState(cfg: Config, model: tf.LayersModel, optimizer: TrainOptimizer, dirs: RunDirs, opts: StartOptions, log: (s: string) => void): Promise<CheckpointMeta> {
  const meta = freshMeta(cfg);
  if (opts.resume) {
    if (!checkpointExists(dirs.last)) throw new UserError(`--resume: no checkpoint at ${dirs.last} (start the run without --resume first)`);
    const ck = await loadCheckpoint(dirs.last);
    applyWeights(model, ck.weights, dirs.last);
    if (ck.optimizer) await optimizer.setState(ck.optimizer);
    Object.assign(meta, ck.meta, { config: cfg });
    log(`resumed from ${dirs.last}: epoch ${meta.epoch}, step ${meta.step}`);
    return meta;
  }
  const weights = opts.weights ?? cfg.checkpoint.weights;
  if (weights) {
    applyWeights(model, (await loadWeightsFrom(weights)).weights, weights);
    log(`starting from weights in ${weights}`);
  }
  return meta;
}

const fixtures = () => import('../test/fixtures/datasets');

export const selfTest: SelfTest = {
  async '--resume without last/ says to start without it; weights load into a fresh state'() {
    const { fixtureConfig, tmpDir } = await fixtures();
    const { getModel } = await import('../models');
    const { createOptimizer } = await import('../utils/optimizers');
    const { saveCheckpoint } = await import('./checkpoint/store');
    const { runDirs } = await import('./run_dirs');
    const dir = tmpDir('resume');
    const cfg = fixtureConfig(dir);
    const dirs = runDirs(cfg);
    const model = getModel(cfg);
    const opt = createOptimizer(cfg);
    await assert.rejects(startState(cfg, model, opt, dirs, { resume: true }, () => {}), /--resume: no checkpoint at .*start the run without --resume/);
    const src = getModel(cfg);
    src.weights[0].write(src.weights[0].read().add(1));
    await saveCheckpoint(dirs.best, src, null, { ...freshMeta(cfg), epoch: 3, step: 12 });
    const meta = await startState(cfg, model, opt, dirs, { weights: dirs.best }, () => {});
    assert.equal(meta.step, 0, 'weights only: the run starts at step 0');
    assert.deepEqual(model.weights[0].read().dataSync(), src.weights[0].read().dataSync());
    [model, src].forEach((m) => m.dispose());
    opt.dispose();
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
