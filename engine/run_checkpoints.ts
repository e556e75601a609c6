// Saving a training run's last/ and best/ checkpoints: model weights, optimizer state
// and the run's state (epoch, step, best metric) together, each save atomic.
import assert from 'node:assert/strict';
import type * as tf from '@tensorflow/tfjs';
import type { TrainOptimizer } from '../utils/optimizers';
import { runIfMain, SelfTest } from '../utils/self_test';
import { CheckpointMeta, saveCheckpoint } from './checkpoint/store';
import type { RunDirs } from './run_dirs';

export class RunCheckpoints {
  /** Step of the last save of last/ (-1: none yet), so a stop does not save the same state twice. */
  lastSavedStep = -1;

  constructor(private readonly model: tf.LayersModel, private readonly optimizer: TrainOptimizer, private readonly meta: CheckpointMeta, private readonly dirs: RunDirs) {}

  private async save(dir: string): Promise<void> {
    await saveCheckpoint(dir, this.model, await this.optimizer.getState(), { ...this.meta, savedAt: new Date().toISOString() });
  }

  async saveLast(): Promise<void> {
    await this.save(this.dirs.last);
    this.lastSavedStep = this.meta.step;
  }

  async saveBest(): Promise<void> {
    await this.save(this.dirs.best);
  }

  /** Saves last/ unless it already holds this step. */
  async saveLastIfNewer(): Promise<void> {
    if (this.lastSavedStep !== this.meta.step) await this.saveLast();
  }
}

export const selfTest: SelfTest = {
  async 'last/ and best/ hold the run state at the time of saving; a repeat save is skipped'() {
    const fs = await import('node:fs');
    const { fixtureConfig, tmpDir } = await import('../test/fixtures/datasets');
    const { getModel } = await import('../models');
    const { createOptimizer } = await import('../utils/optimizers');
    const { loadCheckpoint } = await import('./checkpoint/store');
    const { runDirs } = await import('./run_dirs');
    const { freshMeta } = await import('./resume');
    const dir = tmpDir('runckpt');
    const cfg = fixtureConfig(dir);
    const model = getModel(cfg);
    const opt = createOptimizer(cfg);
    const meta = freshMeta(cfg);
    const dirs = runDirs(cfg);
    const ck = new RunCheckpoints(model, opt, meta, dirs);
    meta.step = 7;
    await ck.saveLast();
    const t = fs.statSync(`${dirs.last}/state.json`).mtimeMs;
    await ck.saveLastIfNewer();
    assert.equal(fs.statSync(`${dirs.last}/state.json`).mtimeMs, t, 'same step: not saved again');
    meta.step = 8;
    meta.bestMetric = 0.5;
    await ck.saveBest();
    assert.equal((await loadCheckpoint(dirs.last)).meta.step, 7);
    assert.deepEqual([(await loadCheckpoint(dirs.best)).meta.step, ck.lastSavedStep], [8, 7]);
    model.dispose();
    opt.dispose();
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
